"""Does ``cpu-tiny`` learn the world? GenEval-format exact-judge score vs training wall time on this CPU.

Trains the shipped ``cpu-tiny`` config (or overrides) once with ``lenslib.train.train`` for ``--steps``
(6000 by default, about 30 training minutes on 2 cores) on a cached pool of ``--pool`` world scenes
(``data.num_scenes``), saving a checkpoint every ``--eval-every`` steps; then scores each checkpoint's
EMA weights on the world's GenEval-format shape suite (``data/suites/shapes_geneval.jsonl``, every
``--stride``-th line) with ``lenslib.eval.generate.generate_suite`` (Euler + CFG samples judged by the
exact judge) and ``lenslib.eval.geneval.summarize`` (GenEval's overall score with a bootstrap 95 %
interval over prompts and seeds). Prompts are the suite lines rewritten in detail (``detailed_prompt``,
how the model was trained and how Lens is prompted) and, for the last checkpoint, the suite's own
short prompts. Step 0 (the untrained model) is the floor; true renders of the same lines the ceiling.
Each checkpoint also gets the one-step denoising check of chapter 4 (``lenslib.eval.denoise``): how
often its clean-image estimate of a held-out scene is exactly right at each noise level; and which words
of the one-object prompts its samples follow (``lenslib.eval.words``: colour, class, place).

Wall time is the training loop's own clock (evaluation is not counted). The CPU is shared, so each
row also records the load average while that stretch of training ran; compare settings by steps.

Run: ``.venv/bin/python benchmarks/bench_learning.py [--steps N] [--eval-every N] [--out NAME]
[overrides ...]``.
Writes ``benchmarks/results/learning.json`` (``--out``: ``results/NAME.json``). The recorded variants:
``learning.json`` (the config as shipped) and ``learning_single.json`` (``--steps 4000 --out learning_single
data.world_kwargs.max_objects=1``: trained on one object per scene, so every image teaches one class, colour
and place; which of these words its samples follow, over 40 minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from lenslib.atomic import write_json_atomic
from lenslib.data.sources import build_source
from lenslib.eval.denoise import denoise_scores
from lenslib.eval.generate import checkpoint_model, generate_suite
from lenslib.eval.geneval import evaluate_folder, render_suite, summarize
from lenslib.eval.words import word_following
from lenslib.train import train
from lenslib.train.checkpoint import list_checkpoints, read_trainer_state
from lenslib.train.config import load_config
from lenslib.train.run_folder import read_metrics

RESULTS = Path(__file__).resolve().parent / "results"
SUITE = Path(__file__).resolve().parent.parent / "data" / "suites" / "shapes_geneval.jsonl"


def _evaluate(cfg, checkpoint, source, lines, args, prompts=("detailed",)):
    """Score one checkpoint (None: the untrained model), loaded once: the suite for each of ``prompts``
    ("detailed" first, flattened into the row; "suite" under ``suite_prompts``) and the one-step denoising
    check of held-out scenes (``lenslib.eval.denoise``); for detailed prompts also which words the one-object
    samples follow (``lenslib.eval.words``)."""
    out = {}
    with checkpoint_model(cfg, checkpoint, batcher=source) as (model, _):
        for prompt in prompts:
            t = time.time()
            rows, images = generate_suite(
                model,
                source,
                lines,
                per_prompt=args.per_prompt,
                size=cfg.data.image_size,
                num_steps=args.sample_steps,
                guidance=args.guidance,
                mu=cfg.eval.sample_mu,
                prompt=prompt,
                vocab=cfg.data.vocab,
                prediction=cfg.flow.prediction,
                return_images=True,
            )
            s = summarize(rows, n_boot=1000)
            score = {
                "overall": s["overall"]["score"],
                "ci95": list(s["overall"]["ci95"]),
                "tags": {k: v["accuracy"] for k, v in s["tags"].items()},
                "n_images": s["n_images"],
                "eval_s": time.time() - t,
            }
            if prompt == "detailed":
                out.update(score)
                out["words"] = [  # no share where the judge found no object (n = 0)
                    {
                        "word": r["word"],
                        "n": r["n"],
                        "share": r["share"] if r["n"] else None,
                        "ci95": list(r["ci95"]) if r["n"] else None,
                    }
                    for r in word_following(lines, rows, images)
                ]
            else:
                out["suite_prompts"] = score
        rows = denoise_scores(
            model,
            source,
            [-(i + 1) for i in range(args.denoise_scenes)],
            cfg.data.image_size,
            prediction=cfg.flow.prediction,
        )
    out["denoise"] = [{"t": r["t"], "scene_exact": r["scene_exact"], "ci95": list(r["ci95"])} for r in rows]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=6000, help="about 30 training minutes of cpu-tiny on 2 cores"
    )
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument(
        "--pool",
        type=int,
        default=20000,
        help="train on a cached pool of this many world scenes (data.num_scenes; 0: render every step)",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=1,
        help="score every N-th suite line (default: all 350; "
        "a stride leaves single_object, 10 lines, with a handful of images)",
    )
    parser.add_argument("--per-prompt", type=int, default=1)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument(
        "--denoise-scenes", type=int, default=48, help="held-out scenes for the one-step denoising check"
    )
    parser.add_argument("--config", default="cpu-tiny")
    parser.add_argument("--out", default="learning", help="results file name (without .json)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if not args.out or Path(args.out).name != args.out or args.out.endswith(".json"):
        parser.error(
            f"--out {args.out!r}: give a file name without folder or .json, e.g. --out learning_single"
        )

    lines = [json.loads(x) for x in SUITE.read_text().splitlines()][:: args.stride]
    loads = []  # (elapsed training seconds, 1-min load average), sampled every 5 s
    stop = threading.Event()

    with tempfile.TemporaryDirectory() as tmp:
        pool = [f"data.num_scenes={args.pool}"] if args.pool else []
        args.overrides = [*pool, *args.overrides]
        steps = args.steps
        cfg = load_config(
            args.config,
            [
                f"run.steps={steps}",
                "eval.every=0",
                f"run.save_every={args.eval_every}",
                "run.keep_last=1000",
                "run.progress=log",
                f"run.out_dir={tmp}",
                "run.resume=never",
                *args.overrides,
            ],
        )
        t0 = time.time()

        def sample_load():
            while not stop.wait(5.0):
                loads.append((time.time() - t0, os.getloadavg()[0]))

        sampler = threading.Thread(target=sample_load, daemon=True)
        sampler.start()
        load_before = os.getloadavg()
        summary = train(cfg)
        stop.set()
        metrics = read_metrics(tmp)[0]
        elapsed = {r["step"]: r["elapsed_s"] for r in metrics}
        step_times = np.array([r["step_time_s"] for r in metrics])

        source = build_source(cfg)[0]
        size = cfg.data.image_size
        # step 0: the untrained (DiT-initialised) model; then every checkpoint's EMA weights
        curve = [
            {
                "step": 0,
                "train_s": 0.0,
                "load_avg_1m": load_before[0],
                **_evaluate(cfg, None, source, lines, args),
            }
        ]
        print(f"step 0: {curve[0]['overall']:.3f} {curve[0]['ci95']}", flush=True)
        ckpts = list_checkpoints(tmp)
        for path in ckpts:
            step = int(read_trainer_state(path)["step"])
            lo = elapsed.get(step - args.eval_every, 0.0) if step > args.eval_every else 0.0
            hi = elapsed[step]
            window = [la for t, la in loads if lo <= t <= hi] or [os.getloadavg()[0]]
            prompts = ("detailed", "suite") if path == ckpts[-1] else ("detailed",)
            row = {
                "step": step,
                "train_s": hi,
                "load_avg_1m": float(np.mean(window)),
                **_evaluate(cfg, path, source, lines, args, prompts),
            }
            curve.append(row)
            print(
                f"step {step}: {row['overall']:.3f} {row['ci95']} after {hi:.0f} s "
                f"(load {row['load_avg_1m']:.1f})",
                flush=True,
            )

        truth = evaluate_folder(
            render_suite(lines, Path(tmp) / "renders", per_prompt=1, size=size),
            vocab="shapes",
            progress=False,
        )
        ceiling = summarize(truth, n_boot=200)["overall"]["score"]

    losses = np.array([r["loss"] for r in metrics])
    window = max(1, min(100, len(losses) // 5))
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "steps": summary["step"],
        "steps_requested": steps,
        "stopped_by_signal": bool(
            summary["preempted"]
        ),  # SIGTERM/SIGINT ends training early; checkpoints so far are scored
        "train_seconds": summary["seconds"],
        "median_step_s": float(np.median(step_times)),
        "params": summary["params"],
        "image_size": size,
        "patch": cfg.data.patch,
        "suite": {
            "path": "data/suites/shapes_geneval.jsonl",
            "stride": args.stride,
            "lines": len(lines),
            "per_prompt": args.per_prompt,
            "sampler": {"steps": args.sample_steps, "guidance": args.guidance},
            "prompts": "detailed (lenslib.world.suites.detailed_prompt)",
        },
        "curve": curve,
        "loss_by_window": [
            {
                "steps": f"{i + 1}-{min(i + window, len(losses))}",
                "mean_loss": float(losses[i : i + window].mean()),
            }
            for i in range(0, len(losses), window)
        ],
        "ceiling_true_renders": ceiling,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_end": os.getloadavg(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print(
        f"{args.config}: {summary['params'] / 1e6:.2f}M parameters, {summary['step']} steps in "
        f"{summary['seconds']:.0f} s (median step {result['median_step_s']:.2f} s)"
    )
    print(f"{'step':>6}{'train s':>9}{'load':>6}{'overall':>9}  95% CI")
    for r in curve:
        print(
            f"{r['step']:>6}{r['train_s']:>9.0f}{r['load_avg_1m']:>6.1f}{r['overall']:>9.3f}  "
            f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        )
    print(
        "one-step denoising, scenes exactly right at t = "
        + ", ".join(f"{d['t']:g}" for d in curve[0]["denoise"])
    )
    for r in curve:
        print(f"{r['step']:>6}  " + "  ".join(f"{d['scene_exact']:.2f}" for d in r["denoise"]))
    print(
        "one-object samples following each word (share of samples; - where no object was drawn): "
        + ", ".join(w["word"] for w in curve[0]["words"])
    )
    for r in curve:
        print(
            f"{r['step']:>6}  "
            + "  ".join("   -" if w["share"] is None else f"{w['share']:.2f}" for w in r["words"])
        )
    if "suite_prompts" in curve[-1]:
        sp = curve[-1]["suite_prompts"]
        print(
            f"last checkpoint, the suite's short prompts: {sp['overall']:.3f} "
            f"[{sp['ci95'][0]:.3f}, {sp['ci95'][1]:.3f}]"
        )
    print(f"true renders (ceiling): {ceiling:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.out}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
