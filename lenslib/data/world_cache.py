"""A finite pool of world scenes, rendered and text-encoded once, memory-mapped for every run that trains on
it.

A step of the CPU recipe spends most of its data time in the frozen text encoder (MiniLM: ~6.5 ms a
caption on two cores against ~2 ms to render the scene), so an infinite world stream caps training at a
few dozen samples a second whatever the DiT costs. PixArt-α and Lens pre-extract text features for the
same reason (paper §2.1 trains on cached features). A :class:`WorldCache` holds, for scenes ``0..N-1`` of
a world stream (``sample_scene(mix_seed(seed, i))``, caption seeded by ``mix_seed(seed, i, 1)``):

- ``images.npy``: uint8 ``[N, H, W, 3]`` renders at the training size;
- ``text_<layer>.npy``: float16 ``[N, T, hidden]`` per tapped layer, the encoder's features cut to ``T``
  tokens (zeros past each caption's length), and ``lengths.npy`` ``[N]``;
- ``captions.json`` and ``cache.json``: the captions and the cache's identity (world seed, vocabulary,
  caption kind, scene options, size, encoder name/layers/width, ``T``, ``N``).

A cache is built in a temporary folder and renamed into place, so an interrupted build leaves nothing a
run could read (the next build removes what a killed one left); opening a folder built for another identity
raises :class:`WorldCacheMismatch` naming every differing field. Caches live under ``<cache>/world/<hash of
the identity>``, so every arm and seed of an experiment that shares the world and the encoder shares one
cache.

Used by the trainer (``data.num_scenes``, :class:`lenslib.data.sources.CachedWorldBatcher`) and chapters 4 and
6.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .config_diff import config_diff

__all__ = ["FORMAT_VERSION", "WorldCache", "WorldCacheMismatch", "cache_key"]

FORMAT_VERSION = 1
_META = "cache.json"


class WorldCacheMismatch(ValueError):
    """A world cache opened for another world, size or text encoder than it was built for."""


def cache_key(identity: dict) -> str:
    """A short stable hash of an identity dict: the cache's folder name."""
    blob = json.dumps({**identity, "format": FORMAT_VERSION}, sort_keys=True).encode()
    return hashlib.blake2b(blob, digest_size=10).hexdigest()


def _diff(found: dict, wanted: dict) -> list[str]:
    return [
        f"{k}: cache has {a!r}, run wants {b!r}"
        for k, a, b in config_diff(found, wanted, missing=None, nested=False)
    ]


def _alive(pid: str) -> bool:
    """Whether process ``pid`` (a temp folder's suffix) still runs, so its build may still finish."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class WorldCache:
    """Read side of a built cache: ``images(idx)`` (uint8 numpy) and ``text(idx)`` (features, lengths).

    Indices are positions ``0..N-1``; arrays are memory-mapped (copy-on-write, so a view of them is a
    writable array that never touches the file), so many runs share the pages. A run of consecutive
    positions, what a step of a finite pool reads, is a view of the map: no gather, no copy.
    """

    def __init__(self, path: str | Path, identity: dict | None = None):
        self.path = Path(path)
        meta_path = self.path / _META
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not a world cache (no {_META}); build it with WorldCache.build."
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise WorldCacheMismatch(
                f"{self.path} has world-cache format {meta.get('format')}, this lenslib reads "
                f"{FORMAT_VERSION}: delete the folder and it is rebuilt."
            )
        self.identity = meta["identity"]
        if identity is not None and self.identity != identity:
            raise WorldCacheMismatch(
                f"world cache {self.path} was built for another run; differing fields: "
                + "; ".join(_diff(self.identity, identity))
                + ". Point the run at its own cache (the default folder is keyed by these fields)."
            )
        self._images = np.load(self.path / "images.npy", mmap_mode="c")
        self._text = [
            np.load(self.path / f"text_{k}.npy", mmap_mode="c") for k in range(self.identity["num_layers"])
        ]
        self._lengths = np.load(self.path / "lengths.npy")
        self.captions: list[str] = json.loads((self.path / "captions.json").read_text())

    def __len__(self) -> int:
        return int(self._images.shape[0])

    @staticmethod
    def _select(indices: Sequence[int]):
        """A slice for a run of consecutive positions (a view of the map), else the index array (one
        gather)."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
            return slice(int(idx[0]), int(idx[0]) + len(idx))
        return idx

    def images(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 ``[B, H, W, 3]``."""
        return self._images[self._select(indices)]

    def text(self, indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        """Per tapped layer float16 ``[B, T, hidden]`` and the valid lengths ``[B]``."""
        sel = self._select(indices)
        return [layer[sel] for layer in self._text], self._lengths[sel]

    @classmethod
    def open_or_build(
        cls,
        root: str | Path,
        identity: dict,
        render: Callable[[int], tuple[np.ndarray, str]],
        encode: Callable[[list[str]], tuple[list, "object"]],
        *,
        batch_size: int = 64,
        progress: bool = True,
    ) -> "WorldCache":
        """The cache of ``identity`` under ``root/<cache_key(identity)>``, built first if absent.

        ``render(i)`` gives scene ``i``'s uint8 image and caption; ``encode(captions)`` the encoder's
        ``(features, mask)`` (torch tensors, as :class:`~lenslib.model.text_encoders.base.TextEncoder`).
        """
        path = Path(root) / cache_key(identity)
        if not (path / _META).is_file():
            cls.build(path, identity, render, encode, batch_size=batch_size, progress=progress)
        return cls(path, identity)

    @staticmethod
    def build(
        path: str | Path, identity: dict, render, encode, *, batch_size: int = 64, progress: bool = True
    ) -> Path:
        """Render and encode scenes ``0..identity['num_scenes']-1`` into ``path`` (atomically: temp folder,
        rename)."""
        path = Path(path)
        n, t, layers, hidden = (
            int(identity[k]) for k in ("num_scenes", "max_text_tokens", "num_layers", "hidden_size")
        )
        size = int(identity["size"])
        if n < 1:
            raise ValueError(f"a world cache needs at least one scene, got num_scenes={n}")
        for stale in path.parent.glob(f"{path.name}.tmp*") if path.parent.is_dir() else []:
            if not _alive(stale.name.rsplit(".tmp", 1)[-1]):  # left by a build that was killed
                shutil.rmtree(stale, ignore_errors=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, size, size, 3))
            text = [
                np.lib.format.open_memmap(tmp / f"text_{k}.npy", "w+", np.float16, (n, t, hidden))
                for k in range(layers)
            ]
            lengths = np.zeros(n, np.int16)
            captions: list[str] = []
            bar = tqdm(total=n, desc="world cache", unit="scene", disable=not progress)
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                caps = []
                for i in range(start, stop):
                    images[i], caption = render(i)
                    caps.append(caption)
                feats, mask = encode(caps)
                # an encoder on the GPU: stored from the host
                feats, mask = (
                    [f.cpu() for f in feats],
                    mask.cpu(),
                )
                valid = mask.sum(dim=1).clamp(max=t).numpy()
                for k in range(layers):
                    f = feats[k][:, :t].float().numpy().astype(np.float16)
                    f[~mask[:, :t].numpy()] = 0  # padding is zeros, whatever the encoder left there
                    text[k][start:stop, : f.shape[1]] = f
                lengths[start:stop] = valid
                captions += caps
                bar.update(stop - start)
            bar.close()
            for arr in (images, *text):
                arr.flush()
            del images, text
            np.save(tmp / "lengths.npy", lengths)
            (tmp / "captions.json").write_text(json.dumps(captions))
            (tmp / _META).write_text(json.dumps({"format": FORMAT_VERSION, "identity": identity}, indent=1))
            if path.exists():  # another process finished the same cache first: keep theirs
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path
