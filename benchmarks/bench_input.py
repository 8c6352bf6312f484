"""The trainer's input pipeline alone, in samples/s: rendered and encoded on the fly vs read from the world
cache.

Times what the training loop waits for, a :class:`lenslib.data.stream.BatchStream` handing over each step's
batches (tokens + text features, on the training device), with no model behind it:

- ``rendered``: the infinite world, every scene rendered and every caption MiniLM-encoded as the step asks;
- ``cached``: a finite pool of ``--scenes`` scenes (``data.num_scenes``) read from the world cache (uint8
  renders and float16 features, memory-mapped), built first if absent (its build rate is recorded too).

Run: ``.venv/bin/python benchmarks/bench_input.py [--config cpu-tiny] [--scenes 2000] [--threads 2] [--device
cpu|cuda]``. Prints a table and writes ``benchmarks/results/input.json`` (``--out NAME``:
``results/NAME.json``) with the load average before and after each part: other jobs on the machine slow every
figure. Each part also records its median and fastest step, the fastest being the best estimate of a quiet
machine's rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from lenslib.atomic import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def rate(stream, steps: int, batch: int, sync=lambda: None) -> dict:
    """Samples/s over ``steps`` steps of ``stream`` (after one untimed step), with the load average around it.

    Besides the overall rate, the median and the fastest step: on a machine shared with other jobs the
    fastest step is the closest figure to what a quiet machine does (interference only ever adds time).
    ``sync`` waits for the device (non-blocking copies return before they finish)."""
    it = iter(stream)
    for _ in next(it):  # first step: imports, first pages of the cache
        pass
    load_before, n, times = os.getloadavg(), 0, []
    t0 = time.perf_counter()
    for _ in range(steps):
        ts = time.perf_counter()
        for b in next(it):
            n += len(b)
        sync()
        times.append(time.perf_counter() - ts)
    seconds = time.perf_counter() - t0
    stream.close()
    return {
        "samples": n,
        "seconds": seconds,
        "samples_per_s": n / seconds,
        "samples_per_s_median_step": batch / statistics.median(times),
        "samples_per_s_fastest_step": batch / min(times),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu-tiny")
    parser.add_argument(
        "--scenes", type=int, default=2000, help="pool size of the cached run (data.num_scenes)"
    )
    parser.add_argument("--steps", type=int, default=500, help="timed steps from the cache")
    parser.add_argument("--rendered-steps", type=int, default=4, help="timed steps rendered on the fly")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", default="input")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch looks for a GPU
    # lazy: torch (and the lenslib modules that import it) only after --device has set CUDA_VISIBLE_DEVICES
    import torch  # noqa: PLC0415

    from lenslib.data.buckets import training_buckets  # noqa: PLC0415
    from lenslib.data.sources import build_source  # noqa: PLC0415
    from lenslib.data.stream import BatchStream  # noqa: PLC0415
    from lenslib.train.config import load_config  # noqa: PLC0415

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "device": args.device,
        "threads": args.threads,
        "scenes": args.scenes,
    }

    def stream(cfg, source):
        per_rank = cfg.optim.global_batch
        return BatchStream(
            source,
            seed=cfg.run.seed,
            rank=0,
            world_size=1,
            buckets=training_buckets(cfg.data, per_rank),
            micro_batch=cfg.optim.micro_batch,
            device=args.device,
            workers=cfg.data.num_workers,
        )

    cfg = load_config(args.config, args.overrides)
    live, _, _ = build_source(cfg, device=args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    result["rendered"] = rate(stream(cfg, live), args.rendered_steps, cfg.optim.global_batch, sync)

    root = Path(os.environ.get("LENS_CACHE") or tempfile.mkdtemp()) / "bench_input"
    cached_cfg = load_config(
        args.config, [*args.overrides, f"data.num_scenes={args.scenes}", f"data.path={root}"]
    )
    t0, load = time.perf_counter(), os.getloadavg()
    cached, _, _ = build_source(cached_cfg, device=args.device)
    result["cache_open_or_build_s"] = time.perf_counter() - t0
    result["cache_build_load_avg_before"] = load
    result["cached"] = rate(stream(cached_cfg, cached), args.steps, cfg.optim.global_batch, sync)
    result.update(
        global_batch=cfg.optim.global_batch,
        image_size=cfg.data.image_size,
        speedup=result["cached"]["samples_per_s"] / result["rendered"]["samples_per_s"],
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )

    print(
        f"{'config':<30}{args.config} {' '.join(args.overrides)} (batch {cfg.optim.global_batch}, "
        f"{cfg.data.image_size} px, {args.threads} threads, {args.device})"
    )
    for name in ("rendered", "cached"):
        r = result[name]
        print(
            f"{name:<30}{r['samples_per_s']:>10.0f} samples/s  (median step "
            f"{r['samples_per_s_median_step']:.0f}, "
            f"fastest {r['samples_per_s_fastest_step']:.0f}; load average {r['load_avg_before'][0]:.2f} -> "
            f"{r['load_avg_after'][0]:.2f})"
        )
    print(f"{'cache opened or built in':<30}{result['cache_open_or_build_s']:>10.1f} s")
    write_json_atomic(RESULTS / f"{args.out}.json", result)
    print(f"wrote {RESULTS / f'{args.out}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
