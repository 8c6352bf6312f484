"""``benchmarks/bench_gpu.py`` runs end to end on the CPU with its tiny config and writes the JSON chapter 7
reads."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from lenslib.model.fast import CHECKPOINT_POLICIES
from lenslib.paths import REPO_ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO_ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_run_writes_every_setting_with_finite_numbers(tmp_path):
    bench = _bench()
    out = tmp_path / "gpu.json"
    threads = torch.get_num_threads()
    try:  # compile backend "eager": dynamo traces every compiled setting, no code generation (seconds)
        assert (
            bench.main(
                [
                    "--tiny",
                    "--device",
                    "cpu",
                    "--out",
                    str(out),
                    "--compile-backend",
                    "eager",
                    "--repeats",
                    "1",
                    "--warmup",
                    "0",
                    "--sample-repeats",
                    "1",
                    "--batches",
                    "2",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["tiny"] is True and "no GPU figure" in result["note"]
    assert result["matmul_peak_flops_per_s"] > 0 and result["matmul_peak_dtype"] == "float32"
    assert result["parameters"] == sum(
        p.numel() for p in bench.LensTransformer2DModel(**result["config"]).parameters()
    )

    train = {row["setting"]: row for row in result["training"]}
    assert set(train) == {s[0] for s in bench.TRAIN_SETTINGS}
    assert {f"compile + checkpoint {p}" for p in CHECKPOINT_POLICIES} <= set(train)
    assert "FlexAttention" in train["padded text, flex + compile"]["error"]  # no backward on the CPU, said so
    for name, row in train.items():
        if "error" in row:
            continue
        for key in ("step_seconds", "mfu", "activation_bytes", "step_flops"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key)
        # MFU is the step's analytic FLOPs per second over the peak measured in the same run
        assert row["mfu"] == pytest.approx(
            row["step_flops"] / row["step_seconds"] / result["matmul_peak_flops_per_s"]
        )
        assert "MemTracker" in row["memory_measure"]
        assert ("compile_seconds" in row) == row["compile"]
    # checkpointing keeps less than storing every activation
    assert (
        train["compile + checkpoint full"]["activation_bytes"] < train["fast attention"]["activation_bytes"]
    )

    sample = {row["setting"]: row for row in result["sampling"]}
    assert set(sample) == {s[0] for s in bench.SAMPLE_SETTINGS}
    assert "CUDA" in sample["split CFG + fast attention + compile + CUDA graphs"]["error"]
    for name, row in sample.items():
        if "error" in row:
            continue
        assert math.isfinite(row["seconds_per_image"]) and row["seconds_per_image"] > 0, name
        assert row["max_abs_latent_difference_from_eager"] <= 1e-4, name  # float32: the same function
