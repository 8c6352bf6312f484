"""Exponential moving average of the weights: the model that gets sampled and exported.

Diffusion weights are noisy from step to step; their EMA gives visibly cleaner samples (DiT, k-diffusion).
The EMA here is a dict of tensors that mirrors ``model.named_parameters()`` — including FSDP2's sharded
DTensors, so each rank keeps the EMA of its own shard and the update needs no communication. With
``warmup`` the decay starts small, ``min(decay, (1 + t) / (10 + t))``, so an EMA of a short run is not
dominated by the random initialisation. The decay depends only on the step, so resuming needs no extra
state beyond the tensors.

Used in chapter 4 and by the trainer and ``lens export``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["EMA"]


def _clean(name: str) -> str:
    # Wrappers (activation checkpointing, torch.compile, DDP) add prefixes to parameter names.
    for prefix in ("_checkpoint_wrapped_module.", "_orig_mod.", "module."):
        name = name.replace(prefix, "")
    return name


class EMA:
    """EMA of a model's parameters (fp32 copies, same sharding as the parameters)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.params = {
            _clean(n): p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad
        }

    def decay_at(self, step: int) -> float:
        """The decay used for the update after optimizer step ``step`` (1-based)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        ema, cur = [], []
        for n, p in model.named_parameters():
            n = _clean(n)
            if n in self.params:
                ema.append(self.params[n])
                cur.append(p.detach().float())
        torch._foreach_lerp_(ema, cur, 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.params)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.params) - set(state)
        if missing:
            raise KeyError(f"EMA state is missing {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        for n, t in self.params.items():
            t.copy_(state[n])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the EMA weights into ``model`` for good (a model built only to be sampled or exported)."""
        for n, p in model.named_parameters():
            n = _clean(n)
            if n in self.params:
                p.copy_(self.params[n].to(p.dtype))

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module):
        """Temporarily put the EMA weights into ``model`` (for sampling), restoring the live weights after."""
        with torch.no_grad():
            backup = {
                _clean(n): p.detach().clone() for n, p in model.named_parameters() if _clean(n) in self.params
            }
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    n = _clean(n)
                    if n in backup:
                        p.copy_(backup[n])
