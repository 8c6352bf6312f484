"""Where the parameters of a LensTransformer2DModel live, and what its weights weigh.

At the official configuration the 48 blocks hold 99.4 % of the 4.10e9 parameters, and the adaLN
modulation linears (``img_mod``/``txt_mod``: 2 × 1536 → 9216 per block) alone hold 1.36e9: a third
of the model spends its weights turning one timestep vector into per-block shifts, scales and gates.

Works on a model built on the ``meta`` device (no memory). Used in chapter 2.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

#: group -> (name fragment, part) pairs; the first fragment found in a parameter's name decides.
_PARTS = {
    "blocks": [
        ("_mod.", "adaLN modulation"),
        ("_qkv.", "fused QKV"),
        ("to_out", "attention output"),
        ("to_add_out", "attention output"),
        ("_mlp.", "MLP"),
        ("transformer_blocks.", "norms"),
    ],
    "embeddings": [
        ("time_text_embed.", "timestep MLP"),
        ("txt_norm.", "text input (norms + txt_in)"),
        ("txt_in.", "text input (norms + txt_in)"),
        ("img_in.", "image input (img_in)"),
    ],
    "output": [("norm_out.", "final adaLN"), ("proj_out.", "proj_out")],
}
_RULES = [(key, (group, part)) for group, rules in _PARTS.items() for key, part in rules]


def classify(name: str) -> tuple[str, str]:
    """(group, part) for a parameter name such as ``transformer_blocks.3.img_mod.1.weight``."""
    for key, label in _RULES:
        if key in name:
            return label
    return ("other", name)


def parameter_breakdown(model: nn.Module) -> list[dict]:
    """Rows ``{"group", "part", "parameters"}`` summing to the model's parameter count."""
    counts: Counter = Counter()
    for name, p in model.named_parameters():
        counts[classify(name)] += p.numel()
    return [{"group": g, "part": part, "parameters": n} for (g, part), n in counts.items()]


def weight_bytes(num_parameters: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes to hold the weights alone (no activations, no optimizer state)."""
    return num_parameters * torch.empty((), dtype=dtype).element_size()
