"""Prepare the next batches while the model trains on this one (``data.num_workers`` threads).

A step's batches are a pure function of (step, rank, micro-batch): their indices come from
``_sample_indices`` and the bucket from a generator seeded by the step. So batches can be built ahead
of time, out of the loop, without changing what the run sees: a run with workers repeats a run without
them bit for bit (tested in ``tests/test_train_resume.py``), and resume stays exact.

Threads, not processes: rendering (PIL, numpy), decoding and the text encoder's matmuls release the
GIL, and the batch needs no pickling on its way back. ``num_workers = 0`` builds each batch in the loop.
They pay off when the model runs elsewhere (a GPU). On a 2-core CPU they cost: ``cpu-tiny`` took 653 ms
a step with one worker (waiting 0 ms for data) against 517 ms without (``benchmarks/bench_train.py``),
as the data thread and the model contend for the cores and the GIL; so the CPU configs keep 0.
Used by ``lenslib.train.trainer``.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable

__all__ = ["Prefetcher"]


class Prefetcher:
    """``get(key, build)`` returns ``build()``'s batch; ``ahead(key, build)`` starts building it early.

    At most ``workers`` builds run at a time; a build that was never asked for ahead runs in the caller.
    ``drain()`` waits for every build in flight (call it before anything else touches the data source).
    """

    def __init__(self, workers: int):
        if workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {workers}")
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="lens-data") if workers else None
        self._pending: dict[Hashable, Future] = {}

    def ahead(self, key: Hashable, build: Callable[[], object]) -> None:
        if self._pool is not None and key not in self._pending and len(self._pending) < self.workers:
            self._pending[key] = self._pool.submit(build)

    def get(self, key: Hashable, build: Callable[[], object]):
        future = self._pending.pop(key, None)
        return build() if future is None else future.result()

    def drain(self) -> None:
        for future in self._pending.values():
            future.exception()  # wait; an error surfaces again when the batch is asked for

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
