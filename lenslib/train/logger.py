"""The training log: one JSON line per step in ``metrics.jsonl`` (+ optional tensorboard), and the console.

Rank 0 only. A resumed run first keeps only the metric lines its checkpoint covers, so the curve continues
seamlessly and every step is logged once; on a terminal a tqdm bar shows progress, elsewhere log lines do.

Used by the trainer (chapter 4's live curves come through its ``on_log``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from lenslib.atomic import write_text_atomic

from .config import TrainConfig
from .run_folder import METRICS_FILE, metric_lines

__all__ = ["RunLogger"]


class RunLogger:
    """JSONL metrics (+ optional tensorboard) on rank 0; a tqdm bar only on a terminal, else log lines."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, start: int, is_main: bool, on_log=None):
        self.is_main, self.every, self.on_log = is_main, cfg.run.log_every, on_log
        self.bar = self.tb = self.file = None
        if not is_main:
            return
        path = run_dir / METRICS_FILE
        self.dropped: list[str] = []
        if path.exists():  # keep only the steps the checkpoint covers: the curve continues seamlessly
            # a torn last line (a kill mid-write) is dropped, not fatal
            lines, self.dropped = metric_lines(path)
            kept = [ln for ln, rec in lines if rec.get("step", 0) <= start]
            write_text_atomic(path, "".join(ln + "\n" for ln in kept))
        self.file = open(path, "a")
        interactive = cfg.run.progress == "bar" or (cfg.run.progress == "auto" and sys.stderr.isatty())
        if interactive:
            self.bar = tqdm(total=cfg.run.steps, initial=start, desc=cfg.run.name, dynamic_ncols=True)
        if cfg.run.tensorboard:
            # lazy: an optional dependency (tensorboard), needed only with run.tensorboard
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, rec: dict) -> None:
        if not self.is_main:
            return
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.on_log is not None:
            self.on_log(rec)
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, rec["step"])
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}")
        elif rec["step"] % self.every == 0:
            print(
                f"step {rec['step']:>7d}  loss {rec['loss']:.4f}  grad {rec['grad_norm']:.3f}  lr "
                f"{rec['lr']:.2e}  "
                f"{rec['samples_per_s']:.1f} samples/s",
                flush=True,
            )

    def event(self, text: str) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        for x in (self.bar, self.tb, self.file):
            if x is not None:
                x.close()
