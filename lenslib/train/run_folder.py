"""A run's folder: where it is, and the records a run leaves there (``metrics.jsonl``, ``PREEMPTED``).

``run.out_dir`` or ``<cache>/runs/<run.name>`` holds the config, the checkpoints
(:mod:`lenslib.train.checkpoint`), the metrics, the preview samples and, after a preemption, a ``PREEMPTED``
file the launcher turns into the requeue exit code. The metrics are read tolerantly: a line torn by a killed
job is dropped and described, never fatal (:func:`read_metrics`).

Used by the trainer, ``lens train``, the cluster's records and chapters 4, 6 and 7 (loss curves, run totals).
"""

from __future__ import annotations

import json
from pathlib import Path

from lenslib.paths import cache_dir

__all__ = ["PREEMPTED_FILE", "METRICS_FILE", "run_dir_of", "metric_lines", "read_metrics", "run_totals"]

PREEMPTED_FILE = "PREEMPTED"
METRICS_FILE = "metrics.jsonl"


def run_dir_of(cfg) -> Path:
    """The run folder of a :class:`~lenslib.train.config.TrainConfig`: ``run.out_dir`` or
    ``<cache>/runs/<run.name>``."""
    if cfg.run.out_dir:
        return Path(cfg.run.out_dir)
    return cache_dir() / "runs" / cfg.run.name


def metric_lines(path: Path) -> tuple[list[tuple[str, dict]], list[str]]:
    """``([(line, record)], notes)`` of a JSONL file; lines that are not a JSON object are dropped and
    noted."""
    if not path.is_file():
        return [], []
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    kept, notes = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            where = "its last line, cut short by an interrupted write" if i == last else f"line {i + 1}"
            notes.append(f"{path.name}: dropped {where} ({len(line)} characters: {line[:40]!r}...)")
            continue
        kept.append((line, rec))
    return kept, notes


def read_metrics(run_dir: str | Path) -> tuple[list[dict], list[str]]:
    """``(records, notes)`` of a run's ``metrics.jsonl``, tolerating what a killed job leaves: a torn last
    line (or any unreadable one) is dropped and described in ``notes`` instead of failing the reader. The
    trainer's resume, :func:`run_totals` and chapter 4's loss curves read metrics this way."""
    kept, notes = metric_lines(Path(run_dir) / METRICS_FILE)
    return [rec for _, rec in kept], notes


def run_totals(run_dir: str | Path) -> dict:
    """``{"steps", "train_seconds", "final_loss"}`` of a run folder, read from its metrics across resumptions.

    A resumed run keeps only the metrics its checkpoint covers (:class:`~lenslib.train.logger.RunLogger`), so
    every step is counted once: ``train_seconds`` is the time spent in the steps that made the current weights
    (with the saves and evaluations between them, without start-up; steps lost to an interruption count once).
    ``final_loss`` is the last step's, also when a job resumes at its last step and trains nothing. Chapter
    6's caption experiment reports each arm's training time with it.
    """
    recs, _ = read_metrics(run_dir)
    recs = [r for r in recs if "step_time_s" in r]  # training steps only (not evaluations)
    return {
        "steps": recs[-1]["step"] if recs else 0,
        "train_seconds": sum(r["step_time_s"] for r in recs),
        "final_loss": recs[-1]["loss"] if recs else None,
    }
