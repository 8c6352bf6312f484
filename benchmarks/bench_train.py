"""CPU speed of a whole ``cpu-tiny`` training step (data + text encoder + DiT + AdamW + EMA) and its FLOP/s.

Runs the real trainer (``lenslib.train.train``) on the shipped ``cpu-tiny`` config for a few steps,
takes the median step time from its metrics (after warm-up), splits off the data time (world rendering
+ MiniLM encoding of the batch's captions, as the trainer logs it), and converts the analytic matmul FLOPs of
a training step (3 × :func:`lenslib.model.flops.transformer_flops`) into achieved FLOP/s, compared with a
float32 matmul peak measured in the same run.

Run: ``.venv/bin/python benchmarks/bench_train.py [--device cpu|cuda] [--steps N] [--threads N] [--out NAME]
[--compare SCENES] [overrides ...]``. Writes ``benchmarks/results/train.json`` (``--out``:
``results/NAME.json``). The recorded variants: ``train.json`` (the config as shipped) and
``train_compiled.json`` (``--out train_compiled model.compile=true``: torch.compile; the first, compiling step
is a warm-up step and is not timed). ``data.num_workers=1`` is slower here (653 vs 517 ms a step on 2 cores,
though it never waited for data: the data thread and the model contend for the cores and the GIL), so no
record uses it.

``--compare SCENES`` times, in one run and with the same model, the step as it was (every batch rendered and
MiniLM-encoded in the loop) against the fast path (a pool of SCENES scenes read from the world cache,
``data.num_scenes``); each variant records the machine's load average before and after it.
``train_cached_compare.json`` is ``--compare 2000`` on the model that ``train.json`` timed (cpu-tiny as it was
then: ``model.preset=cpu-small 'model.kwargs={num_layers: 4}' data.patch=8``).
``--device cuda`` (on a machine with a GPU) times the step there; ``--device cpu`` hides any GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from lenslib.atomic import write_json_atomic
from lenslib.train.run_folder import read_metrics

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"


def matmul_peak(n: int = 2048, repeats: int = 8, device: str = "cpu") -> float:
    """Best float32 FLOP/s of an n×n matmul on this machine, measured now."""
    # lazy (torch here and below): only after main() has applied --device (CUDA_VISIBLE_DEVICES)
    import torch  # noqa: PLC0415

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def timed_run(config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    """Train ``steps`` steps in a temporary folder; the median step and data time after ``warmup`` steps."""
    # lazy: the trainer imports torch, only after main() has applied --device (CUDA_VISIBLE_DEVICES)
    from lenslib.train import train  # noqa: PLC0415
    from lenslib.train.config import load_config  # noqa: PLC0415

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            config,
            [
                f"run.steps={steps}",
                "run.save_every=0",
                "eval.every=0",
                "run.progress=log",
                f"run.out_dir={tmp}",
                "run.resume=never",
                *overrides,
            ],
        )
        summary = train(cfg)
        rows = read_metrics(tmp)[0]
        state = json.loads((Path(summary["checkpoint"]) / "trainer_state.json").read_text())
    step_times = [r["step_time_s"] for r in rows[warmup:]]
    return {
        "cfg": cfg,
        "summary": summary,
        "state": state,
        "overrides": overrides,
        "step_s_all": step_times,
        "step_s_median": statistics.median(step_times),
        "data_s_per_step": statistics.median(r["data_time_s"] for r in rows[warmup:]),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--config", default="cpu-tiny")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="cpu hides any GPU; cuda requires one; auto: what the trainer picks",
    )
    parser.add_argument(
        "--compare",
        type=int,
        default=0,
        metavar="SCENES",
        help="also time the step as it was (rendered + encoded in the loop, AdamW loop) against a "
        "world cache of SCENES scenes with the fused AdamW, in this one run",
    )
    parser.add_argument("--out", default="train", help="results file name (without .json)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if not args.out or Path(args.out).name != args.out or args.out.endswith(".json"):
        parser.error(
            f"--out {args.out!r}: give a file name without folder or .json, e.g. --out train_compiled"
        )
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch looks for a GPU
    import torch  # noqa: PLC0415 - lazy: after CUDA_VISIBLE_DEVICES is set (above)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here (CUDA build of torch and a GPU needed)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)

    peak = matmul_peak(device=device)
    variants = {}
    if args.compare:
        if any(o.startswith("data.num_scenes=") for o in args.overrides):
            parser.error("--compare sets data.num_scenes itself; drop it from the overrides")
        plan = {"rendered": args.overrides, "cached": [*args.overrides, f"data.num_scenes={args.compare}"]}
        for name, overrides in plan.items():
            variants[name] = timed_run(args.config, overrides, args.steps, args.warmup)
            print(
                f"{name:<28}{variants[name]['step_s_median'] * 1000:.0f} ms a step "
                f"(data {variants[name]['data_s_per_step'] * 1000:.0f} ms), load "
                f"{variants[name]['load_avg_after'][0]:.2f}"
            )
        run = variants["cached"]
    else:
        run = timed_run(args.config, args.overrides, args.steps, args.warmup)
    cfg, summary, state, step_times = run["cfg"], run["summary"], run["state"], run["step_s_all"]
    # data: rendering + text encoding, or the cache
    step_s, data_s = (
        run["step_s_median"],
        run["data_s_per_step"],
    )
    size = cfg.data.image_size

    flops = None
    try:
        from lenslib.model.flops import transformer_flops  # noqa: PLC0415 - lazy: imports torch, as above

        tokens = (size // cfg.data.patch) ** 2 if cfg.data.codec == "pixel" else (size // 16) ** 2
        fwd = transformer_flops(
            state["model_config"], tokens, cfg.data.max_text_tokens, cfg.optim.global_batch
        )["total"]
        flops = 3 * fwd  # forward + backward
    except ImportError:
        pass

    result = {
        "config": args.config,
        "overrides": run["overrides"],
        "device": device,
        "params": summary["params"],
        "global_batch": cfg.optim.global_batch,
        "image_size": size,
        "steps_timed": len(step_times),
        "step_s_median": step_s,
        "step_s_all": step_times,
        "samples_per_s": cfg.optim.global_batch / step_s,
        "data_s_per_step": data_s,
        "model_s_per_step": max(step_s - data_s, 0.0),
        "train_flops_per_step": flops,
        "achieved_flops": flops / step_s if flops else None,
        "achieved_flops_model_only": flops / max(step_s - data_s, 1e-9) if flops else None,
        "matmul_peak_flops": peak,
        "mfu": flops / step_s / peak if flops else None,
        "steps_per_5_min": int(300 / step_s),
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if variants:
        result["compare"] = {
            name: {k: v for k, v in r.items() if k not in ("cfg", "summary", "state")}
            for name, r in variants.items()
        }
        result["speedup_vs_rendered"] = variants["rendered"]["step_s_median"] / step_s
    print(f"{'config':<28}{args.config}")
    print(f"{'parameters':<28}{summary['params'] / 1e6:.2f} M")
    print(f"{'step (median)':<28}{step_s * 1000:.0f} ms  ({result['samples_per_s']:.1f} samples/s)")
    print(f"{'  of which data':<28}{data_s * 1000:.0f} ms")
    if flops:
        print(f"{'train FLOPs / step':<28}{flops / 1e9:.2f} GFLOP")
        print(
            f"{'achieved':<28}{result['achieved_flops'] / 1e9:.1f} GFLOP/s over the whole step, "
            f"{result['achieved_flops_model_only'] / 1e9:.1f} over the model part"
        )
    print(f"{'fp32 matmul peak':<28}{peak / 1e9:.1f} GFLOP/s")
    if flops:
        print(f"{'MFU':<28}{result['mfu'] * 100:.1f} %")
    print(f"{'steps in 5 minutes':<28}{result['steps_per_5_min']}")
    if variants:
        print(
            f"{'speed-up over rendering':<28}{result['speedup_vs_rendered']:.2f}x "
            f"(load average {result['load_avg'][0]:.2f})"
        )
    out = RESULTS.with_name(f"{args.out}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
