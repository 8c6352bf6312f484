"""The run config's schema: one dataclass per section, and its typed conversion from and to plain mappings.

A training run is fully described by a :class:`TrainConfig` (as in Sana's pyrallis configs). Defaults are
those of the laptop config (cpu-tiny); the paper's values live in the shipped YAMLs (:mod:`.loading`).
:func:`from_dict` turns a mapping (YAML, overrides) into the dataclasses, rejecting an unknown key (with the
closest valid names) or a value of the wrong type with a :class:`ConfigError` naming the key; :func:`to_dict`
and :func:`to_yaml` go back (the resolved config stored in every checkpoint and run folder).

Used in chapter 4 and by ``lens train``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

__all__ = [
    "ConfigError",
    "RunConfig",
    "ModelConfig",
    "BucketConfig",
    "DataConfig",
    "FlowConfig",
    "OptimConfig",
    "EMAConfig",
    "DistConfig",
    "EvalConfig",
    "TrainConfig",
    "from_dict",
    "to_dict",
    "to_yaml",
]


class ConfigError(ValueError):
    """A run config that cannot work; the message names the key and how to fix it."""


# --------------------------------------------------------------------------------------------------
# The schema. Defaults are those of the laptop config (cpu-tiny); the paper's values live in the YAMLs.
# --------------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Bookkeeping: where the run lives, how long it is, how often it logs and saves."""

    name: str = "run"
    out_dir: str | None = None  # default: <cache>/runs/<name>
    seed: int = 0
    steps: int = 200  # optimizer steps ("iterations" in the paper)
    log_every: int = 10
    save_every: int = 100  # 0 = only at the end (and on preemption)
    keep_last: int = 3  # checkpoints kept by rotation (0 = keep all)
    resume: str = "auto"  # auto (latest if any) | never | <checkpoint folder>
    tensorboard: bool = False
    progress: str = "auto"  # auto (bar only on a terminal) | bar | log
    deterministic: bool = True  # torch.use_deterministic_algorithms on CPU; exact resume needs it


@dataclass
class ModelConfig:
    """Which transformer to build: a preset of ``lenslib.model.presets`` plus keyword overrides."""

    preset: str = "cpu-tiny"
    kwargs: dict[str, Any] = field(default_factory=dict)
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile: cpu-tiny steps 446 vs 517 ms, after a ~40 s first compile
    init_from: str | None = None  # a ``transformer/`` folder (e.g. stage 1's export) to start from


@dataclass
class BucketConfig:
    """Stage-2 mixed resolution: base areas × aspect ratios (table from ``lenslib.data.buckets``).

    Every rank draws one bucket per step and uses that bucket's per-rank batch (by base area).
    """

    bases: list[int]  # sides of the square base areas, e.g. [512, 768, 1024]
    batches: list[int]  # per-rank batch for each base, e.g. [24, 10, 6]
    ratios: list[str] = field(
        default_factory=lambda: ["1:2", "9:16", "2:3", "3:4", "1:1", "4:3", "3:2", "16:9", "2:1"]
    )
    multiple: int = 32  # sides are multiples of this


@dataclass
class DataConfig:
    """Where images and captions come from and how they become tokens and text features."""

    source: str = "world"  # world | hf | webdataset | features
    path: str | None = None  # dataset folder / shard pattern / feature cache; world: where world caches go
    image_key: str = "image"
    caption_key: str = "caption"
    image_size: int = 32  # square training resolution (stage 1); ignored when buckets are set
    buckets: BucketConfig | None = None  # stage 2: each rank draws one bucket per step
    codec: str = "pixel"  # pixel (patchified pixels, CPU chapters) | latent (FLUX.2 VAE)
    patch: int = 4  # pixel codec patch size (pixels per token side)
    vae: str | None = None  # VAE folder for the latent codec
    text_encoder: str = "minilm"  # name understood by lenslib.model.text_encoders
    text_encoder_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {path: <lens>/text_encoder}
    max_text_tokens: int = 64
    text_pad_multiple: int = (
        8  # pad each batch's text to its longest caption, rounded up to this; 0: always max_text_tokens
    )
    caption_kind: str = (
        "detailed"  # world captions: alt_text | brief | detailed | mixed (lenslib.world.captions)
    )
    vocab: str = "shapes"  # world vocabulary (lenslib.world.vocab)
    world_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {max_objects: 2, text_prob: 0.0}
    num_scenes: int | None = (
        None  # world only: a finite pool of scenes, rendered and encoded once (lenslib.data.world_cache)
    )
    num_workers: int = (
        0  # threads building the next batches during the step (lenslib.data.stream); 0: in the loop
    )


@dataclass
class FlowConfig:
    """The flow-matching objective (paper §2.1)."""

    mu_schedule: str = "constant"  # constant (stage 1) | tokens (stage 2, mu linear in token count)
    mu: float = 1.06  # location for the constant schedule
    logit_normal_scale: float = 1.0  # not in the paper; SD3/minRF value
    caption_dropout: float = 0.1  # not in the paper; probability of the empty (unconditional) caption
    prediction: str = (
        "velocity"  # what the network outputs: velocity (Lens) | x (JiT; lenslib.flow.predict_velocity)
    )


@dataclass
class OptimConfig:
    """AdamW, gradient clipping, the LR schedule (warmup, constant, optional final decay), batch
    arithmetic."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    decay_ratio: float = (
        0.0  # final share of run.steps over which the LR decays (torchtitan's WSD); 0: constant (paper)
    )
    decay_type: str = "linear"  # linear | sqrt | cosine
    min_lr_factor: float = 0.0  # LR at the last step, as a fraction of optim.lr
    grad_clip: float = 1.0  # 0 disables clipping
    global_batch: int | None = 16  # samples per optimizer step over all ranks (None with buckets)
    micro_batch: int = 16  # samples per forward pass per rank


@dataclass
class EMAConfig:
    """Exponential moving average of the weights; the EMA is what gets exported."""

    enabled: bool = True
    decay: float = 0.999
    warmup: bool = True  # decay_t = min(decay, (1 + t) / (10 + t)), so early EMA tracks the model
    every: int = 1


@dataclass
class DistConfig:
    """How the same loop runs on many processes."""

    strategy: str = "auto"  # auto (none for 1 process, ddp otherwise) | none | ddp | fsdp
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl
    timeout_s: int = 1800  # collective timeout; tests use a few seconds
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    reshard_after_forward: bool = True  # FSDP2


@dataclass
class EvalConfig:
    """Preview samples and judge scores during training."""

    every: int = 0  # steps between evaluations (0 = never)
    prompts: list[str] = field(default_factory=list)  # empty: captions of held-out world scenes
    num_images: int = 8
    num_steps: int = 20
    guidance: float = 4.0
    sample_mu: float | None = (
        None  # Euler steps shifted towards noise by lenslib.flow.time_shift (None: unshifted)
    )
    seed: int = 1234
    judge: bool = True  # score world samples with lenslib.eval's exact judge when available


@dataclass
class TrainConfig:
    """A whole training run."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def grad_accum(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each rank (1 with buckets)."""
        if self.optim.global_batch is None:
            return 1
        return self.optim.global_batch // (world_size * self.optim.micro_batch)


# --------------------------------------------------------------------------------------------------
# Typed conversion
# --------------------------------------------------------------------------------------------------


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_type_name(tp)}"
        )
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}. Write it as [a, b, ...].")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r}).")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}.")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{key}: expected an integer, got {value!r}.")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}.") from None
    if tp is float:
        # YAML 1.1 reads "3e-4" as a string; accept it here.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected a number, got {value!r}.")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}.") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}.")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3)
            hint = f" Did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown config key {prefix}{key}.{hint} Valid keys here: "
                f"{', '.join(prefix + n for n in names)}."
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], prefix + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {prefix}{f.name}.")
    return cls(**kwargs)


def to_dict(obj) -> dict:
    """Plain nested dict (tuples become lists), suitable for YAML and JSON."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
