"""Sources of training examples, and the batchers that turn them into :class:`~lenslib.data.batch.Batch` es.

* :class:`WorldSource` — scenes of ``lenslib.world`` rendered on the fly at any size (infinite, exact
  captions; the CPU chapters' data);
* :class:`HFImageSource` — a Hugging Face ``datasets`` folder (``load_from_disk``) with image and caption
  columns;
* :class:`WebDatasetSource` — ``.tar`` shards (``webdataset``), the paper's format, read in order;
* a feature cache (pre-encoded latents and text features, ``lens data cache``):
  :func:`lenslib.data.feature_cache.open_source` is a batch source directly (``data.source: features``);
* a world cache (:class:`CachedWorldBatcher`): a finite world pool rendered and encoded once
  (``data.num_scenes``), the fast path for finite training sets.

Index ``i`` is a position of the endless stream that :func:`lenslib.data.order.plan` hands out; a finite
source maps it to one of its items with :func:`lenslib.data.order.pool_index` (data sets) or ``i mod N`` (a
world pool, whose scenes are already a random draw), so every source is a pure function of the index and a
resumed run sees exactly the batches of the uninterrupted one. Text features are encoded per batch with
the frozen encoder; since a batch's captions are a function of its indices, so are its features.

:func:`source_from_config` builds the configured ``(batch source, codec, text encoder)`` from a run's
``data`` section (:func:`build_source` from a whole run config). Used by the trainer, evaluation and chapter
4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from lenslib.model.text_encoders import get_text_encoder
from lenslib.model.text_encoders.base import fit_length
from lenslib.paths import cache_dir
from lenslib.world import spec
from lenslib.world.captions import caption
from lenslib.world.render import render

from .batch import Batch, BatchSource, Example, ExampleSource
from .buckets import Bucket, resize_center_crop
from .feature_cache import open_source
from .order import mix_seed, pool_index
from .world_cache import WorldCache

__all__ = [
    "CachedWorldBatcher",
    "HFImageSource",
    "TokenBatcher",
    "WebDatasetSource",
    "WorldSource",
    "build_codec",
    "build_source",
    "encode_images",
    "source_from_config",
]


class WorldSource:
    """Procedural scenes from ``lenslib.world``: example ``i`` is scene ``sample_scene(mix_seed(seed, i))``.

    Infinite and exact: every index gives a new scene whose caption describes it exactly. ``num_scenes``
    (optional) wraps indices to a fixed pool of scenes and their captions, for a finite data set: the pool
    :class:`CachedWorldBatcher` reads from a :class:`~lenslib.data.world_cache.WorldCache`.
    """

    def __init__(
        self,
        seed: int = 0,
        vocab: str = "shapes",
        caption_kind: str = "detailed",
        num_scenes: int | None = None,
        **scene_kwargs,
    ):
        self.seed, self.vocab, self.caption_kind, self.num_scenes = seed, vocab, caption_kind, num_scenes
        self.scene_kwargs = scene_kwargs

    def scene(self, index: int):
        if self.num_scenes:
            index = index % self.num_scenes
        return spec.sample_scene(mix_seed(self.seed, index), self.vocab, **self.scene_kwargs)

    def examples(self, indices: Sequence[int], size: tuple[int, int]) -> list[Example]:
        h, w = size
        out = []
        for i in indices:
            i = int(i) % self.num_scenes if self.num_scenes else int(i)  # a finite pool repeats captions too
            scene = self.scene(i)
            image = np.asarray(render(scene, w, h))
            out.append(
                Example(image, caption(scene, self.caption_kind, mix_seed(self.seed, i, 1)), {"scene": scene})
            )
        return out


def _resize_crop(image, size: tuple[int, int]) -> np.ndarray:
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    h, w = size
    return np.asarray(resize_center_crop(image.convert("RGB"), Bucket(w, h, max(w, h), (1, 1))))


class HFImageSource:
    """A ``datasets`` folder saved with ``save_to_disk``: rows ``{image_key: PIL image, caption_key: str}``.

    Indices wrap around the data set (epochs); each epoch is shuffled by ``(seed, epoch)``
    (:func:`~lenslib.data.order.pool_index`).
    """

    def __init__(self, path: str, image_key: str = "image", caption_key: str = "caption", seed: int = 0):
        # lazy: datasets costs 0.9 s (python -X importtime); only data.source=hf needs it
        from datasets import load_from_disk  # noqa: PLC0415

        self.ds = load_from_disk(path)
        for key in (image_key, caption_key):
            if key not in self.ds.column_names:
                raise ValueError(
                    f"dataset {path} has no column {key!r} (columns: {self.ds.column_names}); set "
                    "data.image_key/caption_key."
                )
        self.image_key, self.caption_key, self.seed = image_key, caption_key, seed
        self._perms: dict = {}

    def __len__(self) -> int:
        return len(self.ds)

    def _row(self, index: int) -> int:
        return pool_index(self.seed, index, len(self.ds), _cache=self._perms)

    def examples(self, indices: Sequence[int], size: tuple[int, int]) -> list[Example]:
        rows = self.ds[[self._row(i) for i in indices]]
        return [
            Example(_resize_crop(im, size), str(c))
            for im, c in zip(rows[self.image_key], rows[self.caption_key])
        ]


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
        # lazy: webdataset costs 2.5 s (python -X importtime); only data.source=webdataset needs it
        import webdataset as wds  # noqa: PLC0415

        return iter(
            wds.WebDataset(self.urls, shardshuffle=False, nodesplitter=_every_shard, empty_check=False)
            .repeat()
            .decode("pil")
            .to_tuple(self.image_key, self.caption_key)
        )

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


def _to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float in [-1, 1], the codec's input range (``x / 127.5 - 1``, in place after the
    cast)."""
    return x.float().div_(127.5).sub_(1.0)


def encode_images(codec, images: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 ``[B, H, W, 3]`` images → the codec's contiguous float tokens ``[B, S, C]`` and grid.

    The pixel codec only rearranges pixels into patches (:func:`lenslib.model.latents.patchify` then
    ``pack``: token ``(i, j)`` row-major, channel ``c·p² + r·p + s``), so here the uint8 array is rearranged
    in one copy and converted once: a quarter of the bytes to move, and the values of converting first
    (the same ``x / 127.5 - 1`` per pixel; ``tests/test_data_stream.py`` checks against ``codec.encode``).
    Any other codec (a VAE) encodes the float images.
    """
    x = torch.from_numpy(np.ascontiguousarray(images))
    if str(getattr(codec, "name", "")).startswith("pixel:"):
        b, hh, ww, _ = x.shape
        p = codec.patch
        if hh % p or ww % p:
            raise ValueError(f"images of {ww}x{hh} px do not split into {p}x{p} patches (data.patch={p}).")
        h, w = hh // p, ww // p
        tokens = x.view(b, h, p, w, p, 3).permute(0, 1, 3, 5, 2, 4).reshape(b, h * w, 3 * p * p)
        return _to_unit_range(tokens), (h, w)
    tokens, grid = codec.encode(_to_unit_range(x.permute(0, 3, 1, 2)))
    return tokens.float().contiguous(), tuple(grid)


class TokenBatcher:
    """Example source → :class:`Batch`: images through a codec, captions through the frozen text encoder.

    Text features are cut to ``max_text_tokens``; each batch is padded to its longest caption rounded up
    to ``text_pad_multiple`` (0: always to ``max_text_tokens``), see
    :func:`~lenslib.model.text_encoders.base.fit_length`.
    """

    def __init__(
        self,
        source: ExampleSource,
        codec,
        text_encoder,
        max_text_tokens: int = 64,
        text_pad_multiple: int = 0,
    ):
        self.source, self.codec, self.text_encoder = source, codec, text_encoder
        self.max_text_tokens, self.text_pad_multiple = int(max_text_tokens), int(text_pad_multiple)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, mask = fit_length(
            *self.text_encoder.encode(list(captions)), self.max_text_tokens, self.text_pad_multiple
        )
        return [f.float().contiguous() for f in feats], mask.bool()

    def batch(self, indices: Sequence[int], size: tuple[int, int]) -> Batch:
        return self.from_examples(self.source.examples(indices, size), indices)

    @torch.no_grad()
    def from_examples(self, examples: Sequence[Example], indices: Sequence[int]) -> Batch:
        """The batch of already loaded ``examples`` (source positions ``indices``), e.g. to keep their
        metadata."""
        tokens, grid = encode_images(self.codec, np.stack([e.image for e in examples]))
        text, mask = self.encode_text([e.caption for e in examples])
        return Batch(tokens, grid, text, mask, [e.caption for e in examples], [int(i) for i in indices])


class CachedWorldBatcher(TokenBatcher):
    """A :class:`TokenBatcher` over a finite world pool that reads renders and text features from a
    :class:`~lenslib.data.world_cache.WorldCache` (built once, shared by every run with the same world,
    size and encoder) instead of rendering and encoding every step.

    Index ``i >= 0`` is pool scene ``i % num_scenes``, exactly the example that
    ``WorldSource(num_scenes=...)`` renders on the fly (features rounded to float16); negative indices
    (held-out previews) and other sizes are rendered and encoded on the fly as before.
    """

    def __init__(
        self,
        source: WorldSource,
        codec,
        text_encoder,
        max_text_tokens: int,
        text_pad_multiple: int,
        size: int,
        root,
        progress: bool = True,
    ):
        super().__init__(source, codec, text_encoder, max_text_tokens, text_pad_multiple)
        if not source.num_scenes:
            raise ValueError("CachedWorldBatcher needs a finite world (num_scenes >= 1)")
        self.size = int(size)
        identity = {
            "world_seed": int(source.seed),
            "vocab": source.vocab,
            "caption_kind": source.caption_kind,
            "scene_kwargs": dict(sorted(source.scene_kwargs.items())),
            "num_scenes": int(source.num_scenes),
            "size": self.size,
            "text_encoder": text_encoder.name,
            "num_layers": int(text_encoder.num_layers),
            "hidden_size": int(text_encoder.hidden_size),
            "max_text_tokens": self.max_text_tokens,
        }

        def render_one(i: int):
            example = source.examples([i], (self.size, self.size))[0]
            return example.image, example.caption

        self.cache = WorldCache.open_or_build(
            root, identity, render_one, text_encoder.encode, progress=progress
        )
        self._steps = torch.arange(self.max_text_tokens)

    @torch.no_grad()
    def batch(self, indices: Sequence[int], size: tuple[int, int]) -> Batch:
        if tuple(size) != (self.size, self.size) or any(int(i) < 0 for i in indices):
            return super().batch(indices, size)
        pos = np.asarray(indices, dtype=np.int64) % len(self.cache)
        tokens, grid = encode_images(self.codec, self.cache.images(pos))
        feats, lengths = self.cache.text(pos)
        # only as many tokens as the batch's padded length are converted
        keep = self.max_text_tokens
        if self.text_pad_multiple > 0:
            m = self.text_pad_multiple
            keep = min(keep, max(m, -(-int(lengths.max(initial=0)) // m) * m))
        lengths = torch.from_numpy(lengths.astype(np.int64))
        mask = self._steps[None, :keep] < lengths[:, None]
        text, mask = fit_length(
            [torch.from_numpy(f[:, :keep]).float() for f in feats],
            mask,
            self.max_text_tokens,
            self.text_pad_multiple,
        )
        return Batch(
            tokens,
            grid,
            [f.contiguous() for f in text],
            mask,
            [self.cache.captions[p] for p in pos.tolist()],
            [int(i) for i in indices],
        )


def build_codec(data):
    """The codec of a run's ``data`` section: patchified pixels (``pixel``) or the FLUX.2 VAE (``latent``)."""
    if data.codec == "pixel":
        # lazy: lenslib.model.vae imports diffusers (12 s, python -X importtime); only a codec needs it
        from lenslib.model.vae import PixelCodec  # noqa: PLC0415

        return PixelCodec(data.patch)
    if not data.vae:
        raise ValueError("data.codec=latent needs data.vae=<folder of the FLUX.2 VAE> (e.g. <lens>/vae).")
    from lenslib.model.vae import Flux2Codec  # noqa: PLC0415 - lazy: as above

    return Flux2Codec.from_pretrained(data.vae)


def source_from_config(
    data, seed: int, progress: bool = True, device=None
) -> tuple[BatchSource, object, object]:
    """The ``(batch source, codec, text encoder)`` of a run's ``data`` section (a ``DataConfig``) and seed.

    A world with ``data.num_scenes`` set reads its finite pool from a world cache under ``data.path`` (default
    ``<cache>/world``), built on first use with a progress bar. On a CUDA ``device`` the text encoder runs
    there (captions encoded on the fly, or a cache built, on the accelerator instead of the host) unless
    ``data.text_encoder_kwargs`` names a device itself.
    """
    codec = build_codec(data)
    place = {"device": device} if device is not None and torch.device(device).type == "cuda" else {}
    text_encoder = get_text_encoder(data.text_encoder, **{**place, **data.text_encoder_kwargs})
    if data.source == "world" and data.num_scenes:
        world = WorldSource(
            seed, data.vocab, data.caption_kind, num_scenes=data.num_scenes, **data.world_kwargs
        )
        root = Path(data.path) if data.path else cache_dir() / "world"
        batcher = CachedWorldBatcher(
            world,
            codec,
            text_encoder,
            data.max_text_tokens,
            data.text_pad_multiple,
            data.image_size,
            root,
            progress=progress,
        )
        return batcher, codec, text_encoder
    if data.source == "world":
        examples = WorldSource(seed, data.vocab, data.caption_kind, **data.world_kwargs)
    elif data.source == "hf":
        examples = HFImageSource(data.path, data.image_key, data.caption_key, seed)
    elif data.source == "webdataset":
        examples = WebDatasetSource(data.path, caption_key=data.caption_key)
    elif data.source == "features":
        if not data.path:
            raise ValueError(
                "data.source=features needs data.path=<feature cache folder> (built by `lens data cache`)."
            )
        # exact identity: the cache must come from this encoder (model, tapped layers, template) and codec
        return open_source(data.path, data, seed, text_encoder=text_encoder, codec=codec), codec, text_encoder
    else:
        raise ValueError(f"unknown data.source {data.source!r}; choose world, hf, webdataset or features.")
    return (
        TokenBatcher(examples, codec, text_encoder, data.max_text_tokens, data.text_pad_multiple),
        codec,
        text_encoder,
    )


def build_source(
    cfg, seed: int | None = None, progress: bool = True, device=None
) -> tuple[BatchSource, object, object]:
    """The configured ``(batch source, codec, text encoder)`` of a run config
    (:class:`~lenslib.train.config.TrainConfig`): :func:`source_from_config` of its ``data`` section, seeded
    by ``run.seed`` unless ``seed`` is given. Used by the trainer, evaluation and chapters 4 and 6.
    """
    return source_from_config(cfg.data, cfg.run.seed if seed is None else seed, progress, device)
