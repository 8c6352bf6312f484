"""The recaptioning pipeline's three stages, each a function of one shard (or of all, for dedup).

1. :func:`filter_shard`: decode, steps 2–8 of the funnel, image embeddings of the survivors
   → ``work/filter/<shard>.json`` (+ ``.npy`` embeddings);
2. :func:`dedup_all`: faiss over all embeddings in shard order → ``work/dedup.json``;
3. :func:`caption_shard`: every captioner on the survivors → ``shards/<shard>.tar|.parquet`` and
   ``reports/<shard>.json``.

Every file is written atomically (:mod:`lenslib.atomic`), so a stage interrupted anywhere is redone, never
half-read. :mod:`lenslib.data.pipeline` runs them in one process or on Ray Data. Used in chapter 1.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lenslib.atomic import atomic_file, write_json_atomic
from lenslib.paths import sha256_file
from lenslib.recaption.base import Caption
from lenslib.recaption.registry import make_captioner

from .dedup import HFImageEmbedder, PixelEmbedder, dedup_keep_mask
from .filters import HFImageClassifierScorer, decode_image, default_filters
from .funnel import Funnel, Sample, StepReport
from .shards import ShardRef, read_shard, write_parquet, write_tar

if TYPE_CHECKING:
    from .pipeline import PipelineConfig

__all__ = ["build_funnel", "build_captioners", "filter_shard", "dedup_all", "caption_shard", "shard_done"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- building
def build_funnel(cfg: dict) -> Funnel:
    scorers = {}
    for name, default_label in (("nsfw", "nsfw"), ("aesthetic", None), ("watermark", "watermark")):
        if cfg.get(name):
            scorers[name] = HFImageClassifierScorer(cfg[name], label=cfg.get(f"{name}_label", default_label))
    emb = cfg.get("embedder")
    embedder = None
    if emb:
        embedder = (
            PixelEmbedder(int(emb.split("-")[1])) if emb.startswith("pixels-") else HFImageEmbedder(emb)
        )
    return Funnel(
        default_filters(**scorers, thresholds=cfg.get("thresholds")),
        embedder=embedder,
        dedup_threshold=cfg.get("dedup_threshold", 0.985),
        thumbnails=cfg.get("thumbnails", True),
        dedup=cfg.get("dedup", True),
    )


def build_captioners(cfg: PipelineConfig):
    return [make_captioner(s, **cfg.captioner_options) for s in cfg.captioners]


def _gid(shard: str, key: str) -> str:
    return f"{shard}/{key}"


# ------------------------------------------------------------------------------------- stage 1
def filter_shard(ref: ShardRef, out: Path, funnel: Funnel) -> dict:
    """Decode + filters + embeddings for one shard; writes work/filter/<name>.json (+ .npy)."""
    t0 = time.perf_counter()
    samples = list(read_shard(ref))
    issues = {s.key: s.meta["issues"] for s in samples if s.meta.get("issues")}
    kept, report = funnel.filter(samples)
    emb = funnel.embed(kept) if funnel.dedup else None
    d = out / "work" / "filter"
    if emb is not None:
        with atomic_file(d / f"{ref.name}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, emb.astype(np.float32))
    decoded = {s.key: {k: s.meta.get(k) for k in ("width", "height", "mode", "format")} for s in kept}
    rec = {
        "shard": ref.name,
        "kept": [s.key for s in kept],
        "scores": {s.key: s.scores for s in kept},
        "decoded": decoded,
        "embedder": getattr(funnel.embedder, "name", None) if funnel.dedup else None,
        "input_issues": issues,
        "report": report.to_dict(),
        "embeddings": emb is not None,
        "seconds": time.perf_counter() - t0,
    }
    write_json_atomic(d / f"{ref.name}.json", rec, sort_keys=True)
    return {"shard": ref.name, "n_in": report.n_in, "kept": len(kept)}


# ------------------------------------------------------------------------------------- stage 2
def dedup_all(refs: list[ShardRef], out: Path, funnel_cfg: dict) -> dict:
    """Global near-duplicate pass over every shard's embeddings, in shard order.

    Exact (a flat faiss index in one process): fine up to a few million images on one machine. At the
    paper's scale (800M × 768 floats ≈ 2.4 TB) the same decision needs a compressed, sharded index
    (faiss IVF-PQ on GPUs); the interface of this stage (embeddings in, dropped keys out) stays the same.
    """
    threshold = float(funnel_cfg.get("dedup_threshold", 0.985))
    enabled = funnel_cfg.get("dedup", True)
    keys, embs, names = [], [], set()
    for r in refs:
        rec = json.loads((out / "work" / "filter" / f"{r.name}.json").read_text())
        keys += [_gid(r.name, k) for k in rec["kept"]]
        names.add(rec.get("embedder"))
        if rec["embeddings"]:
            embs.append(np.load(out / "work" / "filter" / f"{r.name}.npy"))
    if len(names) > 1:
        raise ValueError(f"shards of {out} were embedded with different embedders {sorted(map(str, names))}")
    embedder = names.pop() if names else None
    rep = StepReport(
        "near_dup",
        f"cosine <= {threshold}",
        n_in=len(keys),
        config={"threshold": threshold, "embedder": embedder},
    )
    dropped = {}
    if not enabled or embedder is None:
        rep.skipped = True
        rep.skip_reason = (
            "near-duplicate removal disabled"
            if not enabled
            else "no image embedder configured (funnel.embedder: 'pixels-16' or a local CLIP folder); "
            "step skipped"
        )
        if enabled:
            log.warning("funnel step 'near_dup' skipped: %s", rep.skip_reason)
        rep.kept = len(keys)
    else:
        emb = np.concatenate(embs) if embs else np.zeros((0, 1), np.float32)
        keep, dup_of = dedup_keep_mask(emb, threshold)
        dropped = {keys[j]: keys[i] for j, i in sorted(dup_of.items())}
        rep.dropped, rep.kept = len(dropped), int(keep.sum())
        for j, i in sorted(dup_of.items())[:6]:
            rep.examples.append(
                {
                    "key": keys[j],
                    "score": float(emb[i] @ emb[j]),
                    "duplicate_of": keys[i],
                    "reason": f"near-duplicate of {keys[i]}",
                }
            )
    rec = {"dropped": dropped, "report": asdict(rep)}
    write_json_atomic(out / "work" / "dedup.json", rec, sort_keys=True)
    return rec


# ------------------------------------------------------------------------------------- stage 3
def caption_shard(ref: ShardRef, out: Path, cfg: PipelineConfig, captioners, dropped: set) -> dict:
    """Captions the survivors of one shard and writes its output shard and report.

    Captions found in the input (``alt_text`` and any ``<kind>.txt``) are kept with source ``input``; a
    captioner writing the same kind replaces that entry (its record names the new source)."""
    t0 = time.perf_counter()
    frec = json.loads((out / "work" / "filter" / f"{ref.name}.json").read_text())
    wanted = [k for k in frec["kept"] if _gid(ref.name, k) not in dropped]
    want = set(wanted)
    by_key: dict[str, Sample] = {}
    for s in read_shard(ref):
        if s.key in want and s.key not in by_key:
            s.image = decode_image(s.data).image  # decoded fine in stage 1
            s.scores = frec["scores"].get(s.key, {})
            s.meta.update(frec["decoded"].get(s.key, {}))
            caps = dict(s.meta.pop("captions_in", {}))
            s.meta["captions"] = caps
            by_key[s.key] = s
    missing = want - set(by_key)
    if missing:
        raise RuntimeError(
            f"shard {ref.name} changed since it was filtered ({len(missing)} samples missing); "
            "rerun with a new output folder"
        )
    samples = [by_key[k] for k in wanted]
    rep = StepReport(
        "caption",
        "every captioner succeeded",
        n_in=len(samples),
        config={"captioners": [c.identity() for c in captioners]},
    )
    failed: dict[str, str] = {}
    usage = {"input_tokens": 0, "output_tokens": 0, "captions": 0, "latency_s": 0.0}
    for cap in captioners:
        # API captioners run requests concurrently within a call: give them enough images per call
        bs = max(1, cfg.batch_size, 4 * getattr(cap, "max_concurrency", 0))
        todo = [s for s in samples if s.key not in failed]
        for i in range(0, len(todo), bs):
            batch = todo[i : i + bs]
            res = cap.caption_each([s.image for s in batch], [s.meta for s in batch])
            for s, r in zip(batch, res):
                if isinstance(r, Exception):
                    failed[s.key] = f"{cap.name}: {r}"
                    continue
                assert isinstance(r, Caption)
                s.meta["captions"][r.kind] = r.to_dict()
                usage["input_tokens"] += r.input_tokens or 0
                usage["output_tokens"] += r.output_tokens or 0
                usage["captions"] += 1
                usage["latency_s"] += r.latency_s or 0.0
    kept = [s for s in samples if s.key not in failed]
    rep.dropped, rep.kept = len(failed), len(kept)
    rep.examples = [{"key": k, "score": None, "reason": v} for k, v in list(failed.items())[:6]]
    if samples and len(failed) / len(samples) > cfg.max_caption_failure_rate:
        first = next(iter(failed.values()))
        raise RuntimeError(
            f"shard {ref.name}: {len(failed)} of {len(samples)} captions failed (more than "
            f"max_caption_failure_rate={cfg.max_caption_failure_rate}); first error: {first}. "
            "Fix the captioner and rerun: finished shards are kept."
        )
    for s in kept:
        s.image = None
    ext = "tar" if cfg.output_format == "tar" else "parquet"
    path = out / "shards" / f"{ref.name}.{ext}"
    (write_tar if ext == "tar" else write_parquet)(path, kept)
    report = {
        "shard": ref.name,
        "input": ref.path,
        "output": str(path.relative_to(out)),
        "n": len(kept),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "caption_step": asdict(rep),
        "usage": usage,
        "caption_kinds": sorted({k for s in kept for k in s.meta["captions"]}),
        "seconds": time.perf_counter() - t0,
    }
    write_json_atomic(out / "reports" / f"{ref.name}.json", report, sort_keys=True)
    return {"shard": ref.name, "n": len(kept)}


def shard_done(out: Path, name: str) -> bool:
    p = out / "reports" / f"{name}.json"
    if not p.is_file():
        return False
    rep = json.loads(p.read_text())
    q = out / rep["output"]
    return q.is_file() and q.stat().st_size == rep["bytes"]
