"""The trainer: one loop from a laptop CPU to ``torchrun`` with DDP or FSDP2, with exact resume.

``train(config) -> summary`` (:mod:`lenslib.train.trainer`) runs a :class:`~lenslib.train.config.TrainConfig`
(:func:`~lenslib.train.config.load_config`). Submodules, one idea each: ``config`` (typed YAML config),
``data`` (the config's batch source from :mod:`lenslib.data`, which owns sources, order and the batch stream),
``build`` (config + checkpoint -> model, shared with evaluation), ``distributed`` (process group, DDP/FSDP2
wrapping), ``ema``, ``checkpoint`` (atomic, sharded, resumable), ``signals`` (preemption).

Used in chapter 4 and by ``lens train`` / ``torchrun -m lenslib.train``.
"""

from __future__ import annotations

__all__ = ["train", "load_config"]


def __getattr__(name):  # lazy: keep `import lenslib.train` free of torch
    if name == "train":
        from .trainer import train

        return train
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(name)
