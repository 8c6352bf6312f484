"""Experiments that reproduce the paper's ablations on the synthetic world (chapters 5 and 6).

``captions`` — the caption ablation (paper §3.4) and the reasoner ablation (paper §4.3).
Importing this package is cheap; torch loads only when an experiment runs.
"""

from __future__ import annotations

__all__ = ["captions", "check_notebook_parameters"]


def check_notebook_parameters(experiment: str, params: dict):
    """Validate a chapter's experiment parameters before it executes; returns the base arm's TrainConfig.

    ``lens run-notebook`` calls this for notebooks whose parameters cell names an ``experiment``; a bad
    ``preset`` or seed list raises ``ValueError`` naming the parameter.
    """
    if experiment != "captions":
        raise ValueError(f"parameter experiment={experiment!r}: the only experiment is 'captions'")
    from lenslib.experiments import captions

    preset = params.get("preset")
    try:
        p = captions.get_preset(preset)
    except ValueError as err:
        raise ValueError(f"parameter preset={preset!r}: {err}") from None
    seeds = params.get("seeds")
    if seeds is not None and (not isinstance(seeds, (list, tuple)) or len(seeds) < 1):
        raise ValueError(
            f"parameter seeds={seeds!r} must be a list of training seeds (or None for the preset's)"
        )
    try:
        cfgs = captions.arm_configs(p, params.get("run_dir") or ".", ("detailed",), seeds)
    except ValueError as err:
        raise ValueError(f"parameter seeds={seeds!r}: {err}") from None
    return next(iter(cfgs.values()))


def __getattr__(name):
    if name == "captions":
        import importlib

        return importlib.import_module("lenslib.experiments.captions")
    raise AttributeError(name)
