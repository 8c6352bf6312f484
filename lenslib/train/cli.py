"""``lens train`` and ``lens export``.

``lens train --config NAME|FILE [section.key=value ...]`` runs the trainer in this process (one CPU or
GPU). With ``--nproc-per-node N`` it launches ``torchrun`` itself (SIGUSR1 forwarded, a shutdown timeout
long enough to save) and turns a preemption into exit code 75 (torchrun alone always exits 1), so a job
script can requeue::

    lens train --config lens-stage1 --nproc-per-node 8 data.path=... ; [ $? -eq 75 ] && scontrol requeue $SLURM_JOB_ID

``lens export RUN_OR_CHECKPOINT OUT`` writes the EMA weights as an official-layout ``OUT/transformer/``
folder (``config.json`` + safetensors) that ``LensTransformer2DModel.from_pretrained`` loads, after checking
the checkpoint's files against its ``SHA256SUMS``.

Exit codes: 0 done, 2 a config error (including a run folder whose checkpoint was trained with another
config: resuming it is refused, see ``lenslib.train.config.RESUMABLE_KEYS``), 1 a damaged checkpoint with
nothing intact to fall back on, 75 preempted (requeue).

Used in chapter 4.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["register", "main_train", "export", "launch"]

EXIT_CONFIG_ERROR = 2
EXIT_DAMAGED = 1


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default="cpu-tiny", help="shipped config name (cpu-tiny, lens-toy, lens-stage1, lens-stage2) or a YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=3e-4 run.steps=100")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a Lens transformer (one process, or torchrun with --nproc-per-node)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _train_args(p)
    p.add_argument("--nproc-per-node", type=int, default=0, help="launch torchrun with this many processes")
    p.add_argument("--shutdown-timeout", type=int, default=300, help="seconds torchrun waits for workers to save on a signal")
    p.set_defaults(func=_cmd_train)

    e = subparsers.add_parser("export", help="write a checkpoint's EMA weights as an official transformer/ folder")
    e.add_argument("checkpoint", help="a run folder (uses its latest checkpoint) or a checkpoint folder")
    e.add_argument("out", help="output folder; OUT/transformer/ is written")
    e.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or the raw training weights")
    e.set_defaults(func=_cmd_export)


def _load(args, world_size=None):
    from .config import ConfigError, load_config, to_yaml

    try:
        cfg = load_config(args.config, args.overrides, world_size=world_size)
    except ConfigError as err:
        print(f"lens train: config error: {err}", file=sys.stderr)
        return None
    if args.print_config:
        print(to_yaml(cfg), end="")
    return cfg


def main_train(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lenslib.train`` (each torchrun worker)."""
    p = argparse.ArgumentParser(prog="python -m lenslib.train")
    _train_args(p)
    args = p.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = _load(args, world)
    if cfg is None:
        return EXIT_CONFIG_ERROR
    if args.print_config:
        return 0
    from .checkpoint import DamagedCheckpointError
    from .config import ConfigError
    from .signals import REQUEUE_EXIT_CODE
    from .trainer import train

    try:
        summary = train(cfg)
    except ConfigError as err:  # a mismatched resume, inputs missing: the message names the keys and the fix
        print(f"lens train: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except DamagedCheckpointError as err:
        print(f"lens train: {err}", file=sys.stderr)
        return EXIT_DAMAGED
    return REQUEUE_EXIT_CODE if summary["preempted"] else 0


def launch(config: str, overrides: list[str], nproc: int, shutdown_timeout: int = 300) -> int:
    """Run ``torchrun --standalone --nproc-per-node nproc -m lenslib.train``; map a preemption to exit 75."""
    from .config import load_config
    from .signals import PREEMPT_SIGNALS, REQUEUE_EXIT_CODE
    from .trainer import PREEMPTED_FILE, preflight_resume, run_dir_of

    cfg = load_config(config, overrides, world_size=nproc)  # fail here, before starting N processes
    preflight_resume(cfg)  # a run folder holding another config's checkpoint: refused here too
    marker = run_dir_of(cfg) / PREEMPTED_FILE
    marker.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", f"--shutdown-timeout={shutdown_timeout}",
           "-m", "lenslib.train", "--config", str(config), *overrides]
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
    if args.nproc_per_node and args.nproc_per_node > 0:
        cfg = _load(args, args.nproc_per_node)
        if cfg is None:
            return EXIT_CONFIG_ERROR
        if args.print_config:
            return 0
        from .config import ConfigError

        try:
            return launch(args.config, args.overrides, args.nproc_per_node, args.shutdown_timeout)
        except ConfigError as err:
            print(f"lens train: config error: {err}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
    return main_train([*(["--print-config"] if args.print_config else []), "--config", args.config, *args.overrides])


def export(checkpoint: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write ``weights`` ("ema" or "model") of a checkpoint as ``out/transformer`` (diffusers layout, safetensors).

    Needs no process group and works for checkpoints saved by any number of ranks. ``lens_export.json`` beside
    the weights records the run's ``flow.prediction``: a model trained with ``x`` outputs clean samples, not the
    official velocity, and must be sampled through ``lenslib.flow.predict_velocity``.

    The checkpoint is verified against its ``SHA256SUMS`` first: a damaged checkpoint folder is refused
    (:class:`~lenslib.train.checkpoint.DamagedCheckpointError`); for a run folder a damaged newest checkpoint is
    reported on stderr and the newest intact one exported (its step is in ``lens_export.json``). Chapter 4
    exports its run this way.
    """
    import json
    import shutil

    from lenslib.model.transformer import LensTransformer2DModel

    from . import checkpoint as ckpt

    path = Path(checkpoint)
    if (path / "trainer_state.json").is_file():
        check = ckpt.verify_checkpoint(path)
        if not check.ok:
            raise ckpt.DamagedCheckpointError(check.describe() + "; nothing exported (give the run folder to export "
                                              "its newest intact checkpoint)", path, check.problems)
    else:
        check, damaged = ckpt.find_intact_checkpoint(path)
        for bad in damaged:
            print(f"!! WARNING: {bad.describe()}", file=sys.stderr, flush=True)
        if check is None:
            if damaged:
                raise ckpt.DamagedCheckpointError(f"{path}: every checkpoint is damaged (above); nothing exported.")
            raise FileNotFoundError(f"{path} is neither a checkpoint folder nor a run folder with checkpoints.")
        if damaged:
            print(f"!! WARNING: exporting {check.path.name}, the newest intact checkpoint of {path}", file=sys.stderr,
                  flush=True)
        path = check.path
    if not check.verified:
        print(f"!! WARNING: {path} was written without {ckpt.CHECKSUMS}: exporting it unverified", file=sys.stderr)
    state = check.state
    if weights == "ema" and not state.get("has_ema", False):
        raise ValueError(f"{path} has no EMA weights (ema.enabled was false); use --weights model.")
    model_config = {k: v for k, v in state["model_config"].items() if not k.startswith("_")}
    model = LensTransformer2DModel(**model_config)
    like = model.state_dict()
    tensors = ckpt.load_tensors(path, weights, like, verify=False)  # verified above
    model.load_state_dict(tensors, strict=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final, tmp = out / "transformer", out / "transformer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    prediction = state.get("config", {}).get("flow", {}).get("prediction", "velocity")
    (tmp / "lens_export.json").write_text(json.dumps({"checkpoint": str(path), "step": state["step"], "weights": weights,
                                                      "prediction": prediction, "verified": check.verified}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _cmd_export(args) -> int:
    from .checkpoint import DamagedCheckpointError

    try:
        final = export(args.checkpoint, args.out, args.weights)
    except (DamagedCheckpointError, FileNotFoundError) as err:
        print(f"lens export: {err}", file=sys.stderr)
        return EXIT_DAMAGED
    print(f"wrote {final}")
    return 0
