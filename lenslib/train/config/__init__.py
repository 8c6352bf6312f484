"""One typed run config: dataclasses, loaded from YAML, overridden by dotted ``key=value`` arguments.

A training run is fully described by a :class:`TrainConfig` (as in Sana's pyrallis configs): the shipped
YAML files in ``lenslib/train/configs/`` name the paper's runs, and the command line changes single
values::

    lens train --config cpu-tiny optim.lr=3e-4 run.steps=200

Everything is checked before any model is built: an unknown key (with the closest valid names), a value
of the wrong type, and impossible combinations (a global batch that the world size and micro-batch do
not divide, buckets together with a fixed global batch, ...) raise :class:`ConfigError`, whose message
names the key and the fix. The resolved config is stored in every checkpoint and in the run folder.

Resuming is an identity check (:func:`check_resume`): a checkpoint continues only a run of the same model,
codec, text encoder, data and recipe. What may differ between a checkpoint and the run that resumes it is
one explicit list, :data:`RESUMABLE_KEYS`; any other difference is refused with :class:`ResumeMismatchError`.

This package module is the config's public face (import from here); its parts, one idea each:

- ``schema``: the dataclasses and their typed conversion (:func:`from_dict`, :func:`to_dict`,
  :func:`to_yaml`);
- ``loading``: shipped names and YAML files, ``base:`` inheritance, overrides (:func:`load_config`);
- ``checks``: ranges, names, batch arithmetic, inputs and paths (:func:`validate`, :func:`check_paths`);
- ``resumable``: what a checkpoint tolerates on resume (:func:`check_resume`).

Used in chapter 4 and by ``lens train``.
"""

from __future__ import annotations

from . import checks, loading, resumable, schema
from .checks import *  # noqa: F403
from .loading import *  # noqa: F403
from .resumable import *  # noqa: F403
from .schema import *  # noqa: F403

#: Every part's public names, importable from ``lenslib.train.config``.
__all__ = [*schema.__all__, *loading.__all__, *checks.__all__, *resumable.__all__]
