"""What every step reads, as pure functions of ``(seed, step, rank, world size)``: the one home of sample
order.

Exact resume and bit-for-bit repeatable runs need the data position to be a function, not a state: a
resumed job, a job with prefetch workers and a job reading a cache must all see the same examples in the
same order. Everything that decides order lives here:

* :func:`plan` — step ``s`` on rank ``r``: the bucket (resolution) and the global sample positions of each
  micro-batch. One bucket (stage 1): the step's ``global_batch`` positions are consecutive, rank after rank,
  micro-batch after micro-batch. Several buckets (stage 2, paper §2.2 "mixed-resolution batch"): each rank
  draws its bucket from a generator seeded by ``(seed, step, rank)`` and takes a disjoint block of positions.
* :func:`epoch_permutation` and :func:`pool_index` — a position of the endless stream → an item of a finite
  pool (a data set, a feature cache's bucket): each pass over the pool is a fresh shuffle seeded by the pass.
* :func:`mix_seed` — the well-mixed seeds all of the above (and the trainer's per-step noise) derive from.

The trainer (:mod:`lenslib.data.stream`), the bucket sampler (:mod:`lenslib.data.sampler`), the feature cache
and the data-set sources call these; nothing else orders samples. Used in chapters 1 and 4.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["StepPlan", "epoch_permutation", "mix_seed", "plan", "pool_index", "rank_slot"]


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (stable across processes and Python versions)."""
    h = hashlib.blake2b(np.asarray(parts, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def rank_slot(step: int, rank: int, world_size: int) -> int:
    """The global slot of ``rank`` at ``step`` when every step hands one unit to each of ``world_size``
    ranks."""
    return step * world_size + rank


@dataclass(frozen=True)
class StepPlan:
    """One step of one rank: its bucket and the global sample positions of each micro-batch."""

    step: int
    bucket: object  # a lenslib.data.buckets.Bucket (or any object with height and width)
    micro: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of this step's images."""
        return (self.bucket.height, self.bucket.width)


#: ``(bucket key, pool size)`` pairs: the pools a step's samples are drawn from.
Buckets = Sequence[tuple[object, int]]


def plan(
    seed: int, step: int, rank: int, world_size: int, buckets: Buckets, micro_batch: int | None = None
) -> StepPlan:
    """Step ``step``'s data for ``rank`` of ``world_size``.

    ``buckets`` pairs each resolution with the rank's samples per step at it: one pair in stage 1 (the
    per-rank share of the global batch), the bucket table with each base area's batch in stage 2.
    ``micro_batch`` splits a one-bucket step into gradient-accumulation micro-batches (default: one).
    """
    if not buckets:
        raise ValueError("plan needs at least one (bucket, batch) pair")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if len(buckets) == 1:
        bucket, per_rank = buckets[0]
        mb = micro_batch or per_rank
        if per_rank % mb:
            raise ValueError(f"micro_batch {mb} does not divide the rank's batch {per_rank}")
        start = rank_slot(step, rank, world_size) * per_rank
        micro = tuple(tuple(range(start + m, start + m + mb)) for m in range(0, per_rank, mb))
        return StepPlan(step, bucket, micro)
    pick = int(np.random.default_rng(mix_seed(seed, step, rank, 2)).integers(len(buckets)))
    bucket, per_rank = buckets[pick]
    block = max(b for _, b in buckets)  # every (step, rank) owns a block of the largest batch: disjoint
    start = rank_slot(step, rank, world_size) * block
    return StepPlan(step, bucket, (tuple(range(start, start + per_rank)),))


def epoch_permutation(seed: int, epoch: int, n: int, *salt: int) -> np.ndarray:
    """The order of a finite pool of ``n`` items in pass ``epoch``: a permutation seeded by ``(seed, epoch,
    *salt)``."""
    return np.random.default_rng([int(seed), int(epoch), *map(int, salt)]).permutation(n)


def pool_index(seed: int, position: int, n: int, *salt: int, _cache: dict | None = None) -> int:
    """The item of a pool of ``n`` at stream ``position``: pass ``position // n`` through its own shuffle.

    ``_cache`` (a dict the caller keeps) saves recomputing a pass's permutation for consecutive positions.
    """
    epoch, j = divmod(int(position), n)
    key = (int(seed), epoch, n, salt)
    if _cache is None:
        return int(epoch_permutation(seed, epoch, n, *salt)[j])
    perm = _cache.get(key)
    if perm is None:
        if len(_cache) > 8:
            _cache.clear()
        perm = _cache[key] = epoch_permutation(seed, epoch, n, *salt)
    return int(perm[j])
