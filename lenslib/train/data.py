"""Training data: sources of (image, caption) examples, and the batches of tokens + text features they give.

The trainer sees one thing, a :class:`Batch`: clean image tokens ``[B, S, C]`` on an ``h × w`` grid plus
the frozen text encoder's per-layer features and mask. How it was made is the source's business:

* :class:`WorldSource` — scenes of ``lenslib.world`` rendered on the fly at any size (infinite, exact
  captions; the CPU chapters' data);
* :class:`HFImageSource` — a Hugging Face ``datasets`` folder (``load_from_disk``) with image and caption
  columns;
* :class:`WebDatasetSource` — ``.tar`` shards (``webdataset``), the paper's format, read in order;
* a feature cache (pre-encoded latents and text features, ``lens data cache``):
  :func:`lenslib.data.feature_cache.open_source` is a :class:`BatchSource` directly, checked against the
  run's text encoder and codec instances (``data.source: features``).

Exact resume needs the data position to be part of the state. Every index here is a pure function of
``(seed, step, rank, micro-batch)``: the global sample position is ``step × global_batch + rank ×
per_rank + micro × micro_batch + j`` (stage 1), and the bucket of a rank in stage 2 is drawn from a
generator seeded by ``(seed, step, rank)``. A resumed job therefore continues with exactly the batches
the uninterrupted job would have seen, with nothing to save but the step (streaming sources also record
how many samples they consumed).

Text features are encoded per micro-batch with the frozen encoder; since a batch's captions are a
function of the step, the features (padding included) are identical in a resumed run.

Used by the trainer and chapter 4.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from lenslib.data.world_cache import WorldCache
from lenslib.model.text_encoders.base import fit_length
from lenslib.paths import cache_dir

__all__ = [
    "Batch",
    "Example",
    "BatchSource",
    "ExampleSource",
    "WorldSource",
    "HFImageSource",
    "WebDatasetSource",
    "TokenBatcher",
    "CachedWorldBatcher",
    "mix_seed",
    "build_source",
]


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (stable across processes and Python versions)."""
    h = hashlib.blake2b(np.asarray(parts, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


@dataclass
class Example:
    """One training example: an RGB image (uint8 ``[H, W, 3]`` numpy array) and its caption."""

    image: np.ndarray
    caption: str
    meta: dict = field(default_factory=dict)


@dataclass
class Batch:
    """What one forward pass consumes."""

    tokens: torch.Tensor  # [B, S, C] clean tokens (x0)
    grid: tuple[int, int]  # (h, w) token grid
    text: list[torch.Tensor]  # per tapped layer [B, T, H]
    text_mask: torch.Tensor  # [B, T] bool, True = valid
    captions: list[str]
    indices: list[int]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device) -> "Batch":
        return Batch(self.tokens.to(device), self.grid, [t.to(device) for t in self.text], self.text_mask.to(device),
                     self.captions, self.indices)


@runtime_checkable
class BatchSource(Protocol):
    """Anything that turns sample indices at a resolution into a :class:`Batch` (e.g. a feature cache)."""

    def batch(self, indices: Sequence[int], size: tuple[int, int]) -> Batch: ...


class ExampleSource(Protocol):
    """Anything that returns examples by global index at a given (height, width)."""

    def examples(self, indices: Sequence[int], size: tuple[int, int]) -> list[Example]: ...


class WorldSource:
    """Procedural scenes from ``lenslib.world``: example ``i`` is scene ``sample_scene(mix_seed(seed, i))``.

    Infinite and exact: every index gives a new scene whose caption describes it exactly. ``num_scenes``
    (optional) wraps indices to a fixed pool of scenes and their captions, for a finite data set: the pool
    :class:`CachedWorldBatcher` reads from a :class:`~lenslib.data.world_cache.WorldCache`.
    """

    def __init__(self, seed: int = 0, vocab: str = "shapes", caption_kind: str = "detailed", num_scenes: int | None = None,
                 **scene_kwargs):
        from lenslib.world import spec

        self.seed, self.vocab, self.caption_kind, self.num_scenes = seed, vocab, caption_kind, num_scenes
        self.scene_kwargs = scene_kwargs
        self._spec = spec

    def scene(self, index: int):
        if self.num_scenes:
            index = index % self.num_scenes
        return self._spec.sample_scene(mix_seed(self.seed, index), self.vocab, **self.scene_kwargs)

    def examples(self, indices: Sequence[int], size: tuple[int, int]) -> list[Example]:
        from lenslib.world.captions import caption
        from lenslib.world.render import render

        h, w = size
        out = []
        for i in indices:
            i = int(i) % self.num_scenes if self.num_scenes else int(i)  # a finite pool repeats captions too
            scene = self.scene(i)
            image = np.asarray(render(scene, w, h))
            out.append(Example(image, caption(scene, self.caption_kind, mix_seed(self.seed, i, 1)), {"scene": scene}))
        return out


def _resize_crop(image, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    from lenslib.data.buckets import Bucket, resize_center_crop

    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    h, w = size
    return np.asarray(resize_center_crop(image.convert("RGB"), Bucket(w, h, max(w, h), (1, 1))))


class HFImageSource:
    """A ``datasets`` folder saved with ``save_to_disk``: rows ``{image_key: PIL image, caption_key: str}``.

    Indices wrap around the data set (epochs); each epoch is shuffled by ``(seed, epoch)``.
    """

    def __init__(self, path: str, image_key: str = "image", caption_key: str = "caption", seed: int = 0):
        from datasets import load_from_disk

        self.ds = load_from_disk(path)
        for key in (image_key, caption_key):
            if key not in self.ds.column_names:
                raise ValueError(f"dataset {path} has no column {key!r} (columns: {self.ds.column_names}); set data.image_key/caption_key.")
        self.image_key, self.caption_key, self.seed = image_key, caption_key, seed
        self._perm: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ds)

    def _row(self, index: int) -> int:
        n = len(self.ds)
        epoch, pos = divmod(int(index), n)
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
        return int(self._perm[epoch][pos])

    def examples(self, indices: Sequence[int], size: tuple[int, int]) -> list[Example]:
        rows = self.ds[[self._row(i) for i in indices]]
        return [Example(_resize_crop(im, size), str(c)) for im, c in zip(rows[self.image_key], rows[self.caption_key])]


def _every_shard(urls):
    # Every rank reads the whole stream and keeps its own global indices (exact, order-preserving).
    return urls


class WebDatasetSource:
    """WebDataset ``.tar`` shards read in order; sample ``i`` of the stream is the ``i``-th sample.

    Indices must be requested in increasing order (the trainer does); resuming at a later index skips
    ahead by reading. Shards are read in the order given, cycling for more epochs.
    """

    def __init__(self, urls: str, image_key: str = "png;jpg;jpeg;webp", caption_key: str = "txt"):
        self.urls, self.image_key, self.caption_key = urls, image_key, caption_key
        self._it = None
        self._pos = 0

    def _open(self):
        import webdataset as wds

        return iter(wds.WebDataset(self.urls, shardshuffle=False, nodesplitter=_every_shard, empty_check=False).repeat().decode("pil").to_tuple(self.image_key, self.caption_key))

    def examples(self, indices: Sequence[int], size: tuple[int, int]) -> list[Example]:
        want = sorted(int(i) for i in indices)
        if self._it is None or (want and want[0] < self._pos):
            self._it, self._pos = self._open(), 0
        got = {}
        for i in want:
            while self._pos <= i:
                image, cap = next(self._it)
                if self._pos == i:
                    got[i] = Example(_resize_crop(image, size), str(cap))
                self._pos += 1
        return [got[int(i)] for i in indices]


class TokenBatcher:
    """Example source → :class:`Batch`: images through a codec, captions through the frozen text encoder.

    Text features are cut to ``max_text_tokens``; each batch is padded to its longest caption rounded up
    to ``text_pad_multiple`` (0: always to ``max_text_tokens``), see :func:`~lenslib.model.text_encoders.base.fit_length`.
    """

    def __init__(self, source: ExampleSource, codec, text_encoder, max_text_tokens: int = 64, text_pad_multiple: int = 0):
        self.source, self.codec, self.text_encoder = source, codec, text_encoder
        self.max_text_tokens, self.text_pad_multiple = int(max_text_tokens), int(text_pad_multiple)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, mask = fit_length(*self.text_encoder.encode(list(captions)), self.max_text_tokens, self.text_pad_multiple)
        return [f.float().contiguous() for f in feats], mask.bool()

    def batch(self, indices: Sequence[int], size: tuple[int, int]) -> Batch:
        return self.from_examples(self.source.examples(indices, size), indices)

    @torch.no_grad()
    def from_examples(self, examples: Sequence[Example], indices: Sequence[int]) -> Batch:
        """The batch of already loaded ``examples`` (source positions ``indices``), e.g. to keep their metadata."""
        images = torch.from_numpy(np.stack([e.image for e in examples])).permute(0, 3, 1, 2).float()
        images = images / 127.5 - 1.0  # uint8 -> [-1, 1], the codec's input range
        tokens, grid = self.codec.encode(images)
        text, mask = self.encode_text([e.caption for e in examples])
        return Batch(tokens.float().contiguous(), tuple(grid), text, mask, [e.caption for e in examples], [int(i) for i in indices])


class CachedWorldBatcher(TokenBatcher):
    """A :class:`TokenBatcher` over a finite world pool that reads renders and text features from a
    :class:`~lenslib.data.world_cache.WorldCache` (built once, shared by every run with the same world,
    size and encoder) instead of rendering and encoding every step.

    Index ``i >= 0`` is pool scene ``i % num_scenes``, exactly the example that
    ``WorldSource(num_scenes=...)`` renders on the fly (features rounded to float16); negative indices
    (held-out previews) and other sizes are rendered and encoded on the fly as before.
    """

    def __init__(self, source: WorldSource, codec, text_encoder, max_text_tokens: int, text_pad_multiple: int,
                 size: int, root, progress: bool = True):
        super().__init__(source, codec, text_encoder, max_text_tokens, text_pad_multiple)
        if not source.num_scenes:
            raise ValueError("CachedWorldBatcher needs a finite world (num_scenes >= 1)")
        self.size = int(size)
        identity = {"world_seed": int(source.seed), "vocab": source.vocab, "caption_kind": source.caption_kind,
                    "scene_kwargs": dict(sorted(source.scene_kwargs.items())), "num_scenes": int(source.num_scenes),
                    "size": self.size, "text_encoder": text_encoder.name, "num_layers": int(text_encoder.num_layers),
                    "hidden_size": int(text_encoder.hidden_size), "max_text_tokens": self.max_text_tokens}

        def render(i: int):
            example = source.examples([i], (self.size, self.size))[0]
            return example.image, example.caption

        self.cache = WorldCache.open_or_build(root, identity, render, text_encoder.encode, progress=progress)

    @torch.no_grad()
    def batch(self, indices: Sequence[int], size: tuple[int, int]) -> Batch:
        if tuple(size) != (self.size, self.size) or any(int(i) < 0 for i in indices):
            return super().batch(indices, size)
        pos = [int(i) % len(self.cache) for i in indices]
        images = torch.from_numpy(self.cache.images(pos)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        tokens, grid = self.codec.encode(images)
        feats, lengths = self.cache.text(pos)
        mask = torch.arange(self.max_text_tokens)[None, :] < torch.from_numpy(lengths.astype(np.int64))[:, None]
        text, mask = fit_length([torch.from_numpy(f) for f in feats], mask, self.max_text_tokens, self.text_pad_multiple)
        return Batch(tokens.float().contiguous(), tuple(grid), [f.float().contiguous() for f in text], mask,
                     [self.cache.captions[p] for p in pos], [int(i) for i in indices])


def build_source(cfg, seed: int | None = None, progress: bool = True) -> tuple[BatchSource, object, object]:
    """The configured ``(batch source, codec, text encoder)`` for a :class:`~lenslib.train.config.TrainConfig`.

    A world with ``data.num_scenes`` set reads its finite pool from a world cache under ``data.path`` (default
    ``<cache>/world``), built on first use with a progress bar.
    """
    from lenslib.model.text_encoders import get_text_encoder
    from lenslib.model.vae import Flux2Codec, PixelCodec

    d = cfg.data
    seed = cfg.run.seed if seed is None else seed
    if d.codec == "pixel":
        codec = PixelCodec(d.patch)
    else:
        if not d.vae:
            raise ValueError("data.codec=latent needs data.vae=<folder of the FLUX.2 VAE> (e.g. <lens>/vae).")
        codec = Flux2Codec.from_pretrained(d.vae)
    text_encoder = get_text_encoder(d.text_encoder, **d.text_encoder_kwargs)
    if d.source == "world" and d.num_scenes:
        world = WorldSource(seed, d.vocab, d.caption_kind, num_scenes=d.num_scenes, **d.world_kwargs)
        root = Path(d.path) if d.path else cache_dir() / "world"
        batcher = CachedWorldBatcher(world, codec, text_encoder, d.max_text_tokens, d.text_pad_multiple,
                                     d.image_size, root, progress=progress)
        return batcher, codec, text_encoder
    if d.source == "world":
        examples = WorldSource(seed, d.vocab, d.caption_kind, **d.world_kwargs)
    elif d.source == "hf":
        examples = HFImageSource(d.path, d.image_key, d.caption_key, seed)
    elif d.source == "webdataset":
        examples = WebDatasetSource(d.path, caption_key=d.caption_key)
    elif d.source == "features":
        from lenslib.data.feature_cache import open_source

        if not d.path:
            raise ValueError("data.source=features needs data.path=<feature cache folder> (built by `lens data cache`).")
        # exact identity: the cache must come from this encoder (model, tapped layers, template) and this codec
        return open_source(d.path, cfg, text_encoder=text_encoder, codec=codec), codec, text_encoder
    else:
        raise ValueError(f"unknown data.source {d.source!r}; choose world, hf, webdataset or features.")
    return TokenBatcher(examples, codec, text_encoder, d.max_text_tokens, d.text_pad_multiple), codec, text_encoder
