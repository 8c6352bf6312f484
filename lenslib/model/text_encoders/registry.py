"""Name -> text encoder factory, so configs and CLIs can say ``text_encoder: minilm``.

Names:
  - ``"gpt-oss"``: the official GPT-OSS-20B encoder from a local folder
    (``path=<lens>/text_encoder``, ``tokenizer_path=<lens>/tokenizer``), layers 5/11/17/23;
  - ``"minilm"``: the pretrained sentence-transformers MiniLM-L6 (CPU stand-in, width 384);
  - ``"tiny-gpt-oss"``: a random-weight GPT-OSS with the real code path (tests, chapter 2).

Used in chapters 2 and 4, and by the feature cache / trainer configs.
"""

from __future__ import annotations

from .base import TextEncoder
from .minilm import MiniLMEncoder

__all__ = ["get_text_encoder", "available_text_encoders"]


def _gpt_oss(**kw) -> TextEncoder:
    # lazy: GPT-OSS's transformers modules cost 3.5 s to import (python -X importtime); only this backend
    # needs them
    from .gpt_oss import GptOssTextEncoder  # noqa: PLC0415

    path = kw.pop("path", None)
    if path is None:
        raise ValueError(
            "get_text_encoder('gpt-oss') needs path=<local GPT-OSS folder> (e.g. <lens>/text_encoder)."
        )
    return GptOssTextEncoder.from_pretrained(path, **kw)


def _minilm(**kw) -> TextEncoder:
    return MiniLMEncoder(**kw)


def _tiny_gpt_oss(**kw) -> TextEncoder:
    from .gpt_oss import GptOssTextEncoder  # noqa: PLC0415 - lazy, as in _gpt_oss
    from .tiny_gpt_oss import tiny_gpt_oss  # noqa: PLC0415 - lazy, as in _gpt_oss

    enc_kw = {k: kw.pop(k) for k in ("date", "max_sequence_length", "device") if k in kw}
    model, tokenizer = tiny_gpt_oss(**kw)
    return GptOssTextEncoder(model, tokenizer, **enc_kw)


_REGISTRY = {"gpt-oss": _gpt_oss, "minilm": _minilm, "tiny-gpt-oss": _tiny_gpt_oss}


def available_text_encoders() -> list[str]:
    return sorted(_REGISTRY)


def get_text_encoder(name: str, **kw) -> TextEncoder:
    """Build a text encoder by name; keyword arguments go to its constructor."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown text encoder {name!r}; choose one of {available_text_encoders()}."
        ) from None
    return factory(**kw)
