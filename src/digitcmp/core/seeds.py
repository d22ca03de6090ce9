"""Every random stream of a run derives its seed from the run's seed here, and only here.

A run of seed s draws its pairs from s itself (data.generate_pair_sets) and initializes its model
from s; the other streams are offset so that they never coincide with another run's pairs or
weights. The offsets are arbitrary primes, kept as they were first chosen so that stored results
stay reproducible.
"""

from __future__ import annotations

# stream -> (offset, stride): seed + offset + index * stride
_STREAMS = {
    "member": (0, 1_000_003),  # the k-th model of an ensemble (member 0 is the single run itself)
    "batches": (7919, 0),  # the order of training batches and the training augmentation
    "views": (15485863, 104729),  # test-time views: the affine maps of a run's views
    # train_digitness.py's draws, by index: 0 the digits read as images, 1 the training non-digits,
    # 2 the batches, 3 the held-out non-digits that set the threshold, 4 the digits of other styles
    "digitness": (32452843, 7),
}


def derive_seed(seed: int, stream: str, index: int = 0) -> int:
    """The seed of one random stream of the run with the given seed."""
    offset, stride = _STREAMS[stream]
    return seed + offset + index * stride
