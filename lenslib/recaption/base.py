"""The captioner interface: image(s) → caption(s) with provenance.

Every caption records which model wrote it, with which instruction version, how many tokens it used and
how long it took, so a dataset can keep several captions per image (``alt_text``, ``brief``,
``detailed``, … as Sana and Recap-DataComp do) and training can choose among them. Used in chapter 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Sequence


class CaptionError(RuntimeError):
    """A caption could not be produced; the message names the cause and the fix."""


@dataclass
class Caption:
    text: str
    kind: str  # "detailed", "brief", "alt_text", ...
    source: str  # captioner identity, e.g. "openai:gpt-4.1" or "vlm:/models/qwen"
    prompt_version: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Caption":
        return cls(**d)

    @property
    def words(self) -> int:
        return len(self.text.split())


class Captioner(ABC):
    """Subclasses set ``name`` (identity stored with every caption), ``kind`` and ``prompt_version``.

    ``caption(images, metas)`` returns one :class:`Caption` per image or raises :class:`CaptionError`.
    ``caption_each`` returns a Caption *or the exception* per image, so a pipeline can count per-sample
    failures and go on. ``metas`` carries per-image side information (alt-text, scene specs).
    """

    name: str = "captioner"
    kind: str = "detailed"
    prompt_version: str = ""

    @abstractmethod
    def _caption_batch(self, images: Sequence, metas: Sequence[dict]) -> list[Caption]: ...

    def _made(self, text: str, tokens: tuple[int | None, int | None], seconds: float, **meta) -> Caption:
        """A :class:`Caption` by this captioner: its kind, name and prompt version, ``(input, output)``
        token counts, the seconds it took and ``meta``."""
        return Caption(text, self.kind, self.name, self.prompt_version, *tokens, seconds, meta)

    def caption_each(self, images: Sequence, metas: Sequence[dict] | None = None) -> list:
        metas = list(metas) if metas is not None else [{} for _ in images]
        if len(metas) != len(images):
            raise ValueError(f"{len(images)} images but {len(metas)} metas")
        try:
            return list(self._caption_batch(images, metas))
        except Exception:
            if len(images) <= 1:
                raise
        out = []  # the batch failed: retry one by one so one bad image does not sink the rest
        for im, m in zip(images, metas):
            try:
                out.append(self._caption_batch([im], [m])[0])
            except Exception as e:  # noqa: BLE001 — returned to the caller per sample
                out.append(e if isinstance(e, CaptionError) else CaptionError(f"{type(e).__name__}: {e}"))
        return out

    def caption(self, images: Sequence, metas: Sequence[dict] | None = None) -> list[Caption]:
        out = self.caption_each(images, metas)
        for r in out:
            if isinstance(r, Exception):
                raise r
        return out

    def identity(self) -> dict:
        """What a dataset manifest records about this captioner."""
        return {"name": self.name, "kind": self.kind, "prompt_version": self.prompt_version}
