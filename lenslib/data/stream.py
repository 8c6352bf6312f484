"""The trainer's batches, step after step: :class:`BatchStream` plans, prefetches and moves them to the
device.

The training loop is ``for step in stream: for batch in step: ...`` (torchtitan's shape): the stream knows
which examples every step reads (:func:`lenslib.data.order.plan`, a pure function of seed, step and rank),
builds them through a batch source (:mod:`lenslib.data.sources`), and hands them over on the training device.

* Prefetch: with ``workers > 0`` the next batches are built in threads while the model trains on this one
  (:class:`Prefetcher`). A step's batches are a pure function of the step, so building them ahead changes
  nothing the run sees: a run with workers repeats a run without them bit for bit, and resume stays exact
  (``tests/test_train_resume.py``). Threads, not processes: rendering (PIL, numpy), decoding and the text
  encoder's matmuls release the GIL, the fast path (a world or feature cache) is a memory-mapped gather,
  and no batch needs pickling on its way back. They pay off when the model runs elsewhere (a GPU); on a
  2-core CPU the data thread and the model contend for the cores (``benchmarks/bench_train.py``), so the CPU
  configs keep 0.
* Device: on CUDA a batch is built into page-locked (pinned) memory and copied with ``non_blocking=True``,
  so the copy overlaps the previous step's compute; elsewhere it is moved as is.

Used by ``lenslib.train.trainer`` and in chapter 4.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable, Iterator, Sequence

import torch

from .batch import Batch, BatchSource
from .order import StepPlan, plan

__all__ = ["BatchStream", "Prefetcher", "StepBatches"]


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


class StepBatches:
    """One step's micro-batches, on the device, in order; ``wait_s`` is how long the step waited for them."""

    def __init__(self, stream: "BatchStream", step: int):
        self.stream, self.step, self.plan = stream, step, stream.plan(step)
        self.wait_s = 0.0

    def __len__(self) -> int:
        return len(self.plan.micro)

    def __iter__(self) -> Iterator[Batch]:
        for micro in range(len(self.plan.micro)):
            t0 = time.perf_counter()
            batch = self.stream._get(self.step, micro)
            self.wait_s += time.perf_counter() - t0
            yield batch


class BatchStream:
    """Steps ``start .. stop - 1`` of a run for one rank: iterate to get each step's :class:`StepBatches`.

    ``buckets`` and ``micro_batch`` are :func:`~lenslib.data.order.plan`'s (``(bucket, per-rank batch)``
    pairs); ``workers`` prefetch threads; ``device`` where batches are delivered (pinned, non-blocking
    copies on CUDA). Call :meth:`drain` before using ``source`` elsewhere (evaluation) and :meth:`close` at
    the end.
    """

    def __init__(
        self,
        source: BatchSource,
        *,
        seed: int,
        rank: int,
        world_size: int,
        buckets: Sequence[tuple[object, int]],
        micro_batch: int | None = None,
        start: int = 0,
        stop: int | None = None,
        device: torch.device | str = "cpu",
        workers: int = 0,
    ):
        self.source, self.seed, self.rank, self.world_size = source, int(seed), int(rank), int(world_size)
        self.buckets, self.micro_batch = list(buckets), micro_batch
        self.start, self.stop = int(start), stop
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda" and torch.cuda.is_available()
        self.prefetch = Prefetcher(workers)
        self.plan = functools.lru_cache(maxsize=8)(self._plan)  # asked for by the step and the look-ahead

    def _plan(self, step: int) -> StepPlan:
        return plan(self.seed, step, self.rank, self.world_size, self.buckets, self.micro_batch)

    def build(self, step: int, micro: int) -> Batch:
        """Micro-batch ``micro`` of ``step`` on the host (pinned when the device is CUDA)."""
        p = self.plan(step)
        batch = self.source.batch(list(p.micro[micro]), p.size)
        return batch.pin_memory() if self.pin else batch

    def _upcoming(self, step: int, micro: int, n: int):
        """The next ``n`` (step, micro) keys after (step, micro), within the run."""
        keys = []
        micro += 1
        while len(keys) < n and (self.stop is None or step < self.stop):
            if micro < len(self.plan(step).micro):
                keys.append((step, micro))
                micro += 1
            else:
                step, micro = step + 1, 0
        return keys

    def _get(self, step: int, micro: int) -> Batch:
        batch = self.prefetch.get((step, micro), functools.partial(self.build, step, micro))
        for key in self._upcoming(step, micro, self.prefetch.workers):  # built while this one trains
            self.prefetch.ahead(key, functools.partial(self.build, *key))
        return batch.to(self.device, non_blocking=self.pin)

    def __iter__(self) -> Iterator[StepBatches]:
        step = self.start
        while self.stop is None or step < self.stop:
            yield StepBatches(self, step)
            step += 1

    def drain(self) -> None:
        self.prefetch.drain()

    def close(self) -> None:
        self.prefetch.close()
