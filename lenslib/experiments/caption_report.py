"""Tables, curves and sentences of a caption-ablation run (chapter 6), apart from running it.

Each function reads a :class:`~lenslib.experiments.caption_results.CaptionResults` (its ``select``,
``summary``, ``difference`` and ``mode_difference``) and presents it: :func:`table` (per arm and prompt
mode, per tag and overall with 95 % intervals), :func:`curves` (overall score vs training step, for the
chapter's figure), :func:`conclusion` (one sentence per paired difference) and :func:`findings` (the
run's sentences). ``CaptionResults.table``, ``.curves`` and ``.findings`` call them. Used in chapter 6
and by ``lens experiment captions``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

__all__ = ["conclusion", "curves", "findings", "table"]


def conclusion(
    diff: dict, a: str = "detailed captions", b: str = "brief captions", what: str = "prompted in detail"
) -> str:
    """One sentence that states what a :func:`lenslib.eval.stats.paired_difference` of ``a`` − ``b``
    found, chosen by its sign and whether its interval excludes 0 (never written before the numbers)."""
    lo, hi = diff["ci95"]
    head = (
        f"{a} − {b} ({what}) = {diff['diff']:+.3f}, 95 % interval [{lo:+.3f}, {hi:+.3f}] "
        f"({diff['n_prompts']} prompts × {diff['n_seeds']} seeds)"
    )
    if lo > 0:
        return head + f": {a} scores higher than {b}, and the interval excludes 0."
    if hi < 0:
        return head + f": {b} scores higher than {a}, and the interval excludes 0."
    if diff["diff"] == 0 and lo == hi == 0:
        return head + ": both score the same on every prompt and seed; this run cannot tell them apart."
    side = a if diff["diff"] > 0 else b if diff["diff"] < 0 else None
    lean = f"the point estimate favours {side}, but " if side else ""
    return head + f": {lean}the interval includes 0, so this run does not show a difference."


def findings(res, n_boot: int = 2000) -> list[str]:
    """The run's conclusions, one sentence each (:func:`conclusion`): detailed − brief prompted in detail
    and briefly, then the reasoner's gain on every arm. Chapter 6 prints them for a recorded full run."""
    out = []
    if {"detailed", "brief"} <= set(res.kinds):
        for mode, what in (("detailed", "prompted in detail"), ("brief", "prompted briefly")):
            if mode in res.modes:
                out.append(conclusion(res.difference("detailed", "brief", mode, n_boot=n_boot), what=what))
    if {"reasoner", "brief"} <= set(res.modes):
        for kind in res.kinds:
            out.append(
                conclusion(
                    res.mode_difference(kind, "reasoner", "brief", n_boot=n_boot),
                    "reasoner-rewritten prompts",
                    "brief prompts",
                    f"{kind}-trained model",
                )
            )
    return out


def table(res, n_boot: int = 1000) -> pd.DataFrame:
    """A pandas table: one row per (arm, prompt mode) at the last step, per-tag and overall scores with
    95 % intervals."""
    out = []
    for kind in res.kinds:
        for mode in res.modes:
            s = res.summary(kind, mode, n_boot=n_boot)
            row = {
                "captions": kind,
                "prompted": mode,
                "overall": s["overall"]["score"],
                "overall_ci95": tuple(round(x, 3) for x in s["overall"]["ci95"]),
            }
            for t, v in s["tags"].items():
                row[t] = v["accuracy"]
                row[f"{t}_ci95"] = tuple(round(x, 3) for x in v["ci95"])
            out.append(row)
    return pd.DataFrame(out)


def curves(res) -> pd.DataFrame:
    """A pandas table of overall score vs training step, per arm and prompt mode (mean over seeds); modes
    outside ``preset.curve_modes`` have the last step only."""
    out = []
    for kind in res.kinds:
        for mode in res.modes:
            for step in res.preset.eval_at:
                rows = res.select(kind, mode, step)
                if not rows:  # this mode is scored at the last step only (Preset.curve_modes)
                    continue
                by_tag = defaultdict(list)
                for r in rows:
                    by_tag[r["tag"]].append(float(bool(r["correct"])))
                out.append(
                    {
                        "captions": kind,
                        "prompted": mode,
                        "step": step,
                        "overall": float(np.mean([np.mean(v) for v in by_tag.values()])),
                    }
                )
    return pd.DataFrame(out)
