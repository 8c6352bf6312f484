"""``lens sample``: generate images from a local LensPipeline folder.

Mirrors the official ``inference.py``: ``--prompt`` is split on ``|`` for several prompts, the
defaults are the CLI's (20 steps, CFG 5.0, base 1440 at 1:1), and files are written as
``<out-stem>_p{prompt:03d}_s{sample:02d}.png`` when there is more than one image (a single image
goes to ``--out`` itself). Files are written atomically. ``--fast`` samples through the fast path
(:meth:`LensPipeline.set_fast_path`, chapter 7): the same images up to float rounding. Used in chapter 4.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lenslib.atomic import atomic_file
from lenslib.cli import add_documented

__all__ = ["register", "parse_size", "output_paths"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> ``(height, width)``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like HEIGHTxWIDTH, e.g. 1024x1024; got {text!r}.") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"--size must be positive, got {text!r}.")
    return h, w


def output_paths(out: str | os.PathLike, num_prompts: int, num_images: int) -> list[list[Path]]:
    """Paths ``[prompt][sample]``: ``out`` itself for a single image, else ``stem_pXXX_sYY.suffix``."""
    out = Path(out)
    if num_prompts * num_images == 1:
        return [[out]]
    return [
        [out.with_name(f"{out.stem}_p{i:03d}_s{j:02d}{out.suffix}") for j in range(num_images)]
        for i in range(num_prompts)
    ]


def _save_atomic(image, path: Path) -> None:
    with atomic_file(path, keep_suffix=True) as tmp:  # PIL picks the format from the suffix
        image.save(tmp)


def _sample(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        print(f"lens sample: error: {msg}", file=sys.stderr)
        return 2

    prompts = [p.strip() for p in args.prompt.split("|")]
    if not any(prompts):
        return fail("--prompt is empty.")
    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        return fail(f"--out must end with one of {IMAGE_SUFFIXES}, got {args.out!r}.")
    model_dir = Path(args.model)
    if not (model_dir / "model_index.json").is_file():
        return fail(f"--model {args.model!r} is not a LensPipeline folder (no model_index.json).")
    height = width = None
    if args.size is not None:
        if args.base_resolution is not None or args.aspect_ratio is not None:
            return fail("give either --size or --base-resolution/--aspect-ratio, not both.")
        try:
            height, width = parse_size(args.size)
        except ValueError as e:
            return fail(str(e))
        base, ratio = None, None
    else:
        base = args.base_resolution if args.base_resolution is not None else 1440
        ratio = args.aspect_ratio if args.aspect_ratio is not None else "1:1"
        # lazy: lenslib.model.resolution imports torch (2.4 s, python -X importtime); `lens --help` imports
        # this module
        from .resolution import resolve_resolution  # noqa: PLC0415

        try:
            resolve_resolution(base, ratio)
        except ValueError as e:
            return fail(str(e))

    # lazy: torch and the pipeline (diffusers, transformers) cost 9 s to import (python -X importtime);
    # `lens --help` imports this module
    import torch  # noqa: PLC0415

    from .pipeline import LensPipeline  # noqa: PLC0415

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype_name = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    try:
        pipe = LensPipeline.from_pretrained(model_dir, dtype=dtype)
    except (OSError, ValueError) as e:
        return fail(f"cannot load {args.model!r}: {e}")
    pipe.to(device)
    if args.cuda_graphs and not device.startswith("cuda"):
        return fail("--cuda-graphs needs a CUDA device (--device cuda).")
    if args.fast or args.compile or args.cuda_graphs:
        pipe.set_fast_path(
            split_cfg=True,
            cuda_graphs=args.cuda_graphs,
            attention="sdpa",
            compile_blocks=args.compile,
            dynamic=False,
        )
    if args.date:
        pipe.prompt_date = args.date
    pipe.reasoner.api_url = args.api_url
    pipe.reasoner.api_key = args.api_key or os.environ.get("LENS_API_KEY")
    pipe.reasoner.api_model = args.api_model
    generator = torch.Generator("cpu").manual_seed(args.seed) if args.seed is not None else None
    try:
        result = pipe(
            prompt=prompts,
            negative_prompt=args.negative_prompt,
            height=height,
            width=width,
            base_resolution=base,
            aspect_ratio=ratio,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            num_images_per_prompt=args.num_images,
            generator=generator,
            max_sequence_length=args.max_sequence_length,
            enable_reasoner=args.enable_reasoner,
        )
    except ValueError as e:
        return fail(str(e))
    paths = output_paths(out, len(prompts), args.num_images)
    images = iter(result.images)  # interleaved: p0 s0, p0 s1, ..., p1 s0, ...
    for row in paths:
        for path in row:
            _save_atomic(next(images), path)
            print(path)
    return 0


def register(subparsers) -> None:
    p = add_documented(subparsers, "sample", "generate images with a local Lens pipeline folder", __doc__)
    p.add_argument(
        "--model", required=True, help="local pipeline folder (model_index.json, transformer/, vae/, ...)"
    )
    p.add_argument("--prompt", required=True, help='prompt text; several prompts separated by "|"')
    p.add_argument("--negative-prompt", default="", help='negative prompt (default "": zero features)')
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default 20; Turbo: 4; Base: 50)")
    p.add_argument("--guidance", type=float, default=5.0, help="CFG scale (default 5.0; Turbo: 1.0)")
    p.add_argument("--seed", type=int, default=None, help="seed of a CPU generator (default: random)")
    p.add_argument(
        "--size", default=None, help="HEIGHTxWIDTH in pixels, multiples of 16 (overrides the bucket)"
    )
    p.add_argument(
        "--base-resolution", type=int, default=None, help="bucket base 1024 or 1440 (default 1440)"
    )
    p.add_argument("--aspect-ratio", default=None, help="bucket ratio W:H, e.g. 16:9 (default 1:1)")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument(
        "--max-sequence-length", type=int, default=512, help="text tokens incl. template (default 512)"
    )
    p.add_argument("--date", default=None, help="pin the chat-template date YYYY-MM-DD (default: today)")
    p.add_argument(
        "--enable-reasoner",
        action="store_true",
        help="rewrite prompts with the local GPT-OSS before encoding (needs the full text_encoder folder)",
    )
    p.add_argument("--api-url", default=None, help="OpenAI-compatible base URL for an API prompt rewriter")
    p.add_argument(
        "--api-key",
        default=None,
        help="API key (or env LENS_API_KEY); with --api-model enables the API rewriter",
    )
    p.add_argument("--api-model", default=None, help="API model name for the prompt rewriter")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="model dtype (default bfloat16 on GPU, float32 on CPU)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="split CFG and mask-free attention: the same images up to rounding, faster (chapter 7)",
    )
    p.add_argument("--compile", action="store_true", help="--fast, with every block compiled (torch.compile)")
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="--fast, with each step replayed from a CUDA graph (CUDA only; prompts of one length)",
    )
    p.add_argument("--out", required=True, help="output image file (.png); numbered when several images")
    p.set_defaults(func=_sample)
