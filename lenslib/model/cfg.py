"""Classifier-free guidance with per-token norm rescaling (official code: denoising loop).

Lens always runs CFG (even at guidance 1.0) and then rescales each token's guided
velocity to the norm of the *conditional* prediction: the guidance changes the
direction of the update, never its per-token magnitude.

Used in chapter 3 (flow matching) and by the pipeline.
"""

from __future__ import annotations

import torch

__all__ = ["norm_rescaled_cfg"]


def norm_rescaled_cfg(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """``g = u + s·(c − u)``, then ``g · ‖c‖/max(‖g‖, 1e-12)`` per token (norms over the last axis).

    Tokens whose guided norm is exactly 0 keep factor 1 (they stay 0).
    """
    comb = uncond + guidance_scale * (cond - uncond)
    cond_norm = torch.linalg.vector_norm(cond, dim=-1, keepdim=True)
    comb_norm = torch.linalg.vector_norm(comb, dim=-1, keepdim=True)
    factor = torch.where(comb_norm > 0, cond_norm / comb_norm.clamp_min(1e-12), torch.ones_like(comb_norm))
    return comb * factor
