"""The trainer: one loop from a laptop CPU to ``torchrun`` with DDP or FSDP2, with exact resume.

``train(config) -> summary`` (:mod:`lenslib.train.trainer`) runs a :class:`~lenslib.train.config.TrainConfig`
(:func:`~lenslib.train.config.load_config`). Submodules, one idea each:

- ``config`` (the typed YAML config: schema, loading, checks, what a resume may change);
- ``trainer`` (the loop), ``build`` (config + checkpoint -> model, shared with evaluation), ``distributed``
  (process group, DDP/FSDP2 wrapping), ``ema``;
- ``checkpoint`` (atomic, sharded, verified, resumable), ``resume`` (which checkpoint a run continues),
  ``run_folder`` (where a run lives, its metrics), ``logger`` (the metrics it writes), ``previews`` (samples
  during training), ``signals`` (preemption);
- ``cli`` (``lens train``, ``lens export``); ``faults`` and ``fault_hooks`` (kill-and-resume trials).

The batches come from :mod:`lenslib.data` (sources, order and the batch stream live below the trainer).

Used in chapter 4 and by ``lens train`` / ``torchrun -m lenslib.train``.
"""

from __future__ import annotations

__all__ = ["train", "load_config"]


def __getattr__(name):
    # lazy: keep `import lenslib.train` free of torch (the trainer costs 1 s or more, the config 0.18 s;
    # python -X importtime), since `lens --help` imports lenslib.train.cli
    if name == "train":
        from .trainer import train  # noqa: PLC0415

        return train
    if name == "load_config":
        from .config import load_config  # noqa: PLC0415

        return load_config
    raise AttributeError(name)
