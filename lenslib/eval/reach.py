"""How far an image token looks: where each block's image queries put their attention.

A sample of the shapes world is coherent only if neighbouring patches agree on the object they share,
and in Lens the only channel between patches is joint attention (there is no convolution, and RoPE is
the only position signal). This diagnostic measures, for each block, how an image query spreads its
softmax weight over the keys of a noised batch:

- ``effective_keys``: ``exp`` of the attention entropy, the number of keys it attends to "in effect"
  (equal to the number of valid keys for uniform attention, 1 for attention on a single key);
- ``self``, ``neighbours`` and ``text``: the weight on its own key, on the (up to 8) patches around it
  and on the valid text tokens;
- ``uniform_keys`` and ``uniform_neighbours``: the same two figures for uniform attention, the floor
  for comparison.

A model that has learned local structure gives its neighbours far more than the uniform share. Chapter 4
applies it to the trained run, next to the one-step denoising check (``lenslib.eval.denoise``).
"""

from __future__ import annotations

import torch

from lenslib.eval.generate import model_device
from lenslib.flow import interpolate
from lenslib.model.attention import capture_attention_probs

__all__ = ["attention_reach"]


def _neighbour_mask(h: int, w: int) -> torch.Tensor:
    """[h·w, h·w] True where two grid cells touch (8-neighbourhood, not the cell itself)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r, c = rows.reshape(-1), cols.reshape(-1)
    near = ((r[:, None] - r[None, :]).abs() <= 1) & ((c[:, None] - c[None, :]).abs() <= 1)
    return near & ~torch.eye(h * w, dtype=torch.bool)


@torch.no_grad()
def attention_reach(model, batch, t: float, seed: int = 0) -> list[dict]:
    """One row per block for ``batch`` (a :class:`lenslib.data.batch.Batch`) noised to level ``t``.

    The noise is drawn from ``seed``. Figures are means over image queries, heads and samples.
    """
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"t={t} is not a noise level; use a value in [0, 1] (0 = clean, 1 = pure noise)")
    h, w = batch.grid
    s_img = h * w
    noise = torch.randn(
        batch.tokens.shape, generator=torch.Generator().manual_seed(seed)
    )  # CPU noise: any device
    device = model_device(model)
    batch, noise = batch.to(device), noise.to(device)
    tt = torch.full((len(batch),), float(t), device=device)
    x_t = interpolate(batch.tokens, noise, tt)
    kwargs = dict(
        hidden_states=x_t,
        timestep=tt,
        encoder_hidden_states=batch.text,
        encoder_hidden_states_mask=batch.text_mask,
        img_shapes=[(1, h, w)],
    )
    near = _neighbour_mask(h, w).to(device)
    valid_keys = s_img + batch.text_mask.sum(dim=1).float()  # [B]
    uniform_neighbours = (near.sum(dim=1).float()[None, :] / valid_keys[:, None]).mean()
    was_training = model.training
    model.eval()
    rows = []
    try:
        for block in range(len(model.transformer_blocks)):
            p = capture_attention_probs(model, block, **kwargs)[
                :, :, :s_img
            ].float()  # image queries [B, H, Q, K]
            entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=-1)
            img = p[..., :s_img]
            rows.append(
                {
                    "block": block,
                    "t": float(t),
                    "effective_keys": float(entropy.exp().mean()),
                    "self": float(torch.diagonal(img, dim1=-2, dim2=-1).mean()),
                    "neighbours": float((img * near).sum(dim=-1).mean()),
                    "text": float(p[..., s_img:].sum(dim=-1).mean()),
                    "uniform_keys": float(valid_keys.mean()),
                    "uniform_neighbours": float(uniform_neighbours),
                }
            )
    finally:
        model.train(was_training)
    return rows
