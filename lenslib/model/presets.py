"""Named sizes of :class:`~lenslib.model.transformer.LensTransformer2DModel`, from CPU toys to Lens.

=============  ======  =====  =====  =========  ==========  ===========================================
preset         blocks  width  heads  head dim   parameters  use
=============  ======  =====  =====  =========  ==========  ===========================================
``lens``       48      1536   24     64         4.10e9      the released model (official config.json)
``lens-toy``   32      1024   16     64         1.22e9      the paper's "Lens-Toy" ablation backbone
``cpu-small``  6       256    4      64         ~15M        CPU experiments that need more capacity
``cpu-tiny``   4       128    4      32         ~2.6M       the book's CPU training runs (minutes)
``tiny``       2       64     4      16         0.33M       unit tests and the CPU run of the GPU benchmark
=============  ======  =====  =====  =========  ==========  ===========================================

``lens-toy``: the paper trains its caption/VAE/text-encoder ablations on a "1.2B backbone with a
Qwen3-0.6B encoder" without giving its dimensions. We keep Lens's own shape law (head dim 64, width
= 32·depth, heads = depth/2, RoPE axes (8, 28, 28)); a block then holds ≈36·width² parameters and
solving 36·(32·L)²·L ≈ 1.2e9 gives L = 32, width 1024: 1,216,497,792 parameters. The text side is
Qwen3-0.6B (hidden size 1024, 28 layers), tapped like Lens taps GPT-OSS (the end of each quarter of
the depth: 0-based 6, 13, 20, 27, as 5/11/17/23 are for 24 layers).

The CPU presets default to the book's CPU setting: pixel space with 4×4 patches (in_channels
3·4·4 = 48, patch_size 4, out_channels 3) and the MiniLM-L6 text encoder (width 384, layers 1/3/5).
Both are constructor values, so the same presets run on small VAE latents or with another encoder::

    get_config("cpu-tiny", in_channels=16, patch_size=2)                 # 4-channel latents, 2×2 patches
    get_config("cpu-tiny", enc_hidden_dim=1024, num_text_layers=4,      # Qwen3-0.6B, 4 taps of 28
               text_encoder_layers=28)
    cpu_config("cpu-tiny", in_channels=48, enc_hidden_dim=384, num_text_layers=3)

Used in chapters 2 and later, by the trainer configs and by ``benchmarks/bench_model.py``.
"""

from __future__ import annotations

import copy
from typing import Any

#: Official ``transformer/config.json`` values (official code: transformer config.json).
LENS_CONFIG: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 128,
    "out_channels": 32,
    "num_layers": 48,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "inner_dim": 1536,
    "enc_hidden_dim": 2880,
    "axes_dims_rope": [8, 28, 28],
    "gate_mlp": True,
    "rms_norm": True,
    "multi_layer_encoder_feature": True,
    "selected_layer_index": [5, 11, 17, 23],
}

PRESETS: dict[str, dict[str, Any]] = {
    "lens": LENS_CONFIG,
    "lens-toy": {
        **LENS_CONFIG,
        "num_layers": 32,
        "num_attention_heads": 16,
        "inner_dim": 1024,
        "enc_hidden_dim": 1024,  # Qwen3-0.6B hidden size
        "selected_layer_index": [6, 13, 20, 27],  # end of each quarter of Qwen3-0.6B's 28 layers
    },
    "cpu-small": {
        **LENS_CONFIG,
        "patch_size": 4,
        "in_channels": 48,
        "out_channels": 3,
        "num_layers": 6,
        "attention_head_dim": 64,
        "num_attention_heads": 4,
        "inner_dim": 256,
        "enc_hidden_dim": 384,  # MiniLM-L6
        "axes_dims_rope": [8, 28, 28],
        "selected_layer_index": [1, 3, 5],
    },
    # the shape of the official golden tiny model (width 64, 4 text layers of 24): unit tests and the CPU run
    # of benchmarks/bench_gpu.py
    "tiny": {
        **LENS_CONFIG,
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 4,
        "num_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 4,
        "inner_dim": 64,
        "enc_hidden_dim": 24,
        "axes_dims_rope": [4, 6, 6],
    },
}
#: cpu-small's pixel space and text encoder, with fewer, narrower blocks.
PRESETS["cpu-tiny"] = {
    **PRESETS["cpu-small"],
    "num_layers": 4,
    "attention_head_dim": 32,
    "inner_dim": 128,
    "axes_dims_rope": [8, 12, 12],
}

_EXTRA_KEYS = ("num_text_layers", "text_encoder_layers")
#: Constructor options that are not Lens (``LensTransformer2DModel``: off unless given; chapter 4's CPU
#: recipe).
OPTION_KEYS = ("pixel_stem", "pixel_head", "pixel_skip", "pooled_text", "token_conv")


def spread_layers(num_encoder_layers: int, num_taps: int) -> list[int]:
    """0-based indices of ``num_taps`` encoder layers ending each equal slice of the depth.

    ``spread_layers(24, 4) == [5, 11, 17, 23]`` (Lens on GPT-OSS-20B), ``spread_layers(28, 4) ==
    [6, 13, 20, 27]`` (Qwen3-0.6B), ``spread_layers(6, 3) == [1, 3, 5]`` (MiniLM-L6).
    """
    if not 1 <= num_taps <= num_encoder_layers:
        raise ValueError(
            f"cannot tap {num_taps} layers of a {num_encoder_layers}-layer text encoder; "
            "need 1 <= taps <= layers"
        )
    return [(k + 1) * num_encoder_layers // num_taps - 1 for k in range(num_taps)]


def get_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Constructor config of preset ``name`` (a fresh dict), with ``overrides`` applied.

    Overrides may be any constructor key, plus:
      - ``num_text_layers`` / ``text_encoder_layers``: set ``selected_layer_index`` to
        ``spread_layers(text_encoder_layers, num_text_layers)``; ``text_encoder_layers`` defaults to
        the preset encoder's depth (max index + 1), or to ``num_text_layers`` if that is larger. The
        transformer only uses the number of taps; the indices tell the pipeline which layers to tap.
    When ``in_channels`` or ``patch_size`` is overridden and ``out_channels`` is not, ``out_channels``
    becomes in_channels / patch_size² so the output has the width of the input (a velocity per token).
    ``inner_dim`` is kept equal to heads × head dim.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    config = copy.deepcopy(PRESETS[name])
    unknown = set(overrides) - set(config) - set(_EXTRA_KEYS) - set(OPTION_KEYS)
    if unknown:
        raise ValueError(
            f"unknown config keys {sorted(unknown)}; valid keys: {sorted(config)}, "
            f"{list(_EXTRA_KEYS)} and the "
            f"non-Lens options {list(OPTION_KEYS)}"
        )
    num_text_layers = overrides.pop("num_text_layers", None)
    encoder_layers = overrides.pop("text_encoder_layers", None)
    if (num_text_layers is not None or encoder_layers is not None) and "selected_layer_index" in overrides:
        raise ValueError("give either selected_layer_index or num_text_layers/text_encoder_layers, not both")
    config.update(overrides)
    if num_text_layers is not None or encoder_layers is not None:
        taps = num_text_layers if num_text_layers is not None else len(config["selected_layer_index"])
        depth = (
            encoder_layers
            if encoder_layers is not None
            else max(max(config["selected_layer_index"]) + 1, taps)
        )
        config["selected_layer_index"] = spread_layers(int(depth), int(taps))
    if ("in_channels" in overrides or "patch_size" in overrides) and "out_channels" not in overrides:
        per_pixel, rem = divmod(config["in_channels"], config["patch_size"] ** 2)
        if rem:
            raise ValueError(
                f"in_channels={config['in_channels']} is not divisible by "
                f"patch_size²={config['patch_size'] ** 2}; "
                "pass out_channels explicitly or fix patch_size"
            )
        config["out_channels"] = per_pixel
    config["inner_dim"] = config["num_attention_heads"] * config["attention_head_dim"]
    return config


def cpu_config(
    name: str = "cpu-tiny",
    *,
    in_channels: int | None = None,
    patch_size: int | None = None,
    enc_hidden_dim: int | None = None,
    num_text_layers: int | None = None,
    text_encoder_layers: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A CPU preset sized for a given input layout and text encoder (see :func:`get_config`)."""
    if not name.startswith("cpu-"):
        raise ValueError(
            f"cpu_config is for the CPU presets ({[p for p in PRESETS if p.startswith('cpu-')]}), "
            f"got {name!r}"
        )
    for key, value in (
        ("in_channels", in_channels),
        ("patch_size", patch_size),
        ("enc_hidden_dim", enc_hidden_dim),
        ("num_text_layers", num_text_layers),
        ("text_encoder_layers", text_encoder_layers),
    ):
        if value is not None:
            overrides[key] = value
    return get_config(name, **overrides)


def build_model(name: str, device=None, dtype=None, **overrides: Any):
    """A freshly initialised model of preset ``name`` (``device="meta"`` builds it without memory)."""
    # lazy: torch + the model (diffusers) cost 2.7 s to import (python -X importtime); get_config's users
    # (lenslib.train.config, lenslib.cluster.training_compute) need neither
    import torch  # noqa: PLC0415

    from .transformer import LensTransformer2DModel  # noqa: PLC0415

    config = get_config(name, **overrides)
    if device is not None and str(device) == "meta":
        with torch.device("meta"):
            model = LensTransformer2DModel(**config)
    else:
        model = LensTransformer2DModel(**config)
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
    return model
