"""Config + checkpoint → model: the one place a run's transformer is built and given its weights.

Training and evaluation need the same model from the same config: the trainer builds it fresh
(:func:`build_model`), evaluation rebuilds it and loads a checkpoint into it (:func:`load_model`, with the
EMA weights by default). Both sit here, below the training loop and below :mod:`lenslib.eval`, so neither
imports the other. The architecture itself is :mod:`lenslib.model` (which knows nothing of run configs); the
checkpoint format is :mod:`lenslib.train.checkpoint` and the EMA :mod:`lenslib.train.ema`, which is why this
module lives on the training floor.

Used by the trainer, ``lenslib.eval.generate`` (``score_checkpoint``) and chapters 4 and 6.
"""

from __future__ import annotations

import torch

from lenslib.model import presets
from lenslib.model.transformer import LensTransformer2DModel

from .checkpoint import load_checkpoint
from .config import ConfigError
from .ema import EMA

__all__ = ["build_model", "load_model"]


def build_model(cfg, codec, text_encoder):
    """The transformer of ``model.preset`` (a ``TrainConfig``), its input/output sized for the codec and text
    encoder.

    From scratch it is DiT-initialised (``initialize_weights``: adaLN-Zero); ``model.init_from`` loads
    weights.
    """
    if cfg.model.init_from:
        model = LensTransformer2DModel.from_pretrained(cfg.model.init_from)
    else:
        kw = {}
        base = presets.get_config(cfg.model.preset)
        patch = cfg.data.patch if cfg.data.codec == "pixel" else 2
        if base["in_channels"] != codec.token_channels or base["patch_size"] != patch:
            kw.update(in_channels=codec.token_channels, patch_size=patch)
        if base["enc_hidden_dim"] != text_encoder.hidden_size:
            kw["enc_hidden_dim"] = text_encoder.hidden_size
        if len(base["selected_layer_index"]) != text_encoder.num_layers:
            kw["num_text_layers"] = text_encoder.num_layers
        kw.update(cfg.model.kwargs)
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank and every run
        model = LensTransformer2DModel(**presets.get_config(cfg.model.preset, **kw))
        model.initialize_weights()  # DiT's adaLN-Zero init: every block starts as the identity, trains faster
    if model.config.in_channels != codec.token_channels:
        raise ConfigError(
            f"model in_channels={model.config.in_channels} but the {cfg.data.codec} codec makes "
            f"{codec.token_channels}-channel tokens: fix model.kwargs or data.patch/data.codec."
        )
    return model


def load_model(cfg, checkpoint, codec, text_encoder, *, weights: str = "ema", device=None):
    """The model of ``cfg`` holding ``checkpoint``'s weights (``None``: the untrained model, seeded by
    ``run.seed``).

    ``weights`` is "ema" (what gets sampled and exported) or "model" (the live weights). Loading refuses a
    checkpoint without the EMA when the config has one. ``device`` (default: where it was built, the CPU)
    is where the model is returned.
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    model = build_model(cfg, codec, text_encoder)
    ema = EMA(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    if checkpoint is not None:
        load_checkpoint(checkpoint, model, ema=ema, restore_rng=False)
        if weights == "ema" and ema is not None:
            ema.copy_to(model)
    return model if device is None else model.to(device)
