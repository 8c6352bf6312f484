"""Mixed-resolution bucket sampler: one bucket per rank per step (paper §2.2, "mixed-resolution batch").

Each step, every rank gets one whole batch from a single bucket, so tensors within a rank share a shape,
while different ranks may train at different resolutions in the same step. Batch sizes depend on the
bucket's base area (24 / 10 / 6 per GPU for 512² / 768² / 1024²), chosen in the paper so every rank spends
about the same time per step.

The sampler is a plain object, deterministic in (seed, epoch), and resumable: ``state_dict()`` records the
epoch and the number of steps already consumed, so a restarted job continues with the next step and never
repeats or skips data. It is for a finite data set whose every image already has its bucket (a feature cache,
``FeatureCache.bucket_ids``) and walks it in epochs; its shuffles and its step → rank slots are those of
:mod:`lenslib.data.order`, which also plans the trainer's steps (:func:`~lenslib.data.order.plan`). Used in
chapter 1.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from .buckets import LENS_BUCKETS, Bucket
from .order import epoch_permutation, rank_slot


class BucketBatchSampler:
    """Yields, for one rank, lists of dataset indices; each list comes from one bucket.

    Args:
        bucket_ids: bucket index (into ``buckets``) of every sample in the dataset.
        buckets: the bucket table (default: the paper's 27).
        batch_sizes: per-base-area batch size; default ``{512: 24, 768: 10, 1024: 6}`` (each bucket's own).
        rank, world_size: this process and the number of processes; every step uses ``world_size`` batches,
            rank r takes the r-th one, so ranks never share an index within an epoch.
        seed: the shuffle is a function of (seed, epoch) only, identical on every rank.
        drop_last: incomplete batches and a final incomplete step are dropped (needed for equal step
            counts across ranks; otherwise DDP would hang at the end of the epoch).

    Use as a ``torch.utils.data.DataLoader(batch_sampler=...)``; call ``set_epoch`` before each epoch.
    ``batches()`` also yields the bucket of each batch.
    """

    def __init__(
        self,
        bucket_ids: Sequence[int],
        buckets: Sequence[Bucket] = LENS_BUCKETS,
        batch_sizes: dict[int, int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        drop_last: bool = True,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.bucket_ids = np.asarray(bucket_ids, dtype=np.int64)
        self.buckets = list(buckets)
        if len(self.bucket_ids) and (self.bucket_ids.min() < 0 or self.bucket_ids.max() >= len(self.buckets)):
            raise ValueError("bucket_ids must index into buckets")
        self.batch_sizes = dict(batch_sizes) if batch_sizes else None
        self.rank, self.world_size, self.seed, self.drop_last = rank, world_size, seed, drop_last
        self.epoch = 0
        self.step = 0  # steps of the current epoch already handed out

    def batch_size_of(self, bucket: Bucket) -> int:
        return self.batch_sizes[bucket.base] if self.batch_sizes else bucket.batch_size

    def _epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """All (bucket, indices) batches of an epoch in global order; identical on every rank.

        Each bucket's samples are shuffled by ``(seed, epoch, bucket)``, cut into batches, and the batches
        of all buckets are shuffled by ``(seed, epoch)``."""
        batches = []
        for b in range(len(self.buckets)):
            idx = np.flatnonzero(self.bucket_ids == b)
            if len(idx) == 0:
                continue
            idx = idx[epoch_permutation(self.seed, epoch, len(idx), b)]
            bs = self.batch_size_of(self.buckets[b])
            n = len(idx) // bs if self.drop_last else -(-len(idx) // bs)
            batches += [(b, idx[i * bs : (i + 1) * bs]) for i in range(n)]
        order = epoch_permutation(self.seed, epoch, len(batches))
        return [batches[i] for i in order]

    def steps_per_epoch(self, epoch: int | None = None) -> int:
        n = len(self._epoch_plan(self.epoch if epoch is None else epoch))
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def __len__(self) -> int:
        return self.steps_per_epoch() - self.step

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0

    def batches(self) -> Iterator[tuple[Bucket, list[int]]]:
        """(bucket, indices) for this rank, from the saved step onward; advances ``step`` as it goes."""
        plan = self._epoch_plan(self.epoch)
        n_steps = self.steps_per_epoch()
        while self.step < n_steps:
            j = rank_slot(self.step, self.rank, self.world_size)
            self.step += 1
            if j < len(plan):
                b, idx = plan[j]
                yield self.buckets[b], idx.tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for _, idx in self.batches():
            yield idx

    def state_dict(self, steps_done: int | None = None) -> dict:
        """Resumable state. A DataLoader prefetches batches, so ``step`` runs ahead of training; pass the
        number of steps the trainer has actually finished in this epoch as ``steps_done``."""
        return {
            "epoch": self.epoch,
            "step": self.step if steps_done is None else int(steps_done),
            "seed": self.seed,
            "world_size": self.world_size,
            "num_samples": int(len(self.bucket_ids)),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume. Refuses a state from another seed, world size or dataset (it would skip/repeat data)."""
        for k in ("seed", "world_size", "num_samples"):
            mine = self.state_dict()[k]
            if k in state and state[k] != mine:
                raise ValueError(
                    f"sampler state has {k}={state[k]} but this sampler has {k}={mine}; "
                    "resume with the same seed, world size and dataset"
                )
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
