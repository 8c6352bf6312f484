"""Pre-computed text features and image latents for training (PixArt-α's ``extract_features``).

Lens's text encoder is a frozen 20B model and its VAE is frozen too, so running them inside every
training step would waste most of the compute. The cache stores, per image,

- the text features of each chosen caption kind: one ``[S, H]`` tensor per tapped layer, only the valid
  (mask = True) tokens, so storage grows with caption length, not with the 512-token cap;
- the VAE latent tokens ``[h·w, C]`` of the image, resized and centre-cropped to its aspect-ratio bucket.

Shards are safetensors files; their header metadata and ``cache.json`` record the identities of the
text encoder (``TextEncoder.name``), the codec (``LatentCodec.name``) and the captioners. A cache is
*refused* (:class:`CacheMismatchError`) when opened for another encoder or codec, because features from a
different model are silently wrong training data. Used by the trainer and in chapter 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from lenslib.atomic import atomic_file, write_json_atomic
from lenslib.model.text_encoders.base import fit_length

from .batch import Batch
from .buckets import LENS_BUCKETS, Bucket, nearest_bucket, resize_center_crop
from .config_diff import config_diff
from .filters import decode_image
from .order import pool_index

FORMAT = "lens-feature-cache"
FORMAT_VERSION = 1
CACHE_JSON = "cache.json"


class CacheMismatchError(ValueError):
    """The cache was built with another text encoder or codec than the one asked for."""


@dataclass
class CacheIdentity:
    text_encoder: str
    num_layers: int
    hidden_size: int
    codec: str
    token_channels: int
    kinds: tuple

    def to_dict(self):
        return {
            "text_encoder": self.text_encoder,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "codec": self.codec,
            "token_channels": self.token_channels,
            "kinds": list(self.kinds),
        }


def _image_tensor(image, bucket: Bucket):
    a = np.asarray(resize_center_crop(image.convert("RGB"), bucket), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1) / 127.5 - 1.0


def build_feature_cache(
    records: Sequence[dict],
    out: str | Path,
    text_encoder,
    codec,
    kinds=("detailed",),
    buckets: Sequence[Bucket] = LENS_BUCKETS,
    base: int | None = None,
    shard_size: int = 256,
    batch_size: int = 16,
    captioners: dict | None = None,
    progress: bool = False,
) -> dict:
    """Encode ``records`` (dicts with ``key``, ``image`` (bytes or PIL) and ``captions`` {kind: {text}}
        as :func:`lenslib.data.shards.read_output` returns them) into ``out``. Resumable: shards already on
        disk are skipped (after checking they were built the same way). Each shard is written to a temporary
        file
    and renamed, and ``cache.json``, which readers require, is written last: an interrupted build leaves
    nothing a run could read. Returns the cache's ``cache.json`` content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ident = CacheIdentity(
        text_encoder.name,
        int(text_encoder.num_layers),
        int(text_encoder.hidden_size),
        codec.name,
        int(codec.token_channels),
        tuple(kinds),
    )
    meta_path = out / CACHE_JSON
    if meta_path.is_file():
        prev = json.loads(meta_path.read_text())
        if prev["identity"] != ident.to_dict():
            raise CacheMismatchError(
                f"{out} already holds a cache for {prev['identity']}; this build uses "
                f"{ident.to_dict()}. Use another folder."
            )
    buckets = list(buckets)
    records = list(records)
    for r in records:
        missing = [k for k in kinds if k not in r["captions"]]
        if missing:
            raise ValueError(
                f"record {r['key']} has no {missing} caption (has {sorted(r['captions'])}); "
                "choose kinds that every record has"
            )
    shards = []
    n_shards = -(-len(records) // shard_size)
    for si in tqdm(range(n_shards), desc="feature cache", disable=not progress):
        name = f"features-{si:06d}.safetensors"
        part = records[si * shard_size : (si + 1) * shard_size]
        path = out / name
        if (
            path.is_file()
        ):  # written by an interrupted build of this folder: reused only if built the same way
            _check_shard(path, ident.to_dict(), [r["key"] for r in part])
            shards.append({"file": name, "n": len(part), "keys": [r["key"] for r in part]})
            continue
        tensors, index = {}, {}
        imgs = []
        for r in part:
            im = r["image"]
            im = decode_image(im).image if isinstance(im, (bytes, bytearray)) else im.convert("RGB")
            b = nearest_bucket(im.width, im.height, buckets, base)
            imgs.append((r["key"], im, b))
        for b in {b for _, _, b in imgs}:  # one codec batch per bucket (same shape)
            group = [(k, im) for k, im, bb in imgs if bb == b]
            for i in range(0, len(group), batch_size):
                chunk = group[i : i + batch_size]
                with torch.inference_mode():
                    tokens, (h, w) = codec.encode(torch.stack([_image_tensor(im, b) for _, im in chunk]))
                for (k, _), t in zip(chunk, tokens):
                    tensors[f"{k}/latent"] = t.float().contiguous().clone()
                    index[k] = {
                        "bucket": buckets.index(b),
                        "h": int(h),
                        "w": int(w),
                        "width": b.width,
                        "height": b.height,
                    }
        for kind in kinds:
            for i in range(0, len(part), batch_size):
                chunk = part[i : i + batch_size]
                with torch.inference_mode():
                    feats, mask = text_encoder.encode([r["captions"][kind]["text"] for r in chunk])
                for j, r in enumerate(chunk):
                    m = mask[j].bool()
                    for li, f in enumerate(feats):
                        tensors[f"{r['key']}/text/{kind}/{li}"] = f[j][m].float().contiguous().clone()
                    index[r["key"]][f"len_{kind}"] = int(m.sum())
                    index[r["key"]][f"caption_{kind}"] = r["captions"][kind]["text"]
        meta = {"format": FORMAT, "identity": json.dumps(ident.to_dict()), "index": json.dumps(index)}
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        shards.append({"file": name, "n": len(part), "keys": [r["key"] for r in part]})
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "identity": ident.to_dict(),
        "captioners": captioners or {},
        "buckets": [[b.width, b.height, b.base] for b in buckets],
        "n": len(records),
        "shards": shards,
    }
    write_json_atomic(meta_path, doc)
    return doc


def _check_shard(path: Path, identity: dict, keys: list[str]) -> None:
    """Refuse a shard left by an interrupted build for another encoder, codec, caption kinds or records."""
    with safe_open(str(path), "pt") as h:
        md = h.metadata()
    found = json.loads(md["identity"])
    if found != identity:
        diff = "; ".join(
            f"{k}: shard has {a!r}, this build {b!r}"
            for k, a, b in config_diff(found, identity, missing=None, nested=False)
        )
        raise CacheMismatchError(
            f"{path} was left by an interrupted build made another way ({diff}): delete the "
            "folder or build into another one."
        )
    if sorted(json.loads(md["index"])) != sorted(keys):
        raise CacheMismatchError(
            f"{path} holds other records than this build puts there (another record list or "
            "shard_size): delete the folder or build into another one."
        )


def check_identity(
    found: dict, text_encoder: str | None = None, codec: str | None = None, where: str = "cache"
) -> None:
    """Raises :class:`CacheMismatchError` if the cache's encoder/codec differ from the expected names."""
    for what, want in (("text_encoder", text_encoder), ("codec", codec)):
        if want is not None and found[what] != want:
            raise CacheMismatchError(
                f"{where} was built with {what} {found[what]!r}, but this run uses {want!r}. Features from "
                f"another model are wrong inputs: rebuild the cache with the configured {what} "
                "(build_feature_cache / `lens data cache`) or point the config at the matching cache."
            )


class FeatureCache:
    """Read side: ``FeatureCache(path, text_encoder=name, codec=name)`` refuses a mismatched cache.

    ``cache[i]`` → dict(key, latent [S_img, C], hw (h, w), bucket, kind, text ([S, H] per layer)).
    Several caption kinds can be cached per image; ``kind`` fixes one, or ``kind_weights`` (e.g.
    ``{"detailed": 0.5, "brief": 0.5}``, the paper's Mixed arm, or DALL·E 3's 95/5 synthetic/alt-text blend)
    draws one per item, deterministically in (seed, epoch, index); call :meth:`set_epoch` each epoch.
    ``bucket_ids`` feeds :class:`~lenslib.data.sampler.BucketBatchSampler`; :meth:`collate` pads text
    to ``[B, S_max, H]`` per layer with a bool mask, the :class:`TextEncoder` contract.
    """

    def __init__(
        self,
        path: str | Path,
        text_encoder: str | None = None,
        codec: str | None = None,
        kind: str | None = None,
        kind_weights: dict | None = None,
        seed: int = 0,
    ):
        self.path = Path(path)
        meta = self.path / CACHE_JSON
        if not meta.is_file():
            raise FileNotFoundError(f"{meta} not found: build the cache first (build_feature_cache)")
        self.doc = json.loads(meta.read_text())
        if self.doc.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not a lens feature cache")
        self.identity = self.doc["identity"]
        check_identity(self.identity, text_encoder, codec, where=str(self.path))
        self.kind = kind or self.identity["kinds"][0]
        if self.kind not in self.identity["kinds"]:
            raise ValueError(f"caption kind {self.kind!r} not cached; cached kinds: {self.identity['kinds']}")
        self.seed, self.epoch, self.kind_weights = seed, 0, None
        if kind_weights:
            bad = set(kind_weights) - set(self.identity["kinds"])
            if bad or any(w < 0 for w in kind_weights.values()) or sum(kind_weights.values()) <= 0:
                raise ValueError(
                    f"kind_weights {kind_weights} must be non-negative weights over the cached kinds "
                    f"{self.identity['kinds']}"
                )
            total = float(sum(kind_weights.values()))
            self.kind_weights = {k: w / total for k, w in kind_weights.items()}
        self._items, self._index = [], {}
        for s in self.doc["shards"]:
            f = self.path / s["file"]
            with safe_open(str(f), "pt") as h:
                md = h.metadata()
            ident = json.loads(md["identity"])
            check_identity(ident, text_encoder, codec, where=str(f))  # each shard checked on its own
            if ident != self.identity:
                raise CacheMismatchError(
                    f"{f} was built with {ident}, the cache with {self.identity}: "
                    "a shard from another build was mixed in; rebuild the cache"
                )
            idx = json.loads(md["index"])
            for k in s["keys"]:
                self._items.append((str(f), k))
                self._index[k] = idx[k]

    def __len__(self):
        return len(self._items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def kind_for(self, i: int) -> str:
        """The caption kind item ``i`` uses this epoch."""
        if not self.kind_weights:
            return self.kind
        kinds = sorted(self.kind_weights)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return kinds[int(rng.choice(len(kinds), p=[self.kind_weights[k] for k in kinds]))]

    @property
    def bucket_ids(self) -> list[int]:
        return [self._index[k]["bucket"] for _, k in self._items]

    def __getitem__(self, i: int) -> dict:
        f, k = self._items[i]
        info = self._index[k]
        kind = self.kind_for(i)
        with safe_open(f, "pt") as h:
            latent = h.get_tensor(f"{k}/latent")
            text = [h.get_tensor(f"{k}/text/{kind}/{li}") for li in range(self.identity["num_layers"])]
        return {
            "key": k,
            "latent": latent,
            "hw": (info["h"], info["w"]),
            "bucket": info["bucket"],
            "kind": kind,
            "text": text,
        }

    @staticmethod
    def collate(items: list[dict]):
        """Stack a same-bucket batch: latents [B, S_img, C], text per layer [B, S_max, H], mask [B, S_max]."""
        if len({it["hw"] for it in items}) != 1:
            raise ValueError("a batch mixes buckets; use BucketBatchSampler so each batch has one bucket")
        L = len(items[0]["text"])
        smax = max(it["text"][0].shape[0] for it in items)
        H = items[0]["text"][0].shape[1]
        feats = [torch.zeros(len(items), smax, H) for _ in range(L)]
        mask = torch.zeros(len(items), smax, dtype=torch.bool)
        for b, it in enumerate(items):
            n = it["text"][0].shape[0]
            mask[b, :n] = True
            for li in range(L):
                feats[li][b, :n] = it["text"][li]
        return {
            "latents": torch.stack([it["latent"] for it in items]),
            "hw": items[0]["hw"],
            "text": feats,
            "mask": mask,
            "keys": [it["key"] for it in items],
            "kinds": [it.get("kind") for it in items],
        }


class FeatureCacheSource:
    """The trainer's ``BatchSource`` over a feature cache: ``batch(indices, (h, w))`` → ``Batch``.

    The trainer asks for global sample indices at a resolution; the cache holds each image at one bucket,
    so index ``i`` at size ``(h, w)`` maps to the images cached at that bucket, ``i mod n`` through a
    permutation seeded by ``(seed, i div n, bucket)`` (:func:`~lenslib.data.order.pool_index`): a pure
    function of the index, as exact resume needs. Text features are padded or cut like the trainer's
    on-the-fly path (``max_text_tokens``, ``text_pad_multiple``).
    """

    def __init__(
        self, cache: FeatureCache, max_text_tokens: int = 64, seed: int = 0, text_pad_multiple: int = 0
    ):
        self.cache, self.max_text_tokens, self.seed = cache, int(max_text_tokens), seed
        self.text_pad_multiple = int(text_pad_multiple)
        self.by_size: dict[tuple[int, int], list[int]] = {}
        self._perms: dict = {}
        buckets = self.cache.doc["buckets"]
        for i, b in enumerate(self.cache.bucket_ids):
            w, h = buckets[b][0], buckets[b][1]
            self.by_size.setdefault((h, w), []).append(i)

    def check(self, text_encoder=None, codec=None) -> None:
        """Exact identity check against the trainer's encoder and codec instances."""
        check_identity(
            self.cache.identity,
            getattr(text_encoder, "name", None),
            getattr(codec, "name", None),
            where=str(self.cache.path),
        )

    def _items(self, indices, size):
        pool = self.by_size.get(tuple(size))
        if not pool:
            raise ValueError(
                f"the feature cache at {self.cache.path} has no images at {size[1]}x{size[0]} "
                f"(cached sizes: {sorted((w, h) for h, w in self.by_size)}); build it with the "
                "training buckets"
            )
        return [pool[pool_index(self.seed, i, len(pool), pool[0], _cache=self._perms)] for i in indices]

    def batch(self, indices, size):
        items = [self.cache[i] for i in self._items(indices, size)]
        b = FeatureCache.collate(items)
        text, mask = fit_length(b["text"], b["mask"], self.max_text_tokens, self.text_pad_multiple)
        captions = [self.cache._index[it["key"]].get(f"caption_{it['kind']}", "") for it in items]
        return Batch(
            b["latents"].float().contiguous(),
            tuple(b["hw"]),
            [f.float().contiguous() for f in text],
            mask.bool(),
            captions,
            [int(i) for i in indices],
        )


def open_source(path, data, seed: int = 0, text_encoder=None, codec=None) -> FeatureCacheSource:
    """Feature cache as the trainer's batch source (``data.source: features``, ``data.path``).

    ``data`` is the run's data section (a ``DataConfig``: codec, patch, text encoder, caption kind, text
    length), ``seed`` the run's seed. Refuses a cache whose codec differs from the configured one
    (``data.codec``/``data.patch``); pass the trainer's ``text_encoder`` and ``codec`` instances to also check
    the text encoder exactly (its identity string includes model, tapped layers and template).
    ``data.caption_kind`` picks the cached kind; ``mixed`` draws brief/detailed 50/50 when those two are
    cached (the paper's Mixed arm).
    """
    d = data
    if hasattr(d, "data"):
        raise TypeError(
            "open_source takes the run's data section and seed: "
            "open_source(path, cfg.data, cfg.run.seed, ...)"
        )
    want_codec = getattr(codec, "name", None)
    if want_codec is None and d.codec == "pixel":
        want_codec = f"pixel:p{d.patch}"
    kinds = (
        json.loads((Path(path) / CACHE_JSON).read_text())["identity"]["kinds"]
        if (Path(path) / CACHE_JSON).is_file()
        else []
    )
    kw = {"kind": d.caption_kind}
    if d.caption_kind == "mixed" and "mixed" not in kinds and {"brief", "detailed"} <= set(kinds):
        kw = {"kind_weights": {"brief": 0.5, "detailed": 0.5}, "seed": seed}
    cache = FeatureCache(path, text_encoder=getattr(text_encoder, "name", None), codec=want_codec, **kw)
    if text_encoder is None and not cache.identity["text_encoder"].startswith(
        d.text_encoder.replace("tiny-", "")
    ):
        raise CacheMismatchError(
            f"{path} was built with text encoder {cache.identity['text_encoder']!r}, but data.text_encoder "
            f"is {d.text_encoder!r}: rebuild the cache with the configured encoder (`lens data cache`)"
        )
    return FeatureCacheSource(cache, d.max_text_tokens, seed, d.text_pad_multiple)
