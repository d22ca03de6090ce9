"""The errors of running work elsewhere: in worker processes or on a Ray cluster."""


class SweepError(RuntimeError):
    """Work that cannot go on (a worker died, a task failed); what was stored stays, and the same
    command resumes."""


class BackendError(ValueError):
    """A Ray backend that cannot be used: the extra missing, no cluster at the address, or workers
    with another version of digitcmp."""
