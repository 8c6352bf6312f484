"""``lens recaption`` and ``lens data …`` subcommands (heavy imports happen inside the commands).

- ``lens recaption --input IN --output OUT --captioner SPEC [...] [--ray-address auto]``: the cleaning
  funnel + captioning pipeline (:mod:`lenslib.data.pipeline`), resumable.
- ``lens data report OUT``: the funnel table of a finished (or partial) run.
- ``lens data buckets``: the paper's 27 training buckets with their batch sizes.
- ``lens data cache --input OUT --output CACHE --text-encoder NAME --codec SPEC``: text-feature and
  latent cache for training (:mod:`lenslib.data.feature_cache`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lenslib.cli import fail


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recaption",
        help="clean and recaption an image dataset (funnel + captioners)",
        description="Runs the nine-step cleaning funnel and the captioners over input "
        "shards; resumable and idempotent; one process or Ray.",
    )
    p.add_argument(
        "--input", required=True, help="tar/parquet/arrow shards (file, glob, {a..b} pattern or folder)"
    )
    p.add_argument(
        "--output", required=True, help="output folder (shards/, reports/, funnel.json, manifest.json)"
    )
    p.add_argument(
        "--captioner",
        action="append",
        default=[],
        metavar="SPEC",
        help="[KIND=]BACKEND:ARG, repeatable: openai:gpt-4.1, brief=vlm:/path/model, oracle:detailed",
    )
    p.add_argument("--format", choices=("tar", "parquet"), default="tar", help="output shard format")
    p.add_argument(
        "--ray-address",
        default=None,
        help="run on Ray: 'auto' (existing cluster), 'ray://host:port', or 'local'",
    )
    p.add_argument("--ray-concurrency", type=int, default=None, help="actors per stage (default: all CPUs)")
    g = p.add_argument_group("funnel")
    g.add_argument(
        "--embedder",
        default="pixels-16",
        help="near-dup embeddings: local CLIP/SigLIP folder, 'pixels-N' (non-learned), or 'none'",
    )
    g.add_argument("--dedup-threshold", type=float, default=0.985)
    for name in ("nsfw", "aesthetic", "watermark"):
        g.add_argument(
            f"--{name}",
            default=None,
            metavar="FOLDER",
            help=f"local {name} image-classification model folder (step skipped if unset)",
        )
    g.add_argument(
        "--nsfw-label", default="nsfw", help="label of the NSFW classifier whose probability is the score"
    )
    g.add_argument("--watermark-label", default="watermark", help="label of the watermark classifier")
    g.add_argument("--min-area", type=int, default=384 * 384)
    g.add_argument("--blur", type=float, default=10.0, help="min variance of the Laplacian")
    g.add_argument("--entropy", type=float, default=1.0, help="min grey-histogram entropy (bits)")
    g.add_argument("--exposure-min", type=float, default=0.05)
    g.add_argument("--exposure-max", type=float, default=0.97)
    c = p.add_argument_group("captioners")
    c.add_argument(
        "--base-url", default=None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL or OpenAI)"
    )
    c.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    c.add_argument("--max-concurrency", type=int, default=8)
    c.add_argument("--price-in", type=float, default=0.0, help="USD per million input tokens")
    c.add_argument("--price-out", type=float, default=0.0, help="USD per million output tokens")
    c.add_argument("--device", default="cpu", help="torch device for VLM captioners")
    c.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--images-per-shard", type=int, default=256, help="for folder inputs")
    p.add_argument("--overwrite", action="store_true", help="delete OUT first")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_recaption)

    d = subparsers.add_parser("data", help="data tools: funnel report, buckets, feature cache")
    sub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    r = sub.add_parser("report", help="print the funnel report of a recaption output")
    r.add_argument("output")
    r.set_defaults(func=_report)
    b = sub.add_parser("buckets", help="print the paper's 27 aspect-ratio buckets")
    b.set_defaults(func=_buckets)
    k = sub.add_parser("cache", help="pre-compute text features and latents of a recaption output")
    k.add_argument("--input", required=True, help="a recaption output folder")
    k.add_argument("--output", required=True)
    k.add_argument("--text-encoder", required=True, help="gpt-oss | minilm | tiny-gpt-oss")
    k.add_argument("--text-encoder-path", default=None, help="local folder for gpt-oss")
    k.add_argument("--codec", default="pixel:2", help="'pixel:P' or 'flux2:FOLDER' (AutoencoderKLFlux2)")
    k.add_argument("--kinds", default="detailed", help="comma-separated caption kinds to encode")
    k.add_argument("--base", type=int, default=None, help="bucket base side (default: by image area)")
    k.add_argument(
        "--square",
        type=int,
        default=None,
        metavar="SIZE",
        help="one square SIZE×SIZE bucket (stage 1 trains at 512×512) instead of the 27 buckets",
    )
    k.add_argument("--shard-size", type=int, default=256)
    k.set_defaults(func=_cache)
    d.set_defaults(func=lambda a: (d.print_help(), 0)[1])


def _output_folder(flag: str, value: str) -> None:
    """``value`` must be a folder or creatable as one (no file in its place or on its path)."""
    out = Path(value)
    above = next((p for p in (out, *out.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise NotADirectoryError(f"{flag} {out}: {above} is a file; give a folder (existing or new).")


def _recaption(a) -> int:
    # lazy (every command here): `lens --help` imports this module; pipeline 0.2 s, shards 0.08 s,
    # funnel 0.17 s, buckets 0.03 s, the text encoders 1.2 s, the feature cache 3 s, the VAE 12 s
    # (python -X importtime)
    from .pipeline import PipelineConfig, run_pipeline  # noqa: PLC0415
    from .shards import list_shards  # noqa: PLC0415

    logging.basicConfig(
        level=logging.WARNING if a.quiet else logging.INFO, format="%(levelname)s %(message)s"
    )
    if not a.captioner:
        return fail("recaption", "give at least one --captioner (e.g. openai:gpt-4.1 or vlm:/path/to/model)")
    try:  # the inputs and the output folder, before any model or captioner is loaded
        for flag, value in (
            ("--batch-size", a.batch_size),
            ("--images-per-shard", a.images_per_shard),
            ("--max-concurrency", a.max_concurrency),
            ("--max-new-tokens", a.max_new_tokens),
        ):
            if value < 1:
                raise ValueError(f"{flag} {value}: give a positive number")
        list_shards(a.input, a.images_per_shard)
        _output_folder("--output", a.output)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        return fail("recaption", err)
    funnel = {
        "thresholds": {
            "min_area": a.min_area,
            "blur": a.blur,
            "entropy": a.entropy,
            "exposure_min": a.exposure_min,
            "exposure_max": a.exposure_max,
        },
        "embedder": None if a.embedder == "none" else a.embedder,
        "dedup_threshold": a.dedup_threshold,
        "nsfw": a.nsfw,
        "aesthetic": a.aesthetic,
        "watermark": a.watermark,
        "nsfw_label": a.nsfw_label,
        "watermark_label": a.watermark_label,
    }
    opts = {
        "base_url": a.base_url,
        "api_key_env": a.api_key_env,
        "max_concurrency": a.max_concurrency,
        "price_in_per_m": a.price_in,
        "price_out_per_m": a.price_out,
        "device": a.device,
        "max_new_tokens": a.max_new_tokens,
    }
    cfg = PipelineConfig(
        captioners=a.captioner,
        output_format=a.format,
        funnel=funnel,
        captioner_options=opts,
        batch_size=a.batch_size,
        images_per_shard=a.images_per_shard,
    )
    m = run_pipeline(
        a.input,
        a.output,
        cfg,
        ray_address=a.ray_address,
        overwrite=a.overwrite,
        progress=not a.quiet,
        ray_concurrency=a.ray_concurrency,
    )

    # lazy: see _recaption
    from .funnel import FunnelReport  # noqa: PLC0415

    print(FunnelReport.load(Path(a.output) / "funnel.json").table())
    u = m["usage"]
    cost = (u["input_tokens"] * a.price_in + u["output_tokens"] * a.price_out) / 1e6
    print(
        f"{m['n_out']} of {m['n_in']} images kept; captions {u['captions']}, tokens in/out "
        f"{u['input_tokens']}/{u['output_tokens']}, cost ${cost:.4f}; manifest: {a.output}/manifest.json"
    )
    return 0


def _report(a) -> int:
    # lazy: see _recaption
    from .funnel import FunnelReport  # noqa: PLC0415

    p = Path(a.output) / "funnel.json"
    if not p.is_file():
        return fail(
            "data report",
            f"{p} not found: run `lens recaption` first (it writes funnel.json when it finishes)",
        )
    print(FunnelReport.load(p).table())
    return 0


def _buckets(a) -> int:
    # lazy: see _recaption
    from .buckets import LENS_BUCKETS  # noqa: PLC0415

    print(f"{'base':>5} {'ratio':>6} {'width':>6} {'height':>7} {'batch':>6}")
    for b in LENS_BUCKETS:
        print(f"{b.base:>5} {b.ratio[0]:>3}:{b.ratio[1]:<2} {b.width:>6} {b.height:>7} {b.batch_size:>6}")
    return 0


def _cache(a) -> int:
    # lazy: see _recaption
    from lenslib.model.text_encoders.registry import (  # noqa: PLC0415
        available_text_encoders,
        get_text_encoder,
    )

    from .feature_cache import build_feature_cache  # noqa: PLC0415
    from .shards import read_output  # noqa: PLC0415

    manifest = Path(a.input) / "manifest.json"
    kind, _, arg = a.codec.partition(":")
    try:  # every argument, before the encoder, the codec or any image is loaded
        if not manifest.is_file():
            raise FileNotFoundError(
                f"--input {a.input} is not a recaption output (no manifest.json): give a folder "
                "written by `lens recaption`."
            )
        m = json.loads(manifest.read_text())
        if a.text_encoder not in available_text_encoders():
            raise ValueError(
                f"--text-encoder {a.text_encoder!r}: choose one of {', '.join(available_text_encoders())}."
            )
        if kind == "pixel" and (not (arg or "2").isdigit() or int(arg or "2") < 1):
            raise ValueError(
                f"--codec {a.codec!r}: the pixel codec's patch is a positive integer, e.g. pixel:2."
            )
        if kind not in ("pixel", "flux2"):
            raise ValueError(f"unknown --codec {a.codec!r}: use pixel:P or flux2:FOLDER")
        for flag, value in (("--shard-size", a.shard_size), ("--square", a.square), ("--base", a.base)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} {value}: give a positive number")
        _output_folder("--output", a.output)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        return fail("data cache", err)
    kw = {"path": a.text_encoder_path} if a.text_encoder_path else {}
    enc = get_text_encoder(a.text_encoder, **kw)
    if kind == "pixel":
        # lazy: see _recaption
        from lenslib.model.vae import PixelCodec  # noqa: PLC0415

        codec = PixelCodec(patch_size=int(arg or 2))
    else:
        # lazy: see _recaption
        from lenslib.model.vae import Flux2Codec  # noqa: PLC0415

        codec = Flux2Codec.from_pretrained(arg)
    records = [r for s in m["shards"] for r in read_output(Path(a.input) / s["output"])]
    # lazy: see _recaption
    from .buckets import LENS_BUCKETS, Bucket  # noqa: PLC0415

    buckets = [Bucket(a.square, a.square, a.square, (1, 1))] if a.square else LENS_BUCKETS
    doc = build_feature_cache(
        records,
        a.output,
        enc,
        codec,
        kinds=tuple(a.kinds.split(",")),
        base=a.base,
        buckets=buckets,
        shard_size=a.shard_size,
        captioners=m["config"]["captioners"],
        progress=True,
    )
    print(
        f"cached {doc['n']} images in {len(doc['shards'])} shards at {a.output} "
        f"(text encoder {enc.name}, codec {codec.name})"
    )
    return 0
