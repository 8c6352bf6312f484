"""The full Lens transformer at accelerator speed: training MFU, activation memory, seconds per image.

With random weights (speed does not depend on them) and the official config, on one CUDA device:

- **training**: forward + backward at 512² (1024 image + 160 text tokens), batch 8 and 24, bf16
  autocast over fp32 weights; MFU = 3 × the analytic forward FLOPs of
  :func:`lenslib.model.flops.transformer_flops` per second, over a bf16 matmul peak measured in the
  same run. For every setting: eager (the official float mask), the fast attention, regional
  ``torch.compile`` and the activation checkpointing policies, with the activation memory each needs
  (``torch.cuda.max_memory_allocated`` minus weights and gradients) and the compile time. The
  optimizer is left out: in the paper's FSDP run its state is sharded 128 ways.
- **sampling**: seconds per 1024² image, 20 steps, CFG with the empty negative, one 160-token prompt,
  transformer only (the loop of :class:`lenslib.model.pipeline.LensPipeline` without text encoder and
  VAE), bf16 weights: eager vs each fast-path setting, with the largest difference of the final latents
  from the eager ones (the fast path is the same function; in bf16 the rounding differs).

Without CUDA (or with ``--tiny``) it runs a tiny config on the CPU in a few seconds, with the same
structure; CPU activation memory is then the tensor bytes counted by PyTorch's ``MemTracker``, and
the peak is a float32 matmul peak. The JSON records the device, the config and which figures are
which; nothing in a CPU run is a GPU figure.

Run: ``python benchmarks/bench_gpu.py`` (CUDA, full size; every compiled setting compiles from
scratch, which is most of the run) or ``python benchmarks/bench_gpu.py --tiny``. Writes
``benchmarks/results/gpu.json`` (or ``--out``). Chapter 7 shows the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from torch.distributed._tools.mem_tracker import (
    MemTracker,
)  # private, but PyTorch's only tensor-memory tracker for CPU

from lenslib.atomic import write_json_atomic
from lenslib.model.fast import CHECKPOINT_POLICIES
from lenslib.model.flops import block_roofline, denoising_step_flops, roofline_times, transformer_flops
from lenslib.model.pipeline import LensPipeline
from lenslib.model.presets import get_config
from lenslib.model.schedule import make_scheduler
from lenslib.model.transformer import LensTransformer2DModel

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"

# Full size: the paper's stage-1 shapes and the 1024² sampling of the model card.
FULL = dict(train_grid=32, train_text=160, train_batches=[8, 24], sample_grid=64, sample_text=160, steps=20)
# Tiny: the same settings at a size two CPU cores run in seconds (model preset "tiny").
TINY = dict(train_grid=6, train_text=10, train_batches=[8, 24], sample_grid=8, sample_text=10, steps=3)

# (name, attention mode, compile the blocks, checkpointing policy or None, padded text)
TRAIN_SETTINGS = [
    ("eager", "reference", False, None, False),
    ("fast attention", "sdpa", False, None, False),
    ("fast attention + compile", "sdpa", True, None, False),
    ("padded text, eager", "reference", False, None, True),
    ("padded text, flex + compile", "flex", True, None, True),
] + [(f"compile + checkpoint {p}", "sdpa", True, p, False) for p in CHECKPOINT_POLICIES]
# (name, attention mode, split CFG, compile, CUDA graphs)
SAMPLE_SETTINGS = [
    ("eager (official batch of 2)", "reference", False, False, False),
    ("fast attention", "sdpa", False, False, False),
    ("split CFG + fast attention", "sdpa", True, False, False),
    ("split CFG + fast attention + compile", "sdpa", True, True, False),
    ("split CFG + fast attention + compile + CUDA graphs", "sdpa", True, True, True),
]
# Datasheet figures for the roofline table (dense bf16 FLOP/s, memory bytes/s), not measurements.
DATASHEETS = {"H100 SXM": (989e12, 3.35e12), "H200 SXM": (989e12, 4.8e12)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Best FLOP/s of an n×n matmul in ``dtype`` on ``device``, measured now."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def fresh_model(
    config: dict, device: torch.device, dtype: torch.dtype, compiled: bool
) -> LensTransformer2DModel:
    if compiled:
        torch._dynamo.reset()  # compile time is measured from scratch for every compiled setting
    if device.type == "cuda":  # the previous setting's 4B-parameter model must be gone first
        gc.collect()
        torch.cuda.empty_cache()
    torch.manual_seed(0)
    with torch.device(device):
        model = LensTransformer2DModel(**config)
    return model if dtype == torch.float32 else model.to(dtype)


def text_inputs(config: dict, batch: int, n_txt: int, padded: bool, device, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    layers = [
        torch.randn(batch, n_txt, config["enc_hidden_dim"], generator=g).to(device, dtype)
        for _ in config["selected_layer_index"]
    ]
    mask = torch.ones(batch, n_txt, dtype=torch.bool)
    if padded:  # caption lengths between 60 % and 100 % of the slots, right-padded as the trainer pads
        lengths = torch.randint(int(0.6 * n_txt), n_txt + 1, (batch,), generator=g)
        mask = torch.arange(n_txt)[None] < lengths[:, None]
    return layers, mask.to(device)


def measure_training(config, shapes, device, args, peak: float) -> list[dict]:
    grid, n_txt = shapes["train_grid"], shapes["train_text"]
    s_img = grid * grid
    rows = []
    for batch in shapes["train_batches"]:
        fwd = transformer_flops(config, s_img, n_txt, batch)["total"]
        for name, attention, compile_blocks, policy, padded in TRAIN_SETTINGS:
            row = dict(
                setting=name,
                batch=batch,
                attention=attention,
                compile=compile_blocks,
                checkpointing=policy,
                padded_text=padded,
                img_tokens=s_img,
                txt_tokens=n_txt,
                step_flops=3 * fwd,
            )
            if attention == "flex" and device.type != "cuda":
                row["error"] = "not run: FlexAttention has no backward pass on the CPU"
                rows.append(row)
                print_row(row, ())
                continue
            model = None
            try:
                model = fresh_model(config, device, torch.float32, compile_blocks).train()
                model.set_fast_path(attention, compile_blocks=compile_blocks, backend=args.compile_backend)
                if policy is not None:
                    model.enable_selective_checkpointing(policy)
                text, mask = text_inputs(config, batch, n_txt, padded, device, torch.float32)
                g = torch.Generator().manual_seed(1)
                inputs = dict(
                    hidden_states=torch.randn(batch, s_img, config["in_channels"], generator=g).to(device),
                    encoder_hidden_states=text,
                    encoder_hidden_states_mask=mask,
                    timestep=torch.rand(batch, generator=g).to(device),
                    img_shapes=[(1, grid, grid)],
                )
                row.update(time_train_step(model, inputs, device, args, compile_blocks))
                row["mfu"] = row["step_flops"] / row["step_seconds"] / peak
            except torch.OutOfMemoryError:
                row["error"] = "out of memory"
            finally:
                del model
            rows.append(row)
            print_row(row, ("step_seconds", "mfu", "activation_gib", "compile_seconds"))
    return rows


def time_train_step(model, inputs, device, args, compiled: bool) -> dict:
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step():
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = model(**inputs).float().square().mean()
        loss.backward()
        sync(device)

    t0 = time.perf_counter()
    step()  # the first step includes compiling
    first = time.perf_counter() - t0
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out = dict(step_seconds=statistics.median(times), step_seconds_min=min(times))
    if compiled:
        out["compile_seconds"] = max(first - out["step_seconds"], 0.0)
    out.update(activation_memory(model, step, device))
    return out


def activation_memory(model, step, device) -> dict:
    """Bytes one training step needs beyond weights and gradients (CUDA: allocator peak; CPU: MemTracker)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = weights  # fp32 gradients, one per weight
    model.zero_grad(set_to_none=True)
    sizes = dict(weights_gib=weights / 2**30, grads_gib=grads / 2**30)
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)  # weights and inputs
        torch.cuda.reset_peak_memory_stats(device)
        step()
        peak = torch.cuda.max_memory_allocated(device)
        act = peak - base - grads
        return dict(
            sizes,
            activation_bytes=act,
            activation_gib=act / 2**30,
            peak_allocated_gib=peak / 2**30,
            memory_measure="torch.cuda.max_memory_allocated minus weights, inputs and gradients (includes "
            "autocast's bf16 weight copies, which FSDP's bf16 all-gather replaces)",
        )
    tracker = MemTracker()
    tracker.track_external(model)
    # A dispatch mode cannot watch compiled code: the step runs eagerly (same saved tensors, less fusion).
    with tracker, torch.compiler.set_stance("force_eager"):
        step()
    peak = {str(k).split(".")[-1]: v for k, v in tracker.get_tracker_snapshot("peak")[device].items()}
    act = peak.get("ACT", 0) + peak.get("TEMP", 0)
    return dict(
        sizes,
        activation_bytes=act,
        activation_gib=act / 2**30,
        memory_measure="MemTracker peak tensor bytes, activations + temporaries, eager (CPU)",
    )


def measure_sampling(config, shapes, device, args) -> list[dict]:
    grid, n_txt, steps = shapes["sample_grid"], shapes["sample_text"], shapes["steps"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows, reference = [], None
    for name, attention, split, compile_blocks, graphs in SAMPLE_SETTINGS:
        row = dict(
            setting=name,
            attention=attention,
            split_cfg=split,
            compile=compile_blocks,
            cuda_graphs=graphs,
            side=grid * 16,
            steps=steps,
            txt_tokens=n_txt,
            dtype=str(dtype).replace("torch.", ""),
            flops_per_image=steps * denoising_step_flops(config, grid * 16, grid * 16, n_txt, cfg=True),
        )
        if graphs and device.type != "cuda":
            row["error"] = "CUDA graphs need a CUDA device"
            rows.append(row)
            print_row(row, ())
            continue
        model = fresh_model(config, device, dtype, compile_blocks).eval()
        pipe = LensPipeline(
            scheduler=make_scheduler(), vae=None, text_encoder=None, tokenizer=None, transformer=model
        )
        pipe.set_progress_bar_config(disable=True)
        # dynamic=False: the two CFG branches (160 and 0 text tokens) get one static graph each
        pipe.set_fast_path(
            split_cfg=split,
            cuda_graphs=graphs,
            attention=attention,
            compile_blocks=compile_blocks,
            backend=args.compile_backend,
            dynamic=False,
        )
        text, mask = text_inputs(config, 1, n_txt, False, device, dtype, seed=2)
        latents = torch.randn(
            1, grid * grid, config["in_channels"], generator=torch.Generator().manual_seed(3)
        )

        def image():
            out = pipe(
                prompt_embeds=text,
                prompt_mask=mask,
                negative_prompt="",
                height=grid * 16,
                width=grid * 16,
                num_inference_steps=steps,
                guidance_scale=5.0,
                latents=latents.to(device, dtype),
                output_type="latent",
            ).images
            sync(device)
            return out

        t0 = time.perf_counter()
        final = image()  # compiles and captures
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.sample_repeats):
            t0 = time.perf_counter()
            image()
            times.append(time.perf_counter() - t0)
        row.update(seconds_per_image=statistics.median(times), seconds_per_image_min=min(times))
        row["achieved_flops_per_s"] = row["flops_per_image"] / row["seconds_per_image"]
        if compile_blocks or graphs:
            row["compile_seconds"] = max(first - row["seconds_per_image"], 0.0)
        if reference is None:
            reference = final.float()
        diff = (final.float() - reference).abs().max().item()
        row["max_abs_latent_difference_from_eager"] = diff
        row["relative_latent_difference_from_eager"] = (
            final.float() - reference
        ).norm().item() / reference.norm().item()
        pipe = model = None  # free the device memory before the next setting
        rows.append(row)
        print_row(row, ("seconds_per_image", "compile_seconds", "max_abs_latent_difference_from_eager"))
    return rows


def print_row(row: dict, keys) -> None:
    label = row["setting"] + (f", batch {row['batch']}" if "batch" in row else "")
    if "error" in row:
        print(f"  {label:<58} {row['error']}", flush=True)
        return
    shown = ", ".join(f"{k} {row[k]:.4g}" for k in keys if k in row)
    print(f"  {label:<58} {shown}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny config (automatic without CUDA)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=None,
        help="training batch sizes (default: 8 24, the paper's stage-1 micro-batch last)",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample-repeats", type=int, default=2)
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend for the compiled settings (eager: Dynamo tracing only, fast)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (a tiny model gains nothing from more)"
    )
    args = parser.parse_args(argv)
    # A fresh inductor cache: the first compiled setting pays a cold compile, as a new user would; later
    # settings reuse what this run compiled where their graphs coincide (compile_seconds says so).
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench-gpu-inductor-"))

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            "--device cuda but torch sees no CUDA device; install a CUDA build of torch or use --tiny"
        )
    tiny = args.tiny or device.type != "cuda"
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*flex_attention.*")  # eager FlexAttention's slowness notice
    diffusers_logging.set_verbosity_error()  # the bf16 cast's notice about fp32 modules (Lens keeps none)
    config = get_config("tiny" if tiny else "lens")
    shapes = dict(TINY if tiny else FULL)
    if args.batches:
        shapes["train_batches"] = args.batches
    if device.type == "cuda":
        peak_dtype, peak_size, name = torch.bfloat16, 8192, torch.cuda.get_device_name(device)
    else:
        peak_dtype, peak_size, name = torch.float32, 1024, platform.processor() or platform.machine()
    print(
        f"device {device} ({name}), {'tiny' if tiny else 'full'} config, torch {torch.__version__}",
        flush=True,
    )
    load_before = os.getloadavg()[0]
    peak = matmul_peak(device, peak_dtype, peak_size)
    print(
        f"measured {str(peak_dtype).replace('torch.', '')} matmul peak {peak / 1e12:.3f} TFLOP/s", flush=True
    )

    print("training (forward + backward):", flush=True)
    train = measure_training(config, shapes, device, args, peak)
    print("sampling (transformer only, CFG):", flush=True)
    sample = measure_sampling(config, shapes, device, args)
    # Other processes can slow the first measurement: the peak is the better of two, and MFU uses it.
    second = matmul_peak(device, peak_dtype, peak_size)
    if second > peak:
        for row in train:
            if "mfu" in row:
                row["mfu"] *= peak / second
        peak = second

    roofline = None
    if not tiny:  # the analytic lower bounds beside the measured times (chapter 7 shows them)
        rows = block_roofline(
            config, shapes["train_grid"] ** 2, shapes["train_text"], shapes["train_batches"][0]
        )
        roofline = {
            sheet: roofline_times(rows, flops, bandwidth) for sheet, (flops, bandwidth) in DATASHEETS.items()
        }
    result = dict(
        benchmark="gpu",
        device=device.type,
        device_name=name,
        tiny=tiny,
        note=(
            "full Lens config, random weights"
            if not tiny
            else f"tiny config on {device.type}: checks the benchmark runs end to end; no full-size figure"
            + ("" if device.type == "cuda" else ", no GPU figure")
        ),
        config=config,
        shapes=shapes,
        matmul_peak_flops_per_s=peak,
        matmul_peak_dtype=str(peak_dtype).replace("torch.", ""),
        matmul_peak_size=peak_size,
        compile_backend=args.compile_backend,
        compile_seconds_note=(
            "first call minus a steady step; the first compiled setting starts from an empty "
            "inductor cache, later ones reuse this run's cache where graphs coincide"
        ),
        train_precision="bf16 autocast, fp32 weights" if device.type == "cuda" else "fp32",
        training=train,
        sampling=sample,
        roofline_datasheet_bound_per_block=roofline,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        threads=args.threads,
        load_average_before=load_before,
        load_average_after=os.getloadavg()[0],
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    with torch.device("meta"):
        result["parameters"] = sum(p.numel() for p in LensTransformer2DModel(**config).parameters())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
