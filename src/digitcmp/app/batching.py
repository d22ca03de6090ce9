"""Dynamic micro-batching for the server: requests that arrive together share one model call.

Each request's images are read on their own (in worker threads); the pairs then queue here. The
first pair of a batch waits at most `max_wait_s` for others, then every pair queued by then (up to
`max_pairs`) is answered in one `Predictor.compare` call, in a worker thread. Under load, batches
grow and the model's fixed cost per call is shared; a lone request waits max_wait_s at most. A
pair's answer does not depend on its batch (inference.py), so batching changes speed, not answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import anyio
import numpy as np

from .predict import Predictor


@dataclass
class _Pending:
    x: np.ndarray  # [n, 2, 14, 14]
    labels: list[str]
    readings: list
    done: asyncio.Future


class MicroBatcher:
    def __init__(self, predictor: Predictor, limiter: anyio.CapacityLimiter, max_wait_s: float = 0.002,
                 max_pairs: int = 256):  # fmt: skip
        self.predictor, self.limiter = predictor, limiter
        self.max_wait_s, self.max_pairs = max_wait_s, max_pairs
        self.queue: list[_Pending] = []
        self.draining = False
        self.calls = 0  # model calls made, and pairs answered: batching's effect, for tests and benchmarks
        self.pairs = 0

    async def compare(self, x: np.ndarray, labels: list[str], readings: list | None = None) -> list[dict]:
        """predictor.compare(x, labels, readings), answered together with whatever else is queued."""
        item = _Pending(x, labels, readings if readings is not None else [None] * x.shape[0],
                        asyncio.get_running_loop().create_future())  # fmt: skip
        self.queue.append(item)
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await item.done

    async def _drain(self) -> None:
        try:
            while self.queue:
                await asyncio.sleep(self.max_wait_s)  # let the requests arriving together join
                batch, size = [], 0
                while self.queue and (not batch or size + self.queue[0].x.shape[0] <= self.max_pairs):
                    item = self.queue.pop(0)
                    batch.append(item)
                    size += item.x.shape[0]
                await self._answer(batch)
        finally:
            self.draining = False

    async def _answer(self, batch: list[_Pending]) -> None:
        x = np.concatenate([item.x for item in batch])
        labels = [label for item in batch for label in item.labels]
        readings = [r for item in batch for r in item.readings]
        try:
            records = await anyio.to_thread.run_sync(self.predictor.compare, x, labels, readings, limiter=self.limiter)
        except Exception as err:  # each request of the batch gets the error, as it would have alone
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(err)
            return
        self.calls += 1
        self.pairs += x.shape[0]
        start = 0
        for item in batch:
            n = item.x.shape[0]
            if not item.done.done():  # (a client that went away cancelled its future)
                item.done.set_result(records[start : start + n])
            start += n
