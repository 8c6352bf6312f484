"""The synthetic world's oracle captioner: exact captions written from the scene spec.

In the companion's world every image comes with its scene spec, so captions at every level of detail
(``alt_text``, ``brief``, ``detailed``, ``mixed``) can be written without any model, by
:func:`lenslib.world.captions.caption`. Wrapping it as a :class:`~lenslib.recaption.base.Captioner`
lets world datasets go through the same recaptioning pipeline (and the same shards, manifest and
feature cache) as photographs captioned by a VLM or GPT-4.1. Each sample's meta must carry its spec
(``spec``: a :class:`~lenslib.world.spec.Scene`, its dict or its JSON, as world shards store it in
``<key>.spec.json``). Used in chapter 1.
"""

from __future__ import annotations

import json
import time

from lenslib.world.captions import CAPTION_KINDS, caption
from lenslib.world.spec import Scene

from .base import Captioner, CaptionError


class OracleCaptioner(Captioner):
    """``OracleCaptioner(kind)`` for ``kind`` in ``lenslib.world.captions.CAPTION_KINDS``.

    The caption seed is ``meta["seed"]`` when present (world datasets store it), else ``seed``.
    Token counts are whitespace words (there is no tokenizer); latency is the wall time of writing it.
    """

    def __init__(self, kind: str = "detailed", seed: int = 0):
        if kind not in CAPTION_KINDS:
            raise ValueError(f"unknown oracle caption kind {kind!r}; choose one of {CAPTION_KINDS}")
        self.kind, self.seed = kind, seed
        self.name = f"oracle:world:{kind}"
        self.prompt_version = "world-spec"

    @staticmethod
    def scene_of(meta: dict):
        spec = meta.get("spec", meta.get("scene"))
        if spec is None:
            raise CaptionError(
                "the oracle captioner needs each sample's scene spec (meta['spec']); "
                "it only captions images from the synthetic world"
            )
        if isinstance(spec, Scene):
            return spec
        if isinstance(spec, bytes):
            spec = spec.decode("utf-8")
        if isinstance(spec, str):
            spec = json.loads(spec)
        return Scene.from_dict(spec)

    def _caption_batch(self, images, metas):
        out = []
        for meta in metas:
            t0 = time.perf_counter()
            seed = int(meta.get("seed", self.seed))
            text = caption(self.scene_of(meta), self.kind, seed)
            out.append(self._made(text, (None, len(text.split())), time.perf_counter() - t0, seed=seed))
        return out
