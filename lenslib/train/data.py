"""The trainer's data: a run config → the batch source, codec and text encoder of :mod:`lenslib.data`.

Everything a step reads lives in :mod:`lenslib.data` (below the trainer): the :class:`~lenslib.data.batch.Batch`,
the example sources and batchers (:mod:`lenslib.data.sources`), sample order (:mod:`lenslib.data.order`) and
the batch stream (:mod:`lenslib.data.stream`). This module only reads a :class:`~lenslib.train.config.TrainConfig`
for them, and re-exports the names that chapters 4 and 6 and older scripts import from here.

Used by the trainer, evaluation (``lenslib.eval.generate``) and chapters 4 and 6.
"""

from __future__ import annotations

from lenslib.data.batch import Batch, BatchSource, Example, ExampleSource
from lenslib.data.order import mix_seed
from lenslib.data.sources import (
    CachedWorldBatcher,
    HFImageSource,
    TokenBatcher,
    WebDatasetSource,
    WorldSource,
    source_from_config,
)

__all__ = [
    "Batch",
    "Example",
    "BatchSource",
    "ExampleSource",
    "WorldSource",
    "HFImageSource",
    "WebDatasetSource",
    "TokenBatcher",
    "CachedWorldBatcher",
    "mix_seed",
    "build_source",
]


def build_source(
    cfg, seed: int | None = None, progress: bool = True, device=None
) -> tuple[BatchSource, object, object]:
    """The configured ``(batch source, codec, text encoder)`` of a :class:`~lenslib.train.config.TrainConfig`
    (seeded by ``run.seed`` unless ``seed`` is given; the text encoder on ``device`` when that is a GPU);
    :func:`lenslib.data.sources.source_from_config` does the work.

    A world with ``data.num_scenes`` set reads its finite pool from a world cache under ``data.path`` (default
    ``<cache>/world``), built on first use with a progress bar.
    """
    return source_from_config(cfg.data, cfg.run.seed if seed is None else seed, progress, device)
