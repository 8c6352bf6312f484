"""Does ``cpu-tiny`` learn the world? Loss and exact-judge scores over a CPU training run.

Trains the shipped ``cpu-tiny`` config (or overrides) with ``lenslib.train.train``, evaluating every
``--eval-every`` steps: EMA samples of held-out world captions, scored by the exact scene judge
(``lenslib.eval.judge.score_scene_images``). As a ceiling it scores the *rendered* held-out scenes at the
same resolution (the judge is exact from 64 px up; below that even true renders can fail), so the table
shows how much of the achievable score the model reaches.

Run: ``.venv/bin/python benchmarks/bench_learning.py [--steps N] [--eval-every N] [overrides ...]``.
Writes ``benchmarks/results/learning.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "learning.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--config", default="cpu-tiny")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from lenslib.eval.judge import score_scene_images
    from lenslib.train import train
    from lenslib.train.config import load_config
    from lenslib.train.data import WorldSource

    evals = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"run.steps={args.steps}", f"eval.every={args.eval_every}",
                                        f"eval.num_images={args.num_images}", "run.save_every=0", "run.progress=log",
                                        f"run.out_dir={tmp}", "run.resume=never", *args.overrides])
        summary = train(cfg, on_log=lambda rec: evals.append(rec) if rec.get("kind") == "eval" else None)
        rows = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]

    # ceiling: the judge on true renders of the same held-out scenes at the training resolution
    world = WorldSource(cfg.run.seed, cfg.data.vocab, cfg.data.caption_kind, **cfg.data.world_kwargs)
    idx = [-(i + 1) for i in range(args.num_images)]
    size = cfg.data.image_size
    truth = world.examples(idx, (size, size))
    ceiling = score_scene_images([e.image for e in truth], [e.meta["scene"] for e in truth])

    losses = np.array([r["loss"] for r in rows])
    window = max(1, min(50, len(losses) // 4))
    loss_table = [{"steps": f"{i + 1}-{min(i + window, len(losses))}", "mean_loss": float(losses[i:i + window].mean())}
                  for i in range(0, len(losses), window)]
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "steps": summary["step"],
        "seconds": summary["seconds"],
        "params": summary["params"],
        "image_size": size,
        "loss_by_window": loss_table,
        "evals": [{"step": e["step"], **(e.get("judge") or {})} for e in evals],
        "ceiling_true_renders": ceiling,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"{args.config}: {summary['params'] / 1e6:.2f}M parameters, {summary['step']} steps in {summary['seconds']:.0f} s")
    print(f"{'steps':<14}{'mean loss':>10}")
    for r in loss_table:
        print(f"{r['steps']:<14}{r['mean_loss']:>10.4f}")
    print(f"{'step':<8}{'scene exact':>12}{'obj precision':>15}{'obj recall':>12}")
    for e in result["evals"]:
        print(f"{e['step']:<8}{e.get('scene_exact', float('nan')):>12.3f}{e.get('object_precision', float('nan')):>15.3f}"
              f"{e.get('object_recall', float('nan')):>12.3f}")
    print(f"{'renders':<8}{ceiling['scene_exact']:>12.3f}{ceiling['object_precision']:>15.3f}{ceiling['object_recall']:>12.3f}"
          f"   <- true images at {size} px (ceiling)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(result, indent=1))
    os.replace(tmp_path, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
