"""Speed of the exact GenEval pipeline on CPU: captions, ground-truth renders, judging, bootstrap.

Run: ``.venv/bin/python benchmarks/bench_geneval.py [--per-prompt 4] [--size 64]``. Prints a table and
writes ``benchmarks/results/geneval.json`` (atomically).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lenslib.atomic import write_json_atomic
from lenslib.eval.geneval import bootstrap_ci, evaluate_folder, render_suite, summarize
from lenslib.world.caption_reading import coverage
from lenslib.world.captions import CAPTION_KINDS, caption, word_count_stats
from lenslib.world.spec import sample_scene
from lenslib.world.suites import suite_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--scenes", type=int, default=500, help="scenes for the caption timings")
    args = parser.parse_args()

    rows = []
    scenes = [sample_scene(i, "shapes") for i in range(args.scenes)]
    for kind in CAPTION_KINDS:
        t = time.perf_counter()
        texts = [caption(s, kind, i) for i, s in enumerate(scenes)]
        t_cap = time.perf_counter() - t
        t = time.perf_counter()
        recall = np.mean([coverage(s, c).recall for s, c in zip(scenes, texts)])
        t_cov = time.perf_counter() - t
        rows.append(
            {
                "step": f"caption {kind}",
                "n": len(scenes),
                "seconds": t_cap,
                "per_second": len(scenes) / t_cap,
                "note": f"coverage {len(scenes) / t_cov:.0f}/s, mean recall {recall:.3f}",
            }
        )
    stats = word_count_stats("detailed", n=args.scenes)
    stats.pop("counts")

    suite = suite_path("shapes_geneval")
    n_lines = len(suite.read_text().splitlines())
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = render_suite(suite, Path(tmp) / "r", per_prompt=args.per_prompt, size=args.size)
        t_render = time.perf_counter() - t
        n_img = n_lines * args.per_prompt
        rows.append(
            {
                "step": "render_suite (shapes)",
                "n": n_img,
                "seconds": t_render,
                "per_second": n_img / t_render,
                "note": f"{args.size}px, PNG written",
            }
        )
        t = time.perf_counter()
        results = evaluate_folder(out, suite, vocab="shapes")
        t_eval = time.perf_counter() - t
        correct = sum(bool(r.get("correct")) for r in results)
        rows.append(
            {
                "step": "evaluate_folder (judge)",
                "n": n_img,
                "seconds": t_eval,
                "per_second": n_img / t_eval,
                "note": f"{correct}/{len(results)} correct",
            }
        )
    groups = [np.random.default_rng(i).integers(0, 2, 4).astype(float) for i in range(553)]
    tags = [f"t{i % 6}" for i in range(553)]
    t = time.perf_counter()
    bootstrap_ci(groups, tags, n_boot=2000)
    t_boot = time.perf_counter() - t
    rows.append(
        {
            "step": "bootstrap_ci (553 prompts x 4, 2000 reps)",
            "n": 2000,
            "seconds": t_boot,
            "per_second": 2000 / t_boot,
            "note": "",
        }
    )
    t = time.perf_counter()
    summarize(results, n_boot=2000)
    t_sum = time.perf_counter() - t
    rows.append(
        {
            "step": "summarize (with bootstrap)",
            "n": len(results),
            "seconds": t_sum,
            "per_second": len(results) / t_sum,
            "note": "",
        }
    )

    print(f"{'step':<44} {'n':>6} {'seconds':>8} {'per s':>9}  note")
    for r in rows:
        print(f"{r['step']:<44} {r['n']:>6} {r['seconds']:>8.2f} {r['per_second']:>9.0f}  {r['note']}")
    print(
        "detailed caption words:", {k: round(v, 1) if isinstance(v, float) else v for k, v in stats.items()}
    )

    result = {
        "benchmark": "geneval",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "torch": torch.__version__,
        "cpu": platform.processor(),
        "cpu_count": os.cpu_count(),
        "args": vars(args),
        "rows": rows,
        "detailed_word_counts": stats,
    }
    path = Path(__file__).resolve().parent / "results" / "geneval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
