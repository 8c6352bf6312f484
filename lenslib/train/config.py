"""One typed run config: dataclasses, loaded from YAML, overridden by dotted ``key=value`` arguments.

A training run is fully described by a :class:`TrainConfig` (as in Sana's pyrallis configs): the shipped
YAML files in ``lenslib/train/configs/`` name the paper's runs, and the command line changes single
values::

    lens train --config cpu-tiny optim.lr=3e-4 run.steps=200

Everything is checked before any model is built: an unknown key (with the closest valid names), a value
of the wrong type, and impossible combinations (a global batch that the world size and micro-batch do
not divide, buckets together with a fixed global batch, ...) raise :class:`ConfigError`, whose message
names the key and the fix. The resolved config is stored in every checkpoint and in the run folder.

Resuming is an identity check (:func:`check_resume`): a checkpoint continues only a run of the same model,
codec, text encoder, data and recipe. What may differ between a checkpoint and the run that resumes it is
one explicit list, :data:`RESUMABLE_KEYS` (run length, LR schedule, logging, evaluation, save cadence, how
the job is spread over processes, where files live); any other difference is refused with
:class:`ResumeMismatchError`, naming the keys and the fix.

Used in chapter 4 and by ``lens train``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from lenslib.data.buckets import training_buckets

__all__ = [
    "ConfigError",
    "ResumeMismatchError",
    "RESUMABLE_KEYS",
    "resume_differences",
    "check_resume",
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
    "CONFIG_DIR",
    "available_configs",
    "load_config",
    "apply_overrides",
    "from_dict",
    "to_dict",
    "to_yaml",
    "validate",
    "bucket_table",
    "bucket_batch",
    "check_inputs",
    "check_paths",
    "check_run_name",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


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
    """AdamW, gradient clipping, the LR schedule (warmup, constant, optional final decay), batch arithmetic."""

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

_CHOICES = {
    "run.resume": None,  # free-form (auto | never | path)
    "run.progress": ("auto", "bar", "log"),
    "data.source": ("world", "hf", "webdataset", "features"),
    "data.codec": ("pixel", "latent"),
    "flow.mu_schedule": ("constant", "tokens"),
    "flow.prediction": ("velocity", "x"),
    "optim.decay_type": ("linear", "sqrt", "cosine"),
    "dist.strategy": ("auto", "none", "ddp", "fsdp"),
    "dist.backend": ("auto", "gloo", "nccl"),
    "dist.precision": ("auto", "fp32", "bf16"),
}


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
                f"unknown config key {prefix}{key}.{hint} Valid keys here: {', '.join(prefix + n for n in names)}."
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


# --------------------------------------------------------------------------------------------------
# Files and overrides
# --------------------------------------------------------------------------------------------------


def available_configs() -> list[str]:
    """Names of the shipped configs (``lens train --config NAME``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    shipped = CONFIG_DIR / f"{Path(str(name_or_path)).stem}.yaml"
    if path.suffix in ("", ".yaml", ".yml") and shipped.exists() and not path.exists():
        return shipped
    if path.exists() and path.is_file():
        return path
    raise ConfigError(
        f"config {str(name_or_path)!r} not found: give a YAML file or one of the shipped names "
        f"({', '.join(available_configs())})."
    )


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """Read a YAML config; a top-level ``base: NAME`` inherits from another config first.

    A file that cannot be read or parsed is a :class:`ConfigError` naming the file and, for a syntax error, the
    line and column."""
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself through 'base'.")
    if not path.is_file():
        raise ConfigError(f"config {path} is not a file: give a YAML file or a shipped config name.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(
            f"config {path} is not a text file: give a YAML file or a shipped config name."
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config {path} is not valid YAML{where}: {problem}. Fix the file there (an unclosed "
            "bracket or quote, or a tab used for indentation, are the usual causes)."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {path} must be a mapping of sections (run:, model:, ...), got {type(data).__name__}."
        )
    base = data.pop("base", None)
    if base is not None:
        data = _merge(_read_yaml(_resolve_path(base), seen + (path,)), data)
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=3e-4).")
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {item!r} has an empty key.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict."""
    data = _merge({}, data)
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section.")
        node[path[-1]] = value
    return data


def load_config(
    name_or_path: str | Path | None = None, overrides: list[str] | None = None, world_size: int | None = None
) -> TrainConfig:
    """Load a shipped config by name (``"cpu-tiny"``) or a YAML path, apply overrides, validate.

    ``world_size`` (if given) also checks the batch arithmetic for that many ranks.
    """
    data = _read_yaml(_resolve_path(name_or_path)) if name_or_path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    cfg = from_dict(TrainConfig, data)
    validate(cfg, world_size)
    return cfg


# --------------------------------------------------------------------------------------------------
# Cross-field checks
# --------------------------------------------------------------------------------------------------


def bucket_table(cfg: TrainConfig) -> list:
    """The training resolutions: ``lenslib.data.buckets.Bucket`` objects (one square bucket in stage 1)."""
    return [b for b, _ in training_buckets(cfg.data)]


def bucket_batch(cfg: TrainConfig, bucket) -> int:
    """Per-rank batch for ``bucket`` (micro-batch in stage 1, the base area's batch in stage 2)."""
    if cfg.data.buckets is None:
        return cfg.optim.micro_batch
    return dict(training_buckets(cfg.data))[bucket]


def check_run_name(name: str) -> None:
    """``run.name`` names the run folder ``<cache>/runs/<run.name>``: it must be one plain folder name.

    A name with ``/``, ``..`` or a control character would put the run (its checkpoints, metrics and samples)
    outside the runs folder or break the log lines that name it. Chapter 4 names its run through the config."""
    bad = (
        not name.strip()
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    )
    if bad:
        raise ConfigError(
            f"run.name={name!r} must be a single folder name (no '/', '\\', '..' or control "
            "characters): the run folder is <cache>/runs/<run.name>. Give a plain name such as "
            "run.name=my-run, or set run.out_dir=<folder> to put the run elsewhere."
        )


def _non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """The first NaN or infinite number in a config value (nested mappings and lists included), with its key."""
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    if isinstance(value, dict):
        items = ((f"{key}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((bad for k, v in items if (bad := _non_finite(v, k)) is not None), None)


def _check_names(cfg: TrainConfig) -> None:
    """The names a config picks from a registry exist: model preset and keys, world vocabulary, caption kind and
    scene options (the text encoder's name is checked by :func:`check_inputs`, whose registry imports torch)."""
    if not cfg.model.init_from:
        from lenslib.model.presets import get_config

        try:
            get_config(cfg.model.preset, **cfg.model.kwargs)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model.preset / model.kwargs: {err}") from None
    if cfg.data.source != "world":
        return
    from lenslib.world.captions import CAPTION_KINDS
    from lenslib.world.spec import MIN_SHORT_SIDE, VOCAB_MIN_SIDE, sample_scene

    d = cfg.data
    if d.vocab not in VOCAB_MIN_SIDE:
        raise ConfigError(
            f"data.vocab={d.vocab!r} is not a world vocabulary: choose one of {', '.join(VOCAB_MIN_SIDE)}."
        )
    if d.caption_kind not in CAPTION_KINDS:
        raise ConfigError(
            f"data.caption_kind={d.caption_kind!r} is not a world caption kind: choose one of "
            f"{', '.join(CAPTION_KINDS)}."
        )
    try:
        sample_scene(
            0, d.vocab, **d.world_kwargs
        )  # one scene (no rendering): unknown keys and bad values show here
    except TypeError as err:
        import inspect

        valid = [n for n, p in inspect.signature(sample_scene).parameters.items() if p.kind is p.KEYWORD_ONLY]
        raise ConfigError(f"data.world_kwargs: {err}; valid keys: {', '.join(valid)}.") from None
    except ValueError as err:
        raise ConfigError(f"data.world_kwargs: {err}.") from None
    smallest = math.ceil(1 / MIN_SHORT_SIDE)
    step = d.patch if d.codec == "pixel" else 16
    smallest = -(-smallest // step) * step  # also a multiple of the patch (pixel) or of 16 (latent)
    short = min(min(b.height, b.width) for b in bucket_table(cfg))
    if short < smallest:
        what = (
            f"data.image_size={short}"
            if d.buckets is None
            else f"data.buckets has a bucket side of {short} px"
        )
        fix = (
            f"data.image_size >= {smallest}"
            if d.buckets is None
            else f"larger data.buckets.bases (or fewer extreme data.buckets.ratios), so every side is >= {smallest}"
        )
        raise ConfigError(
            f"{what}: the world draws its thinnest objects {MIN_SHORT_SIDE:g} of the side wide, under one pixel at "
            f"{short} px, so they vanish from the image but not from the caption. Use {fix} (the {d.vocab} judge "
            f"is exact from {VOCAB_MIN_SIDE[d.vocab]} px)."
        )


def _check_folder(key: str, value: str, what: str, marker: str | None = None) -> None:
    path = Path(value)
    if not path.exists():
        raise ConfigError(f"{key}={value}: no such folder. Give {what}.")
    if not path.is_dir():
        raise ConfigError(f"{key}={value} is a file, not a folder. Give {what}.")
    if marker is not None and not (path / marker).is_file():
        raise ConfigError(f"{key}={value} has no {marker}: it is not {what}.")


def _check_run_folder(cfg: TrainConfig) -> None:
    """The run folder is a folder, or can be created: no file in its place or on its path, writable."""
    from lenslib.paths import cache_dir

    run_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else cache_dir(create=False) / "runs" / cfg.run.name
    key = f"run.out_dir={cfg.run.out_dir}" if cfg.run.out_dir else f"the run folder {run_dir}"
    for p in (run_dir, *run_dir.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            what = "is a file" if p == run_dir else f"cannot be created: {p} is a file"
            raise ConfigError(f"{key} {what}. Set run.out_dir to a folder (existing or new).")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{key} cannot be written: {p} is not writable. Set run.out_dir to a folder you can write."
            )
        break


def check_inputs(cfg: TrainConfig) -> None:
    """The inputs a run needs must be given (the paper configs leave data paths to the user) and the text encoder
    must exist; :func:`check_paths` checks that the given paths are there. ``validate(..., for_training=True)``
    calls it (``lens train``, the trainer and ``lens submit`` before anything is created or queued)."""
    d = cfg.data
    # what must be given (the paper configs leave these to the user) ...
    if d.source != "world" and not d.path:
        raise ConfigError(
            f"data.source={d.source!r} needs data.path (a dataset folder, shard pattern or cache)."
        )
    if d.codec == "latent" and not d.vae:
        raise ConfigError("data.codec='latent' needs data.vae=<folder of the FLUX.2 VAE> (e.g. <lens>/vae).")
    from lenslib.model.text_encoders.registry import available_text_encoders

    if d.text_encoder not in available_text_encoders():
        raise ConfigError(
            f"data.text_encoder={d.text_encoder!r} is not a text encoder: choose one of "
            f"{', '.join(available_text_encoders())}."
        )
    if d.text_encoder == "gpt-oss" and "path" not in d.text_encoder_kwargs:
        raise ConfigError(
            "data.text_encoder='gpt-oss' needs data.text_encoder_kwargs.path=<lens>/text_encoder "
            "(and tokenizer_path=<lens>/tokenizer)."
        )


def check_paths(cfg: TrainConfig) -> None:
    """What a run reads must be there on this machine, and its run folder must be creatable: data, VAE, text
    encoder and tokenizer folders, ``model.init_from``, a ``run.resume`` checkpoint folder, and no file in the
    place of (or on the way to) the run folder. ``lens train``, each torchrun worker and
    :func:`~lenslib.train.trainer.train` call it before creating or loading anything (chapter 4); a job script
    prepared elsewhere (``lens submit``, chapter 7) is checked for presence only (:func:`check_inputs`), since
    its paths may exist only on the compute nodes."""
    d = cfg.data
    if d.source in ("hf", "features"):
        what = (
            "a datasets folder written by save_to_disk"
            if d.source == "hf"
            else "a feature cache folder built by `lens data cache`"
        )
        _check_folder("data.path", d.path, what)
    elif (
        d.source == "webdataset"
        and not any(c in d.path for c in "{*?[")
        and "://" not in d.path
        and not d.path.startswith("pipe:")
        and not Path(d.path).exists()
    ):
        raise ConfigError(
            f"data.path={d.path}: no such shard file or folder. Give tar shards as a file, folder, glob "
            "or {a..b} pattern."
        )
    elif d.source == "world" and d.path and Path(d.path).exists() and not Path(d.path).is_dir():
        raise ConfigError(f"data.path={d.path} is a file: for the world it is the folder world caches go to.")
    if d.codec == "latent":
        _check_folder("data.vae", d.vae, "the FLUX.2 VAE folder (e.g. <lens>/vae)")
    for name in ("path", "tokenizer_path"):
        if d.text_encoder_kwargs.get(name):
            _check_folder(
                f"data.text_encoder_kwargs.{name}",
                str(d.text_encoder_kwargs[name]),
                "the local folder of the text encoder" if name == "path" else "the local tokenizer folder",
            )
    if cfg.model.init_from:
        _check_folder(
            "model.init_from",
            cfg.model.init_from,
            "a transformer/ folder (e.g. a stage-1 export)",
            "config.json",
        )
    if cfg.run.resume not in ("auto", "never"):
        _check_folder(
            "run.resume",
            cfg.run.resume,
            "a checkpoint folder (RUN/checkpoints/step_XXXXXXX), or "
            "run.resume=auto (the run folder's newest checkpoint) or never",
            "trainer_state.json",
        )
    _check_run_folder(cfg)


def validate(cfg: TrainConfig, world_size: int | None = None, for_training: bool = False) -> TrainConfig:
    """Reject impossible combinations, naming the key(s) and the fix. Returns ``cfg``.

    Checked: every number is finite and in range, every name exists (preset, model keys, vocabulary, caption kind,
    scene options), ``run.name`` is one folder name, and the batch and image arithmetic works. ``for_training``
    also requires the inputs a run reads to be given and its text encoder to exist (:func:`check_inputs`; that the
    paths are there is :func:`check_paths`'s). Used by chapter 4's configs, ``lens train`` and ``lens submit``.
    """
    d = to_dict(cfg)
    for section, values in d.items():
        bad = _non_finite(values, section)
        if bad is not None:
            raise ConfigError(
                f"{bad[0]}={bad[1]} is not a finite number: give a real value (the shipped configs "
                "show typical ones, lens train --print-config the current one)."
            )
    for key, choices in _CHOICES.items():
        if choices is None:
            continue
        section, name = key.split(".")
        value = d[section][name]
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}.")

    def positive(key, value, allow_zero=False):
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")

    check_run_name(cfg.run.name)
    positive("run.steps", cfg.run.steps)
    positive("run.log_every", cfg.run.log_every)
    positive("run.save_every", cfg.run.save_every, allow_zero=True)
    positive("run.keep_last", cfg.run.keep_last, allow_zero=True)
    positive("optim.lr", cfg.optim.lr)
    positive("optim.micro_batch", cfg.optim.micro_batch)
    positive("optim.warmup_steps", cfg.optim.warmup_steps, allow_zero=True)
    positive("optim.grad_clip", cfg.optim.grad_clip, allow_zero=True)
    if not (0.0 <= cfg.optim.decay_ratio <= 1.0 and 0.0 <= cfg.optim.min_lr_factor <= 1.0):
        raise ConfigError(
            f"optim.decay_ratio and optim.min_lr_factor are fractions in [0, 1], got "
            f"{cfg.optim.decay_ratio} and {cfg.optim.min_lr_factor}."
        )
    positive("optim.weight_decay", cfg.optim.weight_decay, allow_zero=True)
    positive("flow.logit_normal_scale", cfg.flow.logit_normal_scale)
    positive("eval.every", cfg.eval.every, allow_zero=True)
    positive("data.num_workers", cfg.data.num_workers, allow_zero=True)
    positive("data.text_pad_multiple", cfg.data.text_pad_multiple, allow_zero=True)
    positive("data.max_text_tokens", cfg.data.max_text_tokens)
    positive("data.patch", cfg.data.patch)
    positive("optim.eps", cfg.optim.eps)
    positive("eval.num_images", cfg.eval.num_images)
    positive("eval.num_steps", cfg.eval.num_steps)
    if cfg.data.num_scenes is not None:
        positive("data.num_scenes", cfg.data.num_scenes)
        if (
            cfg.data.source != "world"
            or cfg.data.buckets is not None
            or "num_scenes" in cfg.data.world_kwargs
        ):
            raise ConfigError(
                "data.num_scenes (a cached finite world pool) needs data.source=world at one image size "
                "(no data.buckets) and no data.world_kwargs.num_scenes: remove one of them."
            )
    positive("dist.timeout_s", cfg.dist.timeout_s)
    for i, b in enumerate(cfg.optim.betas):
        if not 0.0 <= b < 1.0:
            raise ConfigError(f"optim.betas[{i}]={b} must be in [0, 1).")
    if not 0.0 <= cfg.flow.caption_dropout < 1.0:
        raise ConfigError(f"flow.caption_dropout={cfg.flow.caption_dropout} must be in [0, 1).")
    if not 0.0 < cfg.ema.decay < 1.0:
        raise ConfigError(f"ema.decay={cfg.ema.decay} must be in (0, 1).")
    if cfg.ema.every < 1:
        raise ConfigError(f"ema.every={cfg.ema.every} must be >= 1.")

    if cfg.data.buckets is not None:
        if cfg.optim.global_batch is not None:
            raise ConfigError(
                "data.buckets and optim.global_batch are both set: with buckets every rank uses its "
                "bucket's batch, so the global batch varies per step. Set optim.global_batch=null."
            )
        bk = cfg.data.buckets
        if not bk.bases or len(bk.bases) != len(bk.batches):
            raise ConfigError(
                f"data.buckets.bases ({bk.bases}) and data.buckets.batches ({bk.batches}) must be non-empty and "
                "of equal length: one per-rank batch per base area."
            )
        if min(bk.bases) < 1 or min(bk.batches) < 1 or bk.multiple < 1:
            raise ConfigError("data.buckets.bases, .batches and .multiple must be positive.")
        for r in bk.ratios:
            parts = str(r).split(":")
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ConfigError(f"data.buckets.ratios entry {r!r} must look like 'W:H', e.g. '16:9'.")
    else:
        if cfg.optim.global_batch is None:
            raise ConfigError("optim.global_batch is null but data.buckets is not set: give a global batch.")
        positive("optim.global_batch", cfg.optim.global_batch)
        positive("data.image_size", cfg.data.image_size)
        if cfg.optim.global_batch % cfg.optim.micro_batch:
            raise ConfigError(
                f"optim.global_batch={cfg.optim.global_batch} is not divisible by optim.micro_batch="
                f"{cfg.optim.micro_batch}. Choose a micro-batch that divides the global batch."
            )
        if world_size is not None and cfg.optim.global_batch % (world_size * cfg.optim.micro_batch):
            raise ConfigError(
                f"optim.global_batch={cfg.optim.global_batch} is not divisible by world size {world_size} × "
                f"optim.micro_batch={cfg.optim.micro_batch} = {world_size * cfg.optim.micro_batch}. Change "
                f"optim.global_batch to a multiple of {world_size * cfg.optim.micro_batch}, or optim.micro_batch "
                f"so that world size × micro-batch divides it."
            )
    sizes = [(b.height, b.width) for b in bucket_table(cfg)]
    if cfg.data.codec == "pixel":
        for h, w in sizes:
            if h % cfg.data.patch or w % cfg.data.patch:
                raise ConfigError(
                    f"image size {h}x{w} is not divisible by data.patch={cfg.data.patch}: pick sizes that are "
                    "multiples of the patch."
                )
    else:
        for h, w in sizes:
            if h % 16 or w % 16:
                raise ConfigError(
                    f"image size {h}x{w}: the latent codec needs multiples of 16 (VAE ×8, then 2×2 packing)."
                )
    _check_names(cfg)
    if for_training:
        check_inputs(cfg)
    if cfg.dist.strategy == "none" and world_size is not None and world_size > 1:
        raise ConfigError(
            f"dist.strategy='none' but the job has {world_size} processes: use dist.strategy=ddp or fsdp "
            "(or launch one process)."
        )
    return cfg


# --------------------------------------------------------------------------------------------------
# Resume: which differences a checkpoint tolerates
# --------------------------------------------------------------------------------------------------


class ResumeMismatchError(ConfigError):
    """A checkpoint that belongs to another run: resuming it would train a different model or recipe."""


#: The one list of config keys that may differ between a checkpoint and the run that resumes it, with the reason
#: each is safe. A key names itself and everything below it (``eval`` covers ``eval.every``, ...). Every other
#: key (the architecture, codec, text encoder, data shape and content, objective, optimizer and EMA settings,
#: seed) must be equal, or :func:`check_resume` refuses. Chapter 4 resumes a preempted run under it.
RESUMABLE_KEYS: dict[str, str] = {
    "run.name": "a label; the run folder is run.out_dir",
    "run.out_dir": "where the run folder is (a run copied to another machine)",
    "run.resume": "which checkpoint to continue",
    "run.steps": "a longer or shorter run",
    "run.log_every": "logging",
    "run.progress": "logging",
    "run.tensorboard": "logging",
    "run.save_every": "save cadence",
    "run.keep_last": "save cadence",
    "run.deterministic": "kernel choice: exactness of the repetition, not what is trained",
    "optim.lr": "LR schedule",
    "optim.warmup_steps": "LR schedule",
    "optim.decay_ratio": "LR schedule (e.g. a decay added to extend a run)",
    "optim.decay_type": "LR schedule",
    "optim.min_lr_factor": "LR schedule",
    "eval": "preview samples and judge scores read the model, never change it",
    "dist": "how the job is spread over processes: checkpoints load at any world size (chapter 7)",
    "model.activation_checkpointing": "recomputation: the same numbers with less memory",
    "model.compile": "the same model, compiled",
    "model.init_from": "only the weights of step 0; a resumed run loads the checkpoint's",
    "data.num_workers": "prefetch threads build the same batches",
    "data.path": "where the data is on this machine",
    "data.vae": "where the VAE is on this machine",
    "data.text_encoder_kwargs.path": "where the text encoder is on this machine",
    "data.text_encoder_kwargs.tokenizer_path": "where the tokenizer is on this machine",
}

# What a refused key is part of, for the message (first matching prefix wins).
_KINDS = (
    ("model.", "architecture"),
    ("data.codec", "codec"),
    ("data.patch", "codec"),
    ("data.vae", "codec"),
    ("data.text_encoder", "text encoder"),
    ("data.max_text_tokens", "text encoder"),
    ("data.text_pad_multiple", "text encoder"),
    ("data.image_size", "data shape"),
    ("data.buckets", "data shape"),
    ("data.", "data"),
    ("flow.", "objective"),
    ("optim.", "optimizer"),
    ("ema.", "EMA"),
    ("run.seed", "seed"),
)


class _Unset:
    """A key one side of a comparison does not have (shown as ``(unset)``)."""

    def __repr__(self) -> str:
        return "(unset)"


_UNSET = _Unset()


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {dotted key: leaf}; an empty mapping has no leaves (like a missing one)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _resumable(key: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS)


def resume_differences(
    saved: dict, cfg: TrainConfig
) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
    """``(refused, allowed)``: the keys whose value differs between a checkpoint's stored config and ``cfg``,
    each as ``(key, checkpoint value, run value)``; ``allowed`` are those on :data:`RESUMABLE_KEYS`.

    Keys added to the schema after the checkpoint was written compare at their defaults; keys the schema no
    longer has are ignored (they configure nothing).
    """
    schema = {f"{s}.{k}" for s, sec in to_dict(TrainConfig()).items() for k in sec}
    old = _flat(_merge(to_dict(TrainConfig()), saved))
    new = _flat(to_dict(cfg))
    refused, allowed = [], []
    for key in sorted(set(old) | set(new)):
        if ".".join(key.split(".")[:2]) not in schema:
            continue
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a == b:
            continue
        (allowed if _resumable(key) else refused).append((key, a, b))
    return refused, allowed


def _kind(key: str) -> str:
    return next((kind for prefix, kind in _KINDS if key.startswith(prefix)), "run")


def check_resume(
    saved: dict, cfg: TrainConfig, checkpoint: str = "the checkpoint"
) -> list[tuple[str, Any, Any]]:
    """Refuse to resume ``checkpoint`` (whose stored config is ``saved``) with ``cfg`` unless they differ only in
    :data:`RESUMABLE_KEYS`; returns those allowed differences (the trainer logs them).

    Without this a run with other layers or patches would load the tensors that happen to fit and train on
    silently (``dcp.load`` ignores tensors it was not asked for), or fail deep inside with a size mismatch.
    The trainer calls it before building the model or loading encoders; chapter 4 resumes through it.
    """
    refused, allowed = resume_differences(saved, cfg)
    if refused:
        shown = "; ".join(f"{k}: {a!r} -> {b!r} ({_kind(k)})" for k, a, b in refused)
        raise ResumeMismatchError(
            f"cannot resume {checkpoint}: it was trained with a different config: {shown}. "
            "A checkpoint continues only the same run; what may change on resume is listed in "
            "lenslib.train.config.RESUMABLE_KEYS (run length, LR schedule, logging, evaluation, save cadence, dist.*, "
            "file locations). To train this config, give it a new run.out_dir, or set run.resume=never to start "
            "over in this folder (its checkpoints are replaced)."
        )
    return allowed
