"""Experiments that reproduce the paper's ablations on the synthetic world (chapters 5 and 6).

An experiment is a module that registers the check of its notebook parameters with :func:`register`;
``lens run-notebook`` (``lenslib.cluster.notebook``) calls :func:`check_notebook_parameters` for a
notebook whose parameters cell names an ``experiment``. The caption ablation (paper §3.4) and the
reasoner ablation (paper §4.3), chapter 6:

* ``captions`` — its arms and presets (registered as ``captions``);
* ``caption_runs`` — training and scoring every arm;
* ``caption_results`` — the run's rows and its results file;
* ``caption_report`` — its tables, curves and sentences.

``arms`` runs the arms of any ablation once each, keyed by their config. Importing this package is
cheap: ``lens --help`` imports it; the experiments load when one is checked or run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["EXPERIMENTS", "captions", "check_notebook_parameters", "register"]

#: Each experiment's parameter check, by the name a notebook's ``experiment`` parameter gives.
EXPERIMENTS: dict[str, Callable[[dict], object]] = {}
#: The modules that register experiments, imported on the first check (not with this package:
#: ``lenslib.experiments.captions`` costs about 0.2 s, the train config and the reasoner).
_MODULES = ("lenslib.experiments.captions",)


def register(name: str):
    """Decorator: ``@register("captions")`` makes a function ``check(params) -> TrainConfig`` the check
    of experiment ``name``."""

    def add(check: Callable[[dict], object]) -> Callable[[dict], object]:
        EXPERIMENTS[name] = check
        return check

    return add


def check_notebook_parameters(experiment: str, params: dict):
    """Validate a chapter's experiment parameters before it executes; returns the base arm's TrainConfig.

    ``lens run-notebook`` calls this for notebooks whose parameters cell names an ``experiment``; an
    unknown experiment, a bad ``preset`` or seed list raises ``ValueError`` naming the parameter.
    """
    for module in _MODULES:
        importlib.import_module(module)
    check = EXPERIMENTS.get(experiment)
    if check is None:
        known = ", ".join(repr(name) for name in EXPERIMENTS)
        raise ValueError(
            f"parameter experiment={experiment!r}: unknown experiment; the experiments are {known}"
        )
    return check(params)


def __getattr__(name):
    if name == "captions":
        return importlib.import_module("lenslib.experiments.captions")
    raise AttributeError(name)
