"""Processes, devices and model wrapping: one code path for 1 CPU process, DDP and FSDP2.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without them the trainer is a single process and
nothing here communicates. The strategy comes from ``dist.strategy``:

* ``none`` — the plain model (one process);
* ``ddp`` — ``DistributedDataParallel``: every rank holds the whole model, gradients are averaged;
* ``fsdp`` — FSDP2 (``torch.distributed.fsdp.fully_shard``): each transformer block, then the root, is
  sharded over the ranks, so 3.8B parameters + AdamW state fit (about 65 GB in fp32 would not on one GPU).
  With ``precision=bf16`` parameters are gathered in bf16 and gradients reduced in fp32.

Activation checkpointing is switched on before wrapping (diffusers' own per-block checkpointing when the
model supports it). On CPU everything runs in fp32: this CPU has no bf16 units and bf16 matmuls are >10×
slower, so ``precision=auto`` means bf16 autocast on CUDA only.

Used by the trainer; chapter 4 explains the choices.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.nn.parallel import DistributedDataParallel as DDP

__all__ = [
    "DistInfo",
    "init_distributed",
    "shutdown",
    "wrap_model",
    "autocast",
    "all_reduce_mean",
    "barrier",
    "block_modules",
]


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    strategy: str = "none"
    dtype: torch.dtype = torch.float32  # autocast dtype (float32 = no autocast)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(
    strategy: str = "auto", backend: str = "auto", timeout_s: int = 1800, precision: str = "auto"
) -> DistInfo:
    """Join the process group torchrun describes (if any) and choose device, strategy and precision."""
    world = env_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "none"
    if world > 1 and strategy == "none":
        raise ValueError(f"dist.strategy='none' with WORLD_SIZE={world}: use ddp or fsdp.")
    if world > 1 or strategy == "fsdp":
        if not dist.is_initialized():
            if world == 1:  # FSDP2 on one process still needs a (trivial) group
                os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
                os.environ.setdefault("MASTER_PORT", str(_free_port()))
            dist.init_process_group(
                backend=backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
            )
    else:
        backend = None
    if precision == "auto":
        precision = "bf16" if cuda else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return DistInfo(rank, world, local_rank, device, backend, strategy, dtype)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks (``_no_split_modules``, e.g. ``LensTransformerBlock``) — the FSDP/AC units."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in backward instead of storing them (paper: "gradient
    checkpointing")."""
    if getattr(model, "_supports_gradient_checkpointing", False) and hasattr(
        model, "enable_gradient_checkpointing"
    ):
        model.enable_gradient_checkpointing()
        return
    kinds = tuple({type(m) for m in block_modules(model)})
    if not kinds:
        raise ValueError(
            f"{type(model).__name__} declares no _no_split_modules: cannot find blocks to checkpoint."
        )
    apply_activation_checkpointing(
        model,
        checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: isinstance(m, kinds),
    )


def wrap_model(
    model: nn.Module,
    info: DistInfo,
    activation_checkpointing: bool = False,
    reshard_after_forward: bool = True,
    compile: bool = False,
) -> nn.Module:
    """Move to the device, enable AC, compile, and wrap for the strategy. Returns the module to train.

    ``compile`` uses ``nn.Module.compile`` (in place), so parameter names, checkpoints and the EMA are the
    same as without it: the whole model in one process or under DDP, block by block under FSDP2 (each
    block is its own FSDP unit, as the FSDP2 docs recommend).
    """
    model = model.to(info.device)
    if activation_checkpointing:
        enable_activation_checkpointing(model)
    if compile:
        for module in block_modules(model) if info.strategy == "fsdp" else [model]:
            module.compile()
    if info.strategy == "ddp":
        # The last block's text-stream outputs are discarded by the model (official design), so those few
        # parameters never get a gradient: DDP must be told to expect unused parameters.
        return DDP(
            model,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    if info.strategy == "fsdp":
        # lazy: torch.distributed.fsdp costs 3 s on top of torch (python -X importtime); only FSDP runs need
        # it
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # noqa: PLC0415

        mp = None
        if info.dtype != torch.float32:
            mp = MixedPrecisionPolicy(param_dtype=info.dtype, reduce_dtype=torch.float32)
        kwargs = {"reshard_after_forward": reshard_after_forward}
        if mp is not None:
            kwargs["mp_policy"] = mp
        blocks = block_modules(model)
        if not blocks:
            raise ValueError(
                f"{type(model).__name__} declares no _no_split_modules: FSDP needs per-block units."
            )
        for block in blocks:
            fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)
        return model
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP (FSDP2 shards in place, so it is the module itself)."""
    return (
        model.module
        if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module)
        else model
    )


def autocast(info: DistInfo):
    """bf16 autocast on CUDA when asked for; a no-op context in fp32."""
    if info.dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=info.device.type, dtype=info.dtype)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (returns a new tensor; identity on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
