"""Frozen text encoders behind one interface (:class:`TextEncoder`) and a name registry."""

from .base import TextEncoder, check_features
from .registry import available_text_encoders, get_text_encoder

__all__ = ["TextEncoder", "check_features", "get_text_encoder", "available_text_encoders"]
