"""Near-duplicate removal with image embeddings and faiss (paper §3.2, step 9).

Lens embeds every image with CLIP ViT-L/14 and drops one of each pair whose cosine similarity exceeds
0.985, using FAISS. Here the embedder is pluggable (:class:`ImageEmbedder`): :class:`HFImageEmbedder`
loads any CLIP/SigLIP-style ``transformers`` model from a local folder. :class:`PixelEmbedder` is a
deterministic, non-learned alternative (a downsampled, mean-centred pixel vector) for offline demos and
tests; it finds resized/re-encoded copies, not semantic duplicates, and is never a stand-in for CLIP.
Used in chapter 1 and by the pipeline's global dedup stage.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

DEFAULT_THRESHOLD = 0.985


@runtime_checkable
class ImageEmbedder(Protocol):
    """``embedder(images) -> float32 [N, dim]``, rows L2-normalised. ``name`` identifies the model."""

    name: str
    dim: int

    def __call__(self, images: Sequence) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


class PixelEmbedder:
    """Deterministic, non-learned embedding: the image resized to ``side``×``side`` RGB, mean-centred per
    image, L2-normalised. Named ``pixels-{side}`` in reports. Catches exact and resized/recompressed copies;
    it knows nothing about content, so it is not CLIP and never reported as such."""

    def __init__(self, side: int = 16):
        self.side = int(side)
        self.dim = 3 * self.side * self.side
        self.name = f"pixels-{self.side}"

    def __call__(self, images):
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        rows = []
        for im in images:
            a = np.asarray(
                im.convert("RGB").resize((self.side, self.side), Image.Resampling.BOX), dtype=np.float32
            ).ravel()
            rows.append(a - a.mean())
        return _normalise(np.stack(rows))


class HFImageEmbedder:
    """Image embeddings from a local ``transformers`` CLIP/SigLIP-style folder (``get_image_features``)."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 32):
        # lazy: torch and transformers cost 3 s (python -X importtime); only the HF embedder needs them
        import torch  # noqa: PLC0415
        from transformers import AutoImageProcessor, AutoModel  # noqa: PLC0415

        self.path, self.device, self.batch_size = str(path), device, batch_size
        self.processor = AutoImageProcessor.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(device).eval()
        if not hasattr(self.model, "get_image_features"):
            raise ValueError(
                f"{self.path} ({type(self.model).__name__}) has no get_image_features; "
                "use a CLIP/SigLIP-style model folder"
            )
        self._torch = torch
        self.dim = int(self._probe_dim())
        self.name = f"{self.model.config.model_type}:{self.path}"

    def _probe_dim(self):
        return self._embed([Image.new("RGB", (32, 32))]).shape[1]

    def _embed(self, images):
        out = []
        with self._torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                px = self.processor(images=list(images[i : i + self.batch_size]), return_tensors="pt")
                f = self.model.get_image_features(pixel_values=px["pixel_values"].to(self.device))
                if not isinstance(f, self._torch.Tensor):  # some versions return a model output
                    f = (
                        getattr(f, "pooler_output", None)
                        if getattr(f, "pooler_output", None) is not None
                        else f[0]
                    )
                out.append(f.float().cpu().numpy())
        return np.concatenate(out)

    def __call__(self, images):
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return _normalise(self._embed(images))


def near_duplicate_pairs(
    emb: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> list[tuple[int, int, float]]:
    """All pairs (i < j) with cosine > ``threshold`` (rows must be L2-normalised), via a faiss
    inner-product range search. Exact (flat index); for billions of rows swap in an IVF/HNSW index."""
    # lazy: faiss costs 0.9 s (python -X importtime); the funnel imports this module for its embedders
    import faiss  # noqa: PLC0415

    x = np.ascontiguousarray(emb, dtype=np.float32)
    if len(x) == 0:
        return []
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, sims, ids = index.range_search(x, float(threshold))
    counts = np.diff(lims).astype(np.int64)  # lims is uint64
    rows = np.repeat(np.arange(len(x), dtype=np.int64), counts)
    pairs = {}
    for i, j, d in zip(rows, ids.astype(np.int64), sims):
        if i < j and d > threshold:
            pairs[(int(i), int(j))] = float(d)
    return [(i, j, d) for (i, j), d in sorted(pairs.items())]


def dedup_keep_mask(emb: np.ndarray, threshold: float = DEFAULT_THRESHOLD):
    """Greedy in input order: keep an image unless it duplicates an earlier *kept* image.

    Returns (keep mask, {dropped index: index of the kept image it duplicates}).
    """
    n = len(emb)
    keep = np.ones(n, dtype=bool)
    dup_of: dict[int, int] = {}
    for i, j, _ in near_duplicate_pairs(emb, threshold):  # sorted by i, then j
        if keep[i] and keep[j]:
            keep[j] = False
            dup_of[j] = i
    return keep, dup_of
