"""``lens train`` and ``lens export``.

``lens train --config NAME|FILE [section.key=value ...]`` runs the trainer in this process (one CPU or
GPU). With ``--nproc-per-node N`` it launches ``torchrun`` itself (SIGUSR1 forwarded, a shutdown timeout
long enough to save) and turns a preemption into exit code 75 (torchrun alone always exits 1), so a job
script can requeue::

    lens train --config lens-stage1 --nproc-per-node 8 data.path=... ; [ $? -eq 75 ] && scontrol requeue
    $SLURM_JOB_ID

``lens export RUN_OR_CHECKPOINT OUT`` writes the EMA weights as an official-layout ``OUT/transformer/``
folder (``config.json`` + safetensors) that ``LensTransformer2DModel.from_pretrained`` loads, after checking
the checkpoint's files against its ``SHA256SUMS``.

Exit codes: 0 done, 2 a config error (one line on stderr naming the key and the fix, found before a model,
encoder or process is started and before the run folder is created; this includes a run folder whose
checkpoint was trained with another config: resuming it is refused, see
``lenslib.train.config.RESUMABLE_KEYS``) or, for ``lens export``, a path that is not a run or checkpoint
folder; 1 a damaged checkpoint with nothing intact to fall back on; 75 preempted (requeue).

Used in chapter 4.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from lenslib import cli as lens_cli
from lenslib.atomic import atomic_output_dir, blocking_file
from lenslib.cli import add_documented

from .run_folder import PREEMPTED_FILE, run_dir_of
from .signals import PREEMPT_SIGNALS, REQUEUE_EXIT_CODE

__all__ = ["register", "main_train", "prepare_run", "export", "launch"]

EXIT_CONFIG_ERROR = 2
EXIT_DAMAGED = 1


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default="cpu-tiny",
        help="shipped config name (cpu-tiny, lens-toy, lens-stage1, lens-stage2) or a YAML file",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. optim.lr=3e-4 run.steps=100 (before or after the options)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def register(subparsers) -> None:
    p = add_documented(
        subparsers,
        "train",
        "train a Lens transformer (one process, or torchrun with --nproc-per-node)",
        __doc__,
    )
    _train_args(p)
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="launch torchrun with this many processes (>= 1; omit to train in this process)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=int,
        default=300,
        help="seconds torchrun waits for workers to save on a signal",
    )
    p.set_defaults(func=_cmd_train)

    e = subparsers.add_parser(
        "export", help="write a checkpoint's EMA weights as an official transformer/ folder"
    )
    e.add_argument("checkpoint", help="a run folder (uses its latest checkpoint) or a checkpoint folder")
    e.add_argument("out", help="output folder; OUT/transformer/ is written")
    e.add_argument(
        "--weights", choices=("ema", "model"), default="ema", help="EMA (default) or the raw training weights"
    )
    e.set_defaults(func=_cmd_export)


def prepare_run(config: str, overrides: list[str], world_size: int, print_config: bool = False):
    """The checked config of a run, or None after printing it (``print_config``).

    Every check runs here, before a process is started, a model or encoder loaded, or the run folder created:
    the config's keys, types, values and names (:func:`~lenslib.train.config.validate`), the inputs it needs
    and the paths it points to (:func:`~lenslib.train.config.check_paths`: data, checkpoints, the run folder),
    and whether the run folder's checkpoint may be resumed by this config
    (:func:`~lenslib.train.resume.preflight_resume`). Raises :class:`~lenslib.train.config.ConfigError`.
    Chapter 4's ``lens train`` and chapter 7's launches go through it.
    """
    # lazy (here and below): `lens --help` imports this module; the config costs 0.18 s (yaml, the world's
    # names), the trainer, checkpoints and judge import torch (1 s or more; python -X importtime)
    from .config import check_paths, load_config, to_yaml, validate  # noqa: PLC0415

    cfg = load_config(config, overrides, world_size=world_size)
    if print_config:
        print(to_yaml(cfg), end="")
        return None
    validate(cfg, world_size, for_training=True)
    check_paths(cfg)
    from .resume import preflight_resume  # noqa: PLC0415 - imports torch: only for a run that will train

    preflight_resume(cfg)
    return cfg


def _run_here(cfg) -> int:
    """Train ``cfg`` in this process; the exit code of ``lens train`` / a torchrun worker."""
    # the command line wires evaluation's judge into training; lazy: the judge costs ~0.4 s (python -X
    # importtime) and `lens --help` imports this module
    from lenslib.eval.judge import score_scene_images  # noqa: PLC0415

    from .checkpoint import DamagedCheckpointError  # noqa: PLC0415
    from .config import ConfigError  # noqa: PLC0415
    from .trainer import train  # noqa: PLC0415

    try:
        summary = train(cfg, judge=score_scene_images)
    except ConfigError as err:  # a mismatched resume, inputs missing: the message names the keys and the fix
        return lens_cli.fail("train", err, EXIT_CONFIG_ERROR)
    except DamagedCheckpointError as err:
        return lens_cli.fail("train", err, EXIT_DAMAGED)
    return REQUEUE_EXIT_CODE if summary["preempted"] else 0


def main_train(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lenslib.train`` (each torchrun worker): the same checks and exit codes as
    ``lens train``; overrides may stand before or after the options."""
    p = lens_cli.OneLineParser(prog="python -m lenslib.train")
    _train_args(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    args = p.parse_intermixed_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    lens_cli._DEBUG = args.debug
    try:
        cfg = prepare_run(args.config, args.overrides, world, args.print_config)
        return 0 if cfg is None else _run_here(cfg)
    except lens_cli.EXPECTED_ERRORS as err:
        return lens_cli.fail("train", err, EXIT_CONFIG_ERROR)
    finally:
        lens_cli._DEBUG = False


def launch(config: str, overrides: list[str], nproc: int, shutdown_timeout: int = 300) -> int:
    """Run ``torchrun --standalone --nproc-per-node nproc -m lenslib.train``; map a preemption to exit 75."""
    cfg = prepare_run(config, overrides, nproc)  # fail here, before starting N processes
    marker = run_dir_of(cfg) / PREEMPTED_FILE
    marker.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        f"--shutdown-timeout={shutdown_timeout}",
        "-m",
        "lenslib.train",
        "--config",
        str(config),
        *overrides,
    ]
    proc = subprocess.Popen(cmd)

    def forward(signum, frame):
        proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in PREEMPT_SIGNALS}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if marker.exists():
        return REQUEUE_EXIT_CODE
    return rc


def _cmd_train(args) -> int:
    if args.nproc_per_node is not None and args.nproc_per_node < 1:
        return lens_cli.fail(
            "train",
            f"--nproc-per-node {args.nproc_per_node}: give at least 1 process, or omit the option "
            "to train in this process.",
        )
    if args.shutdown_timeout < 0:
        return lens_cli.fail(
            "train",
            f"--shutdown-timeout {args.shutdown_timeout}: give the seconds (>= 0) torchrun waits "
            "for its workers to save.",
        )
    from .config import ConfigError  # noqa: PLC0415 - lazy: see prepare_run

    world = args.nproc_per_node or 1
    try:
        cfg = prepare_run(args.config, args.overrides, world, args.print_config)
        if cfg is None:
            return 0
        if args.nproc_per_node:
            return launch(args.config, args.overrides, args.nproc_per_node, args.shutdown_timeout)
    except ConfigError as err:
        return lens_cli.fail("train", err, EXIT_CONFIG_ERROR)
    return _run_here(cfg)


def export(checkpoint: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write ``weights`` ("ema" or "model") of a checkpoint as ``out/transformer`` (diffusers layout,
    safetensors).

    Needs no process group and works for checkpoints saved by any number of ranks. ``lens_export.json`` beside
    the weights records the run's ``flow.prediction``: a model trained with ``x`` outputs clean samples, not
    the official velocity, and must be sampled through ``lenslib.flow.predict_velocity``.

    The checkpoint is verified against its ``SHA256SUMS`` first: a damaged checkpoint folder is refused
    (:class:`~lenslib.train.checkpoint.DamagedCheckpointError`); for a run folder a damaged newest checkpoint
    is reported on stderr and the newest intact one exported (its step is in ``lens_export.json``). Chapter 4
    exports its run this way.
    """
    path, out = Path(checkpoint), Path(out)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: give a run folder or a checkpoint folder (RUN/checkpoints/step_XXXXXXX)."
        )
    if not path.is_dir():
        raise NotADirectoryError(
            f"{path} is a file: give a run folder or a checkpoint folder (RUN/checkpoints/step_XXXXXXX)."
        )
    _check_output_folder(out)
    # lazy: see prepare_run (the transformer imports diffusers, several seconds)
    from lenslib.model.transformer import LensTransformer2DModel  # noqa: PLC0415

    from . import checkpoint as ckpt  # noqa: PLC0415

    if (path / "trainer_state.json").is_file():
        check = ckpt.verify_checkpoint(path)
        if not check.ok:
            raise ckpt.DamagedCheckpointError(
                check.describe() + "; nothing exported (give the run folder to export "
                "its newest intact checkpoint)",
                path,
                check.problems,
            )
    else:
        check, damaged = ckpt.find_intact_checkpoint(path)
        for bad in damaged:
            print(f"!! WARNING: {bad.describe()}", file=sys.stderr, flush=True)
        if check is None:
            if damaged:
                raise ckpt.DamagedCheckpointError(
                    f"{path}: every checkpoint is damaged (above); nothing exported."
                )
            raise FileNotFoundError(
                f"{path} is neither a checkpoint folder (no trainer_state.json) nor a run folder "
                "with checkpoints: give RUN or RUN/checkpoints/step_XXXXXXX."
            )
        if damaged:
            print(
                f"!! WARNING: exporting {check.path.name}, the newest intact checkpoint of {path}",
                file=sys.stderr,
                flush=True,
            )
        path = check.path
    if not check.verified:
        print(
            f"!! WARNING: {path} was written without {ckpt.CHECKSUMS}: exporting it unverified",
            file=sys.stderr,
        )
    state = check.state
    if weights == "ema" and not state.get("has_ema", False):
        raise ValueError(f"{path} has no EMA weights (ema.enabled was false); use --weights model.")
    model_config = {k: v for k, v in state["model_config"].items() if not k.startswith("_")}
    model = LensTransformer2DModel(**model_config)
    like = model.state_dict()
    tensors = ckpt.load_tensors(path, weights, like, verify=False)  # verified above
    model.load_state_dict(tensors, strict=True)
    final = out / "transformer"
    prediction = state.get("config", {}).get("flow", {}).get("prediction", "velocity")
    with atomic_output_dir(final, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "lens_export.json").write_text(
            json.dumps(
                {
                    "checkpoint": str(path),
                    "step": state["step"],
                    "weights": weights,
                    "prediction": prediction,
                    "verified": check.verified,
                },
                indent=1,
            )
        )
    return final


def _check_output_folder(out: Path) -> None:
    """``out`` must be a folder or creatable as one, and ``out/transformer`` a folder or absent (checked
    before loading)."""
    if (p := blocking_file(out)) is not None:
        raise NotADirectoryError(f"output {out}: {p} is a file, not a folder; give another output folder.")
    if (out / "transformer").exists() and not (out / "transformer").is_dir():
        raise NotADirectoryError(
            f"output {out}: {out / 'transformer'} is a file; move it or give another output folder."
        )


def _cmd_export(args) -> int:
    from .checkpoint import DamagedCheckpointError  # noqa: PLC0415 - lazy: see prepare_run

    try:
        final = export(args.checkpoint, args.out, args.weights)
    except DamagedCheckpointError as err:
        return lens_cli.fail("export", err, EXIT_DAMAGED)
    print(f"wrote {final}")
    return 0
