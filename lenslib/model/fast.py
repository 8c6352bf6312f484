"""The transformer's fast path: the same function as the faithful code, in less time or less memory.

Three pieces live here; the attention modes themselves live in :mod:`lenslib.model.attention` and the
switches on :class:`~lenslib.model.transformer.LensTransformer2DModel` (``set_fast_path``,
``enable_selective_checkpointing``) and :class:`~lenslib.model.pipeline.LensPipeline` (``set_fast_path``).

- **Selective activation checkpointing** (:data:`CHECKPOINT_POLICIES`, :func:`checkpoint_function`):
  full checkpointing stores only each block's inputs and recomputes the whole block in the backward
  pass (one extra forward, about a third more compute). A selective policy stores the outputs of the
  expensive operations (matrix multiplies, attention) and recomputes only the cheap, memory-bound ones
  (norms, modulation, RoPE, SiLU, gating), so the backward pass repeats almost no FLOPs while the
  many elementwise intermediates of a block are still dropped. Same gradients, up to float rounding.
- **CUDA graphs** (:class:`CUDAGraphStep`): a sampling step at a fixed shape launches the same few
  hundred kernels every step; capturing them once and replaying them removes the launch overhead.
  CUDA only: nothing is captured on a CPU.
- :func:`trim_text_padding`: drops text columns padded in every sample, which changes nothing the
  model returns (padded keys get weight 0 and text positions do not depend on the padded length).

Used in chapter 7 and by ``benchmarks/bench_gpu.py``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_leaves, tree_map, tree_structure
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

__all__ = ["CHECKPOINT_POLICIES", "CUDAGraphStep", "checkpoint_function", "saved_ops", "trim_text_padding"]

_ATTENTION_OPS = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
)
_MATMUL_OPS = ("mm", "addmm", "bmm", "baddbmm")

#: Activation checkpointing policies: what each block keeps from its forward pass for the backward.
CHECKPOINT_POLICIES = {
    "full": "only the block's inputs; the whole block is recomputed in backward",
    "attention": "the attention outputs; matmuls and elementwise work are recomputed",
    "matmuls": (
        "every matmul and attention output; only norms, modulation, RoPE and activations are recomputed"
    ),
}


def saved_ops(policy: str) -> frozenset:
    """The aten operators whose outputs ``policy`` stores (the empty set for ``"full"``)."""
    if policy not in CHECKPOINT_POLICIES:
        raise ValueError(
            f"unknown checkpointing policy {policy!r}; choose one of {sorted(CHECKPOINT_POLICIES)}"
        )
    names = {"full": (), "attention": _ATTENTION_OPS, "matmuls": _ATTENTION_OPS + _MATMUL_OPS}[policy]
    ops = {getattr(torch.ops.aten, name).default for name in names if hasattr(torch.ops.aten, name)}
    if policy != "full":
        ops.add(torch.ops.higher_order.flex_attention)  # the "flex" attention mode
    return frozenset(ops)


def checkpoint_function(policy: str = "matmuls") -> Callable:
    """``run(fn, *args)``: ``fn(*args)`` under non-reentrant ``torch.utils.checkpoint`` with ``policy``
    (a selective context deciding, op by op, what to save; ``"full"`` saves nothing but the inputs).

    A block calls it inside its forward, so ``torch.compile`` traces the checkpoint and its policy
    together with the block."""
    save = saved_ops(policy)

    def decide(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in save else CheckpointPolicy.PREFER_RECOMPUTE

    def run(fn: Callable, *args):
        kwargs: dict[str, Any] = {"use_reentrant": False}
        if save:
            kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, decide)
        return torch.utils.checkpoint.checkpoint(fn, *args, **kwargs)

    run.policy = policy
    return run


def trim_text_padding(features, mask: torch.Tensor):
    """Drop trailing text columns that are padding in every sample; returns ``(features, mask)``.

    ``features`` is one tensor [B, S, C] or a list of them; ``mask`` [B, S] (True = valid). The mask
    comes back as None when no token is left padded, so the model takes its mask-free path with no
    host synchronisation (needed for CUDA graphs). An all-padded batch keeps 0 columns: the
    unconditional branch of classifier-free guidance with the empty negative is then the model run
    with no text at all, which is exactly the same function (official code: negative prompts).
    """
    mask = mask.to(torch.bool)
    valid_cols = mask.any(dim=0).nonzero()
    keep = int(valid_cols.max()) + 1 if valid_cols.numel() else 0
    single = isinstance(features, torch.Tensor)
    feats = [features] if single else list(features)
    feats = [f[:, :keep] for f in feats]
    mask = mask[:, :keep]
    if bool(mask.all()):
        mask = None
    return (feats[0] if single else feats), mask


class CUDAGraphStep:
    """Replays one captured call of ``fn`` at fixed shapes: a sampling step with no launch overhead.

    ``static`` keyword arguments (the grid, a None mask) are captured as they are and must not change;
    ``dynamic`` keyword arguments are tensors or lists of tensors (latents, timesteps, text features),
    copied into the graph's input buffers at every call, so one capture serves every step and every
    later call with the same shapes. The returned tensor is the graph's output buffer, overwritten by
    the next replay: use it (or clone it) before calling again. ``fn`` must not synchronise with the
    host inside, so the transformer must run a mask-free forward (no padded text: see
    :func:`trim_text_padding`). Weights are read from their memory at every replay: update them in
    place (``load_state_dict``), or capture again.
    """

    def __init__(self, fn: Callable, static: dict, dynamic: dict, warmup: int = 2):
        leaves = [t for t in tree_leaves(dynamic) + tree_leaves(static) if isinstance(t, torch.Tensor)]
        if not torch.cuda.is_available() or any(t.device.type != "cuda" for t in leaves):
            raise ValueError(
                "CUDA graphs need a CUDA device and all inputs on it; sample without cuda_graphs "
                "on this machine"
            )
        self.fn, self.static = fn, static
        self.inputs = tree_map(lambda t: t.clone(), dynamic)
        self.spec = tree_structure(dynamic)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the default stream, as torch.cuda.graphs requires
            for _ in range(warmup):
                fn(**static, **self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(**static, **self.inputs)

    def __call__(self, **dynamic) -> torch.Tensor:
        if tree_structure(dynamic) != self.spec:
            raise ValueError(
                f"a captured step takes exactly the inputs it was captured with: {sorted(self.inputs)}"
            )
        for buffer, value in zip(tree_leaves(self.inputs), tree_leaves(dynamic)):
            if buffer.shape != value.shape:
                raise ValueError(
                    f"captured for shape {tuple(buffer.shape)}, got {tuple(value.shape)}; capture again"
                )
            buffer.copy_(value)
        self.graph.replay()
        return self.output
