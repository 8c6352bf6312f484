"""3-axis complex rotary position embedding (RoPE) of Lens, exactly as the official code builds it.

Every attention head of dimension D = sum(axes_dims) is split into three groups of channel pairs: the
first ``axes_dims[0] / 2`` pairs rotate with the token's *frame* position, the next ``axes_dims[1] / 2``
with its *row* and the last ``axes_dims[2] / 2`` with its *column* (4 + 14 + 14 = 32 pairs at the
default (8, 28, 28)).

Why the grid is centred: the image rows run from -ceil(h/2) to floor(h/2)-1 (and likewise the
columns), so the centre of every image sits near position 0 whatever its resolution. A model trained
at 1024² therefore sees familiar positions in the middle of a 1440² image. Odd sizes get one more
negative position than positive.

Why text sits at max(floor(h/2), floor(w/2)) + j on *all three* axes: text tokens are placed on the
diagonal just past the largest image position, so no text position collides with an image position
and text keeps the same relative layout for every image size.

Numerics (official code: RoPE): frequencies ω = 1 / 10000^(float32(2k)/d), angle = float32(p)·ω rounded
to float32, factors = cos + i·sin in complex64. The rotation multiplies interleaved channel pairs
(2m, 2m+1) as complex numbers in float32 and casts back (not the "rotate-half" convention).

The tables are plain tensors, never registered buffers: complex buffers would lose their imaginary
part under dtype casts and would add entries to the state dict that the official checkpoint does not
have. They are cached per (grid, text length, device). The model hands its blocks the same tables in
real form, (cos, sin) pairs [S, D/2, 2] (:func:`real_rope_table`): the same float32 numbers, and
``torch.compile``/inductor, which cannot generate code for complex tensors, sees only real ones
(chapter 7).

Used in chapter 2 (the RoPE grid figure) and by :mod:`lenslib.model.attention`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

#: Positions the official model tabulates: 0…4095 and -4096…-1.
MAX_POSITION = 4096


def rope_frequencies(positions: torch.Tensor, dim: int, theta: float = 10000) -> torch.Tensor:
    """Complex64 rotation factors e^{i·p·ω_k} for integer ``positions`` [N] on one axis of size ``dim``.

    Returns [N, dim // 2]. The float32 recipe (reciprocal of theta ** (float32(2k) / dim), then one
    float32 product with the position) reproduces the official tables bit for bit.
    """
    if dim % 2:
        raise ValueError(f"every RoPE axis dimension must be even, got {dim}")
    omega = 1.0 / torch.pow(
        theta, torch.arange(0, dim, 2, device=positions.device).to(torch.float32).div(dim)
    )
    angles = torch.outer(positions.to(torch.float32), omega)
    return torch.polar(torch.ones_like(angles), angles)


def image_positions(frames: int, height: int, width: int, scale_rope: bool = True) -> torch.Tensor:
    """Integer (frame, row, column) position of every image token, row-major, as [f·h·w, 3].

    With ``scale_rope`` (the official setting) rows are y - ceil(h/2) and columns x - ceil(w/2).
    """
    f = torch.arange(frames)
    r = torch.arange(height)
    c = torch.arange(width)
    if scale_rope:
        r = r - (height - height // 2)
        c = c - (width - width // 2)
    grid = torch.stack(torch.meshgrid(f, r, c, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


def text_positions(height: int, width: int, txt_len: int, scale_rope: bool = True) -> torch.Tensor:
    """Position of every text token: max(floor(h/2), floor(w/2)) + j (used on all three axes).

    Every slot gets a position, padded or not, so padding never shifts the valid tokens.
    """
    start = max(height // 2, width // 2) if scale_rope else max(height, width)
    return torch.arange(txt_len) + start


def rope_tables(
    axes_dims: Sequence[int],
    grid: Sequence[int],
    txt_len: int,
    theta: float = 10000,
    scale_rope: bool = True,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image [f·h·w, D/2] and text [txt_len, D/2] complex64 tables for one grid (f, h, w).

    Raises ValueError when a position falls outside the range the official model tabulates
    ([-4096, 4095]); larger grids would need retraining anyway.
    """
    frames, height, width = (int(v) for v in grid)
    img_pos = image_positions(frames, height, width, scale_rope)
    txt_pos = text_positions(height, width, txt_len, scale_rope)
    lo = int(img_pos.min()) if img_pos.numel() else 0
    hi = max(int(img_pos.max()) if img_pos.numel() else 0, int(txt_pos.max()) if txt_len else 0)
    if lo < -MAX_POSITION or hi >= MAX_POSITION:
        raise ValueError(
            f"RoPE positions for grid {tuple(grid)} with {txt_len} text tokens span [{lo}, {hi}], "
            f"outside the official table range [-{MAX_POSITION}, {MAX_POSITION - 1}]; "
            "use a smaller image or a shorter prompt."
        )
    img_parts, txt_parts = [], []
    for axis, dim in enumerate(axes_dims):
        img_parts.append(rope_frequencies(img_pos[:, axis], dim, theta))
        txt_parts.append(rope_frequencies(txt_pos, dim, theta))
    img = torch.cat(img_parts, dim=1)
    txt = torch.cat(txt_parts, dim=1)
    if device is not None:
        img, txt = img.to(device), txt.to(device)
    return img, txt


def real_rope_table(freqs: torch.Tensor) -> torch.Tensor:
    """The (cos, sin) pairs [S, D/2, 2] float32 of a complex table [S, D/2]: the same bits, as its own tensor.

    A copy, not a view, so a compiled block receives a real tensor with no complex base.
    """
    if not freqs.is_complex():
        raise ValueError(f"real_rope_table expects a complex RoPE table, got dtype {freqs.dtype}")
    return torch.view_as_real(freqs).clone()


def apply_rotary_emb(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x`` [B, S, H, D] by ``freqs``: complex [S, D/2], or its real
    form [S, D/2, 2] of (cos, sin) pairs (:func:`real_rope_table`), which gives the same bits.

    Pair (2m, 2m+1) is read as x_{2m} + i·x_{2m+1}, multiplied by freqs[:, m] in float32, and written
    back (real part to 2m, imaginary to 2m+1). The result has the dtype of ``x``.

    The complex product is written out in real arithmetic, (a + ib)(c + is) = (ac - bs) + i(as + bc),
    which gives the same float32 bits as the official complex multiply on CPU and lets
    ``torch.compile``/inductor fuse it (inductor has no code generation for complex tensors).
    """
    table = (torch.view_as_real(freqs) if freqs.is_complex() else freqs).unsqueeze(1)  # [S, 1, D/2, 2]
    cos, sin = table[..., 0], table[..., 1]
    x_re, x_im = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
    out = torch.stack([x_re * cos - x_im * sin, x_re * sin + x_im * cos], dim=-1).flatten(3)
    return out.type_as(x)


class LensEmbedRope(nn.Module):
    """The model's ``pos_embed``: returns (image table, text table) for a grid and a text length.

    Holds no parameters and no buffers (nothing in the state dict). Tables are built on first use for
    each (grid, text length, device) and kept in a small LRU cache. They are created outside inference
    mode, so a table first built under ``torch.inference_mode()`` (sampling) can later be used in a
    training step.
    """

    def __init__(
        self,
        theta: float = 10000,
        axes_dim: Sequence[int] = (8, 28, 28),
        scale_rope: bool = True,
        cache_size: int = 64,
    ):
        super().__init__()
        self.theta = theta
        self.axes_dim = [int(d) for d in axes_dim]
        self.scale_rope = scale_rope
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()

    @torch.compiler.disable  # cached Python-side tables: nothing to compile, and a graph break if traced
    def forward(self, video_fhw, txt_seq_lens, device: torch.device | str | None = None, real: bool = False):
        """``video_fhw``: a (f, h, w) triple or a list whose first element is one (only it is read).
        ``txt_seq_lens``: an int or a list whose first element is the text length. ``real``: return the
        tables as (cos, sin) pairs [S, D/2, 2] float32 (:func:`real_rope_table`) instead of complex64."""
        grid = video_fhw.tolist() if isinstance(video_fhw, torch.Tensor) else video_fhw
        while (
            isinstance(grid, (list, tuple)) and len(grid) and isinstance(grid[0], (list, tuple, torch.Tensor))
        ):
            grid = grid[0]  # [(f, h, w)], [[(f, h, w)]] or a tensor: only the first grid is read
        if not isinstance(grid, (list, tuple)) or len(grid) != 3:
            raise ValueError(f"img_shapes must hold a (frames, h_tokens, w_tokens) triple, got {video_fhw!r}")
        grid = tuple(int(v) for v in grid)
        if isinstance(txt_seq_lens, (list, tuple)):
            txt_seq_lens = txt_seq_lens[0]
        txt_len = int(txt_seq_lens)
        device = torch.device(device) if device is not None else torch.device("cpu")
        key = (grid, txt_len, device, bool(real))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        with torch.inference_mode(False), torch.no_grad():
            tables = rope_tables(self.axes_dim, grid, txt_len, self.theta, self.scale_rope, device)
            if real:
                tables = tuple(real_rope_table(t) for t in tables)
        self._cache[key] = tables
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return tables

    def extra_repr(self) -> str:
        return f"theta={self.theta}, axes_dim={self.axes_dim}, scale_rope={self.scale_rope}"
