"""The cleaning funnel: decode → filters in order → near-duplicates, with a report per step.

Each run produces a :class:`FunnelReport`: for every step the number of images in, dropped and kept,
whether the step was skipped (and why), its rule and configuration, and a few dropped examples (key,
score, and a small thumbnail so a report can be inspected on its own). Counts always add up: each
step's ``n_in`` is the previous step's ``kept``. Per-shard reports merge into one (:meth:`merge`), which is
how the distributed pipeline reports. Used in chapter 1 and by :mod:`lenslib.data.pipeline`.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from lenslib.atomic import write_json_atomic

from .dedup import DEFAULT_THRESHOLD, ImageEmbedder, dedup_keep_mask
from .filters import DecodeError, Filter, decode_image, default_filters

log = logging.getLogger(__name__)
MAX_EXAMPLES = 6


@dataclass
class Sample:
    """One image travelling through the pipeline: raw bytes, decoded image (after step 1), metadata."""

    key: str
    data: bytes
    meta: dict = field(default_factory=dict)
    image: object = None  # PIL RGB image once decoded
    scores: dict = field(default_factory=dict)


@dataclass
class StepReport:
    name: str
    rule: str = ""
    n_in: int = 0
    dropped: int = 0
    kept: int = 0
    skipped: bool = False
    skip_reason: str = ""
    config: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)  # dropped: {key, score, reason, thumb (PNG base64)}


@dataclass
class FunnelReport:
    steps: list[StepReport] = field(default_factory=list)

    @property
    def n_in(self) -> int:
        return self.steps[0].n_in if self.steps else 0

    @property
    def n_kept(self) -> int:
        return self.steps[-1].kept if self.steps else 0

    def step(self, name: str) -> StepReport:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step {name!r}; steps are {[s.name for s in self.steps]}")

    def check(self) -> None:
        """Raises if the counts do not add up (in = dropped + kept, and each step feeds the next)."""
        prev = None
        for s in self.steps:
            if s.n_in != s.dropped + s.kept:
                raise AssertionError(f"step {s.name}: {s.n_in} in != {s.dropped} dropped + {s.kept} kept")
            if s.skipped and s.dropped:
                raise AssertionError(f"skipped step {s.name} dropped {s.dropped}")
            if prev is not None and s.n_in != prev.kept:
                raise AssertionError(f"step {s.name} got {s.n_in} but {prev.name} kept {prev.kept}")
            prev = s

    def to_dict(self) -> dict:
        return {"n_in": self.n_in, "n_kept": self.n_kept, "steps": [asdict(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, d: dict) -> "FunnelReport":
        return cls([StepReport(**s) for s in d["steps"]])

    def save(self, path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "FunnelReport":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def merge(cls, reports: Sequence["FunnelReport"], max_examples: int = MAX_EXAMPLES) -> "FunnelReport":
        """Sum per-shard reports step by step (same step order required)."""
        reports = [r for r in reports if r.steps]
        if not reports:
            return cls()
        names = [s.name for s in reports[0].steps]
        out = []
        for k, name in enumerate(names):
            parts = [r.steps[k] for r in reports]
            if any(p.name != name for p in parts):
                raise ValueError("reports have different step orders; they come from different funnels")
            s = StepReport(
                name,
                parts[0].rule,
                config=parts[0].config,
                skipped=all(p.skipped for p in parts),
                skip_reason=parts[0].skip_reason,
            )
            for p in parts:
                s.n_in += p.n_in
                s.dropped += p.dropped
                s.kept += p.kept
                s.examples += p.examples[: max(0, max_examples - len(s.examples))]
            out.append(s)
        return cls(out)

    def table(self) -> str:
        lines = [f"{'step':<11}{'in':>8}{'dropped':>9}{'kept':>8}  rule"]
        for s in self.steps:
            rule = f"SKIPPED: {s.skip_reason}" if s.skipped else s.rule
            lines.append(f"{s.name:<11}{s.n_in:>8}{s.dropped:>9}{s.kept:>8}  {rule}")
        return "\n".join(lines)


def thumbnail_b64(image, side: int = 96) -> str:
    im = image.copy()
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _example(sample: Sample, score, reason: str, thumbs: bool) -> dict:
    ex = {"key": sample.key, "score": None if score is None else float(score), "reason": reason}
    if thumbs and sample.image is not None:
        ex["thumb"] = thumbnail_b64(sample.image)
    return ex


class Funnel:
    """Composable cleaning steps. ``run(samples)`` → (kept samples, report).

    Args:
        filters: per-image :class:`~lenslib.data.filters.Filter` steps in order (default: the paper's
            steps 2–8 with learned scorers unset, i.e. skipped).
        embedder: an :class:`~lenslib.data.dedup.ImageEmbedder` for step 9; ``None`` skips it (logged).
        dedup_threshold: cosine above which two images are near-duplicates (paper: 0.985).
        thumbnails: store small thumbnails of dropped examples in the report.
    """

    def __init__(
        self,
        filters: Sequence[Filter] | None = None,
        embedder: ImageEmbedder | None = None,
        dedup_threshold: float = DEFAULT_THRESHOLD,
        thumbnails: bool = True,
        max_examples: int = MAX_EXAMPLES,
        dedup: bool = True,
    ):
        self.filters = list(default_filters() if filters is None else filters)
        self.embedder, self.dedup_threshold = embedder, float(dedup_threshold)
        self.thumbnails, self.max_examples, self.dedup = thumbnails, max_examples, dedup
        self._warned: set = set()

    def _warn_skip(self, name: str, why: str) -> None:
        if name not in self._warned:  # once per funnel, not once per shard
            self._warned.add(name)
            log.warning("funnel step %r skipped: %s", name, why)

    # step 1 ---------------------------------------------------------------------------------------
    def decode(self, samples: Sequence[Sample]) -> tuple[list[Sample], StepReport]:
        rep = StepReport("corrupt", "decodes as an image", n_in=len(samples))
        kept = []
        for s in samples:
            try:
                d = decode_image(s.data)
            except DecodeError as e:
                rep.dropped += 1
                if len(rep.examples) < self.max_examples:
                    rep.examples.append(_example(s, None, str(e), False))
                continue
            s.image = d.image
            s.meta.update(width=d.width, height=d.height, mode=d.mode, format=d.format)
            kept.append(s)
        rep.kept = len(kept)
        return kept, rep

    # steps 2–8 ------------------------------------------------------------------------------------
    def apply_filter(self, f: Filter, samples: list[Sample]) -> tuple[list[Sample], StepReport]:
        rep = StepReport(f.name, f.rule, n_in=len(samples), config=f.config())
        ok, why = f.available()
        if not ok:
            self._warn_skip(f.name, why)
            rep.skipped, rep.skip_reason, rep.kept = True, why, len(samples)
            return samples, rep
        scores = f.scores([s.image for s in samples]) if samples else np.zeros(0)
        kept = []
        for s, sc in zip(samples, scores):
            s.scores[f.name] = float(sc)
            if f.keep(sc):
                kept.append(s)
            else:
                rep.dropped += 1
                if len(rep.examples) < self.max_examples:
                    rep.examples.append(_example(s, sc, f"fails {f.rule}", self.thumbnails))
        rep.kept = len(kept)
        return kept, rep

    def filter(self, samples: Sequence[Sample]) -> tuple[list[Sample], FunnelReport]:
        """Steps 1–8 (per image; safe to run shard by shard)."""
        kept, rep = self.decode(list(samples))
        report = FunnelReport([rep])
        for f in self.filters:
            kept, rep = self.apply_filter(f, kept)
            report.steps.append(rep)
        return kept, report

    # step 9 ---------------------------------------------------------------------------------------
    def embed(self, samples: Sequence[Sample]) -> np.ndarray | None:
        if self.embedder is None or not samples:
            return None if self.embedder is None else np.zeros((0, self.embedder.dim), np.float32)
        return self.embedder([s.image for s in samples])

    def dedup_step(
        self, samples: Sequence[Sample], emb: np.ndarray | None
    ) -> tuple[list[Sample], StepReport]:
        """Step 9 over *all* samples at once (dedup is global, not per shard)."""
        rep = StepReport(
            "near_dup",
            f"cosine <= {self.dedup_threshold}",
            n_in=len(samples),
            config={"threshold": self.dedup_threshold, "embedder": getattr(self.embedder, "name", None)},
        )
        if emb is None:
            why = (
                "no image embedder configured (pass an ImageEmbedder, e.g. HFImageEmbedder('<local "
                "CLIP folder>'), or the non-learned PixelEmbedder); step skipped"
            )
            self._warn_skip("near_dup", why)
            rep.skipped, rep.skip_reason, rep.kept = True, why, len(samples)
            return list(samples), rep
        keep, dup_of = dedup_keep_mask(emb, self.dedup_threshold)
        kept = []
        for i, s in enumerate(samples):
            if keep[i]:
                kept.append(s)
                continue
            rep.dropped += 1
            orig = samples[dup_of[i]]
            s.scores["near_dup_of"] = orig.key
            if len(rep.examples) < self.max_examples:
                ex = _example(
                    s, float(emb[i] @ emb[dup_of[i]]), f"near-duplicate of {orig.key}", self.thumbnails
                )
                ex["duplicate_of"] = orig.key
                kept_thumb = (
                    thumbnail_b64(orig.image) if (self.thumbnails and orig.image is not None) else None
                )
                if kept_thumb:
                    ex["duplicate_of_thumb"] = kept_thumb
                rep.examples.append(ex)
        rep.kept = len(kept)
        return kept, rep

    def run(self, samples: Sequence[Sample]) -> tuple[list[Sample], FunnelReport]:
        """All nine steps in one process."""
        kept, report = self.filter(samples)
        if self.dedup:
            kept, rep = self.dedup_step(kept, self.embed(kept))
            report.steps.append(rep)
        report.check()
        return kept, report
