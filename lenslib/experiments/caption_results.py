"""The caption ablation's results: every judged image of a run, and the file that keeps them.

:class:`CaptionResults` holds the rows of a run (one per judged image: arm, seed, step, prompt mode,
suite line, verdict) with its settings, and selects, summarizes (GenEval's summary,
``lenslib.eval.geneval.summarize``) and compares them (paired bootstrap, ``lenslib.eval.stats``); its
tables, curves and sentences come from ``lenslib.experiments.caption_report``. :func:`save_results`
writes a run compactly enough to commit beside a record page, :func:`load_results` reads it back.
Used in chapters 5 and 6.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lenslib import __version__
from lenslib.atomic import write_text_atomic
from lenslib.eval.geneval import failure_kinds, summarize
from lenslib.eval.stats import paired_difference
from lenslib.experiments import caption_report
from lenslib.experiments.captions import Preset, suite_lines

__all__ = ["RESULTS_NAME", "CaptionResults", "load_results", "save_results", "summarize_rows"]

RESULTS_NAME = "results.json"
_RESULTS_FORMAT = "lens-caption-ablation/1"


def save_results(res: "CaptionResults", path: str | Path, lines: list[dict] | None = None) -> Path:
    """Write every judged image of a run to ``path`` (atomic JSON, about 100 KB for the full preset).

    Verdicts are stored per (arm, seed, step, prompt mode) as a string of 0/1, one character per image
    in (suite line, image) order, with each failed image's failure kinds
    (``lenslib.eval.geneval.failure_kinds``) as digits into a legend, not the judge's full reasons;
    the suite lines are stored once.
    :func:`load_results` gives back a :class:`CaptionResults` whose tables and intervals equal the run's.
    ``run_captions`` (``lenslib.experiments.caption_runs``) writes it as ``<out_dir>/results.json``;
    ``lens record`` copies it beside the record page, where chapter 6 reads it.
    """
    lines = suite_lines(res.preset.lines_per_tag) if lines is None else lines
    per = res.preset.per_prompt
    cells = defaultdict(lambda: ["?"] * (len(lines) * per))
    failed = defaultdict(lambda: [""] * (len(lines) * per))
    legend: dict[str, str] = {}
    for r in res.rows:
        key, j = (r["kind"], r["seed"], r["step"], r["mode"]), r["index"] * per + r["k"]
        cells[key][j] = "1" if r["correct"] else "0"
        if not r["correct"]:
            kinds = r["failures"] if "failures" in r else failure_kinds(r["reason"])
            failed[key][j] = "".join(legend.setdefault(k, str(len(legend))) for k in kinds)
    missing = [key for key, v in cells.items() if "?" in v]
    if missing or len(legend) > 10:
        raise ValueError(
            f"results of {missing[:3]} lack some (line, image) verdicts; nothing was written to {path}"
            if missing
            else f"{len(legend)} failure kinds do not fit one digit each; nothing was written"
        )
    doc = {
        "format": _RESULTS_FORMAT,
        "preset": res.preset_name,
        "preset_values": dataclasses.asdict(res.preset),
        "kinds": list(res.kinds),
        "seeds": list(res.seeds),
        "modes": list(res.modes),
        "lines": [{"tag": x["tag"], "prompt": x["prompt"]} for x in lines],
        "failure_kinds": sorted(legend, key=legend.get),
        "cells": [
            {
                "kind": k,
                "seed": s,
                "step": st,
                "mode": m,
                "correct": "".join(v),
                "failures": ",".join(failed[(k, s, st, m)]),
            }
            for (k, s, st, m), v in sorted(cells.items(), key=lambda kv: tuple(map(str, kv[0])))
        ],
        "train_seconds": {f"{k}-s{s}": v["train_seconds"] for (k, s), v in res.meta.items()},
        "lenslib": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_text_atomic(path, json.dumps(doc))
    return Path(path)


def load_results(path: str | Path) -> "CaptionResults":
    """A :class:`CaptionResults` from a file of :func:`save_results` (e.g. a recorded full run)."""
    path = Path(path)
    doc = json.loads(path.read_text())
    if doc.get("format") != _RESULTS_FORMAT:
        raise ValueError(
            f"{path} is not a caption-ablation results file (format {doc.get('format')!r}, "
            f"expected {_RESULTS_FORMAT!r}); write it with lenslib.experiments.caption_results.save_results"
        )
    values = dict(doc["preset_values"])
    for key in ("eval_at", "curve_modes", "seeds", "overrides"):
        values[key] = tuple(values[key])
    preset, lines, per = Preset(**values), doc["lines"], doc["preset_values"]["per_prompt"]
    rows = []
    for c in doc["cells"]:
        if len(c["correct"]) != len(lines) * per:
            raise ValueError(
                f"{path}: a cell of {c['kind']} seed {c['seed']} has {len(c['correct'])} verdicts, "
                f"expected {len(lines)} lines x {per} images"
            )
        failures = c["failures"].split(",")
        for j, v in enumerate(c["correct"]):
            index, k = divmod(j, per)
            rows.append(
                {
                    "kind": c["kind"],
                    "seed": c["seed"],
                    "step": c["step"],
                    "mode": c["mode"],
                    "index": index,
                    "k": k,
                    "tag": lines[index]["tag"],
                    "correct": v == "1",
                    "failures": [doc["failure_kinds"][int(d)] for d in failures[j]],
                }
            )
    meta = {}
    for key, seconds in doc["train_seconds"].items():
        kind, seed = key.rsplit("-s", 1)
        meta[(kind, int(seed))] = {"train_seconds": seconds}
    return CaptionResults(
        rows,
        preset,
        tuple(doc["kinds"]),
        tuple(doc["seeds"]),
        tuple(doc["modes"]),
        meta=meta,
        preset_name=doc["preset"],
        created=doc["created"],
        lenslib=doc["lenslib"],
    )


def summarize_rows(rows: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """GenEval summary (per tag and overall, bootstrap 95 % intervals) of one arm/mode/step's rows.

    Images of different training seeds count as further images of the same prompt, so the bootstrap
    resamples prompts within tags and, inside each prompt, the images of all seeds.
    """
    ks = sorted({(r["seed"], r["k"]) for r in rows})
    number = {sk: j for j, sk in enumerate(ks)}
    return summarize([dict(r, k=number[(r["seed"], r["k"])]) for r in rows], n_boot=n_boot, seed=seed)


@dataclass
class CaptionResults:
    """Every scored image of a caption-ablation run, with the run's settings."""

    rows: list[dict]
    preset: Preset
    kinds: tuple
    seeds: tuple
    modes: tuple
    configs: dict = field(repr=False, default_factory=dict)
    meta: dict = field(repr=False, default_factory=dict)
    preset_name: str = "custom"
    created: str | None = None  # set when read back from a results file
    lenslib: str | None = None

    @property
    def final_step(self) -> int:
        return max(self.preset.eval_at)

    def select(self, kind: str | None = None, mode: str | None = None, step: int | None = None) -> list[dict]:
        """Rows of one arm / prompt mode / step (``step`` defaults to the last)."""
        step = self.final_step if step is None else step
        return [
            r
            for r in self.rows
            if (kind is None or r["kind"] == kind)
            and (mode is None or r["mode"] == mode)
            and r["step"] == step
        ]

    def summary(self, kind: str, mode: str, step: int | None = None, n_boot: int = 2000) -> dict:
        return summarize_rows(self.select(kind, mode, step), n_boot=n_boot)

    def difference(
        self,
        a: str = "detailed",
        b: str = "brief",
        mode: str = "detailed",
        step: int | None = None,
        n_boot: int = 2000,
    ) -> dict:
        """Paired difference arm ``a`` − arm ``b`` under prompt ``mode``
        (:func:`lenslib.eval.stats.paired_difference`)."""
        return paired_difference(self.select(a, mode, step), self.select(b, mode, step), n_boot=n_boot)

    def mode_difference(
        self, kind: str, a: str = "reasoner", b: str = "brief", step: int | None = None, n_boot: int = 2000
    ) -> dict:
        """Paired difference between two prompt modes for one arm (e.g. reasoner − brief)."""
        return paired_difference(self.select(kind, a, step), self.select(kind, b, step), n_boot=n_boot)

    def findings(self, n_boot: int = 2000) -> list[str]:
        """The run's conclusions, one sentence each (:func:`lenslib.experiments.caption_report.findings`).
        Chapter 6 prints them for a recorded full run."""
        return caption_report.findings(self, n_boot=n_boot)

    def table(self, n_boot: int = 1000):
        """A pandas table: one row per (arm, prompt mode) at the last step, per-tag and overall scores
        with CIs (:func:`lenslib.experiments.caption_report.table`)."""
        return caption_report.table(self, n_boot=n_boot)

    def curves(self):
        """A pandas table of overall score vs training step, per arm and prompt mode
        (:func:`lenslib.experiments.caption_report.curves`)."""
        return caption_report.curves(self)
