"""The pipeline's folder on disk: the official layout, checked before loading, plus a lenslib extra.

:meth:`LensPipeline.from_pretrained <lenslib.model.pipeline.LensPipeline.from_pretrained>` first checks
that every component named in ``model_index.json`` has its folder and weights, so an incomplete copy of
a checkpoint fails with the missing names instead of deep inside ``diffusers``. A pipeline whose text
encoder is a generic lenslib encoder (MiniLM, the tiny GPT-OSS) stores it as a registry spec in
``lens_text_encoder.json`` instead of weights. Used in chapter 4 and by ``lens sample``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lenslib.atomic import write_json_atomic

from .text_encoders import TextEncoder, get_text_encoder

__all__ = ["TEXT_ENCODER_SPEC_FILE", "check_folder", "read_text_encoder_spec", "write_text_encoder_spec"]

TEXT_ENCODER_SPEC_FILE = "lens_text_encoder.json"


def write_text_encoder_spec(save_directory: str | os.PathLike, spec: dict) -> None:
    """Write a text encoder's registry spec (``{"name": ..., "kwargs": {...}}``) into a pipeline folder."""
    write_json_atomic(os.path.join(os.fspath(save_directory), TEXT_ENCODER_SPEC_FILE), spec, indent=2)


def read_text_encoder_spec(path: str) -> TextEncoder | None:
    """The text encoder a pipeline folder stores as a spec, or None if it stores none."""
    spec_path = os.path.join(path, TEXT_ENCODER_SPEC_FILE)
    if not os.path.isfile(spec_path):
        return None
    with open(spec_path) as f:
        spec = json.load(f)
    return get_text_encoder(spec["name"], **spec.get("kwargs", {}))


def check_folder(path: str, passed: dict[str, Any]) -> None:
    """Raise FileNotFoundError naming the component folders or weights that ``path`` lacks."""
    index = os.path.join(path, "model_index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(
            f"{path!r} has no model_index.json; it is not a pipeline folder "
            "(expected scheduler/, vae/, text_encoder/, tokenizer/, transformer/)."
        )
    with open(index) as f:
        entries = json.load(f)
    missing, no_weights = [], []
    for name, value in entries.items():
        if name.startswith("_") or name in passed or not isinstance(value, list) or value[0] is None:
            continue
        folder = os.path.join(path, name)
        if not os.path.isdir(folder) or not os.listdir(folder):
            missing.append(name)
            continue
        is_model = not any(k in str(value[1]) for k in ("Scheduler", "Tokenizer"))
        if is_model and not any(
            f.endswith((".safetensors", ".bin", ".index.json")) for f in os.listdir(folder)
        ):
            no_weights.append(name)
    if missing:
        raise FileNotFoundError(
            f"Pipeline folder {path!r} lacks component folder(s) {missing} named in model_index.json; "
            "copy them from the checkpoint or pass those components to from_pretrained."
        )
    if no_weights:
        raise FileNotFoundError(
            f"Component folder(s) {no_weights} in {path!r} have no weights file "
            "(*.safetensors / *.bin); the checkpoint copy is incomplete."
        )
