"""Every RNG of a process (torch CPU and CUDA, numpy, Python) as tensors and strings, for a pickle-free file.

A resumed run repeats the uninterrupted one bit for bit; the checkpoint carries each rank's RNG states in
``rng/rank_XXXXX.safetensors`` (Python's in the metadata). Used by :mod:`.saving` and :mod:`.loading`
(chapter 4's exact resume).
"""

from __future__ import annotations

import json
import random

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state"]


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All RNG states of this process as (tensors, string metadata) for a safetensors file."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": json.dumps(
            {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
        ),
        "python": json.dumps({"version": version, "state": list(internal), "gauss_next": gauss_next}),
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [
            tensors[k]
            for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))
        ]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    npm = json.loads(meta["numpy"])
    np.random.set_state(
        (
            npm["name"],
            tensors["numpy.keys"].numpy().astype(np.uint32),
            npm["pos"],
            npm["has_gauss"],
            npm["cached_gaussian"],
        )
    )
    py = json.loads(meta["python"])
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
