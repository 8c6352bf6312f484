"""Which checkpoint a run continues from, and whether it may: intact, and trained with this run's config.

``run.resume=auto`` takes the run folder's newest *intact* checkpoint (damaged newer ones are reported and
moved aside); a named checkpoint must itself be intact. Either way its config must equal the run's up to
:data:`~lenslib.train.config.RESUMABLE_KEYS`, and the model the run builds must be the checkpoint's.
:func:`preflight_resume` makes the same identity check cheaply, before any process or model exists.

Used by the trainer and ``lens train`` (chapter 4's stop-and-resume, chapter 7's launches).
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

from . import checkpoint as ckpt
from .config import ResumeMismatchError, TrainConfig, check_resume
from .distributed import barrier
from .run_folder import run_dir_of

__all__ = ["resume_point", "preflight_resume", "check_model_config", "init_defaults"]


def loud(text: str, info) -> None:
    """A warning that must not scroll by unnoticed (rank 0, stderr)."""
    if info.is_main:
        print(f"!! WARNING: {text}", file=sys.stderr, flush=True)


def resume_point(cfg: TrainConfig, run_dir: Path, info):
    """``(checkpoint, its trainer state, allowed config changes, damaged checkpoints passed over)`` to resume
    from, or Nones when the run starts fresh; every rank calls it.

    ``run.resume=auto`` takes the newest *intact* checkpoint: damaged newer ones are reported loudly and moved
    to ``checkpoints/damaged/``. A checkpoint named in ``run.resume`` must itself be intact. Either way the
    checkpoint's config must equal this run's up to :data:`~lenslib.train.config.RESUMABLE_KEYS`
    (:class:`~lenslib.train.config.ResumeMismatchError` otherwise). Chapter 4's stop-and-resume runs through
    it.
    """
    if cfg.run.resume == "never":
        return None, None, [], []
    damaged: list = []
    if cfg.run.resume == "auto":
        check, damaged = ckpt.find_intact_checkpoint(run_dir)
        for bad in damaged:
            loud(bad.describe(), info)
        if check is None:
            if damaged:
                raise ckpt.DamagedCheckpointError(
                    f"no intact checkpoint in {run_dir / ckpt.CHECKPOINT_DIR}: every one is damaged "
                    "(above). Resume one of them explicitly only after repairing it, or start over "
                    "with run.resume=never."
                )
            return None, None, [], []
    else:
        path = Path(cfg.run.resume)
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(
                f"run.resume={cfg.run.resume}: not a checkpoint folder (no trainer_state.json)."
            )
        check = ckpt.verify_checkpoint(
            path
        ).raise_if_damaged()  # a named checkpoint is never swapped for another
    if not check.verified:
        loud(
            f"checkpoint {check.path} was written without {ckpt.CHECKSUMS}: resuming from it unverified", info
        )
    allowed = check_resume(check.state["config"], cfg, str(check.path)) if "config" in check.state else []
    if damaged:
        barrier()  # every rank has verified before rank 0 moves anything
        if info.is_main:
            moved = ckpt.set_aside_damaged(run_dir, damaged, check.path)
            loud(
                f"moved {', '.join(p.name for p in moved)} to "
                f"{run_dir / ckpt.CHECKPOINT_DIR / ckpt.DAMAGED_DIR}; resuming from {check.path.name}, "
                f"the newest intact checkpoint (step {check.state['step']}): the steps after it are "
                "trained again",
                info,
            )
        barrier()
    return check.path, check.state, allowed, [str(c.path.name) for c in damaged]


def init_defaults(model) -> dict:
    """Constructor defaults of a model class: the value a config key had before the key existed."""
    params = inspect.signature(type(model).__init__).parameters.values()
    return json.loads(
        json.dumps(
            {p.name: p.default for p in params if p.default is not inspect.Parameter.empty},
            default=lambda v: None,
        )
    )


def check_model_config(saved: dict, built: dict, checkpoint, defaults: dict | None = None) -> None:
    """The model the run builds must have the checkpoint's resulting config (``model_config`` in its trainer
    state), not only the same config keys: a preset or default that changed in the code changes the model too.

    A key the checkpoint does not record (an option added to the model since) compares at its constructor
    default; a key the model no longer has is left to the tensor-name check of ``load_checkpoint``."""
    norm = json.loads(json.dumps(built))
    defaults = defaults or {}
    missing = object()

    def old(k):
        return saved[k] if k in saved else defaults.get(k, missing)

    def show(v):
        return "(unset)" if v is missing else repr(v)

    keys = sorted(k for k in norm if not k.startswith("_") and old(k) != norm[k])
    if keys:
        shown = "; ".join(f"{k}: {show(old(k))} -> {norm[k]!r}" for k in keys)
        raise ResumeMismatchError(
            f"cannot resume {checkpoint}: the model this run builds differs from the checkpoint's in {shown} "
            "(architecture). Give this run a new run.out_dir, or set run.resume=never to start over "
            "in this folder."
        )


def preflight_resume(cfg: TrainConfig) -> None:
    """The identity check of :func:`resume_point` on the checkpoint a run would resume, without hashing or
    building anything: ``lens train --nproc-per-node`` refuses a mismatched run with exit code 2 before it
    starts N processes (chapter 7). A damaged or unreadable checkpoint is left to the trainer."""
    if cfg.run.resume == "never":
        return
    path = ckpt.latest_checkpoint(run_dir_of(cfg)) if cfg.run.resume == "auto" else Path(cfg.run.resume)
    if path is None:
        return
    try:
        state = ckpt.read_trainer_state(path)
    except (OSError, ckpt.DamagedCheckpointError):
        return
    if isinstance(state, dict) and isinstance(state.get("config"), dict):
        check_resume(state["config"], cfg, str(path))
