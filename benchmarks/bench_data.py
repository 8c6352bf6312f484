"""Data-pipeline throughput on this machine: filters per core, tiny-VLM captioning, faiss dedup, Ray overhead.

Run: ``.venv/bin/python benchmarks/bench_data.py [--quick]``. Prints a table and writes
``benchmarks/results/data.json`` (atomically). Filters run with one torch/BLAS thread, so images/s is per
core.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lenslib.atomic import write_json_atomic
from lenslib.data.dedup import PixelEmbedder, near_duplicate_pairs  # noqa: E402
from lenslib.data.filters import (  # noqa: E402
    BlurFilter,
    EntropyFilter,
    ExposureFilter,
    MinAreaFilter,
    decode_image,
)
from lenslib.data.pipeline import PipelineConfig, run_pipeline  # noqa: E402
from lenslib.data.shards import images_to_shards  # noqa: E402
from lenslib.recaption.local_server import LocalChatServer  # noqa: E402
from lenslib.recaption.tiny_vlm import build_tiny_vlm  # noqa: E402
from lenslib.recaption.vlm import VLMCaptioner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def photo(seed, w=512, h=512):
    rng = np.random.default_rng(seed)
    low = np.asarray(
        Image.fromarray(rng.integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8)).resize(
            (w, h), Image.Resampling.BICUBIC
        ),
        dtype=np.float64,
    )
    return Image.fromarray(np.clip(low * 0.7 + rng.normal(0, 25, (h, w, 3)) + 30, 0, 255).astype(np.uint8))


def png(im):
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_filters(n):
    torch.set_num_threads(1)
    ims = [photo(i) for i in range(n)]
    blobs = [png(im) for im in ims]
    rows = {"decode (JPEG 512²)": timed(lambda: [decode_image(b) for b in blobs])}
    for f in (MinAreaFilter(), BlurFilter(), EntropyFilter(), ExposureFilter()):
        rows[f.name] = timed(lambda f=f: f.scores(ims))
    rows["embed pixels-16"] = timed(lambda: PixelEmbedder(16)(ims))
    rows["all steps 1-8 + embed"] = sum(rows.values()) - 0.0
    return {k: {"seconds": v, "images_per_s_per_core": n / v} for k, v in rows.items()}


def bench_dedup(n, dim=768):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = timed(lambda: near_duplicate_pairs(x, 0.985), repeat=1)
    return {"n": n, "dim": dim, "seconds": t, "images_per_s": n / t}


def bench_vlm(n, batch_size, max_new_tokens):
    torch.set_num_threads(1)
    d = build_tiny_vlm(Path(tempfile.mkdtemp()) / "tiny-llava")
    cap = VLMCaptioner(str(d), batch_size=batch_size, max_new_tokens=max_new_tokens)
    ims = [photo(i, 256, 256) for i in range(n)]
    cap.caption(ims[:batch_size])  # warm-up
    t0 = time.perf_counter()
    out = cap.caption(ims)
    dt = time.perf_counter() - t0
    toks = sum(c.output_tokens for c in out)
    return {
        "model": "tiny LLaVA (random weights, ~0.2M params)",
        "images": n,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "seconds": dt,
        "captions_per_s": n / dt,
        "output_tokens_per_s": toks / dt,
    }


def bench_ray(n_shards, per_shard):
    work = Path(tempfile.mkdtemp())
    images_to_shards(
        {f"im{i:05d}": png(photo(i)) for i in range(n_shards * per_shard)}, work / "in", per_shard
    )
    os.environ["LENS_BENCH_KEY"] = "bench"
    res = {"shards": n_shards, "images": n_shards * per_shard}
    with LocalChatServer(api_key="bench") as srv:
        cfg = PipelineConfig(
            captioners=["openai:gpt-4.1"],
            funnel={"embedder": "pixels-16"},
            captioner_options={"base_url": srv.base_url, "api_key_env": "LENS_BENCH_KEY"},
        )
        t0 = time.perf_counter()
        run_pipeline(str(work / "in"), str(work / "one"), cfg, progress=False)
        res["single_process_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=256 << 20,
            _temp_dir=str(work / "ray_session"),
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        res["ray_init_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_pipeline(str(work / "in"), str(work / "ray"), cfg, ray_address="local", progress=False)
        res["ray_pipeline_s"] = time.perf_counter() - t0
        ray.shutdown()
    res["ray_overhead_s"] = res["ray_init_s"] + res["ray_pipeline_s"] - res["single_process_s"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (CI smoke)")
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args()
    n = 16 if a.quick else 64
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cpu": platform.processor(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "quick": a.quick,
        "load_average_at_start": os.getloadavg(),
    }
    results["filters_512"] = bench_filters(n)
    results["dedup_faiss"] = bench_dedup(2000 if a.quick else 10000)
    results["vlm_tiny"] = bench_vlm(16 if a.quick else 32, 8, 32)
    if not a.no_ray:
        results["ray"] = bench_ray(2 if a.quick else 4, 8 if a.quick else 16)

    print(f"{'filter (512², 1 core)':<28}{'img/s':>10}")
    for k, v in results["filters_512"].items():
        print(f"{k:<28}{v['images_per_s_per_core']:>10.1f}")
    d = results["dedup_faiss"]
    print(f"faiss range search {d['n']}×{d['dim']}: {d['seconds']:.2f} s")
    v = results["vlm_tiny"]
    print(
        f"tiny VLM: {v['captions_per_s']:.1f} captions/s, {v['output_tokens_per_s']:.0f} tokens/s (1 thread)"
    )
    if "ray" in results:
        r = results["ray"]
        print(
            f"pipeline {r['images']} images: single {r['single_process_s']:.1f} s; Ray init "
            f"{r['ray_init_s']:.1f} s "
            f"+ run {r['ray_pipeline_s']:.1f} s (overhead {r['ray_overhead_s']:.1f} s)"
        )
    out = ROOT / "benchmarks" / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
