"""Multi-process training from a notebook: ``torchrun`` as a subprocess, never DDP inside the kernel.

A Jupyter kernel is one process (and papermill runs it in its own session), so the training notebook is
the *control plane*: it validates the config, starts
``torchrun -m lenslib.train --config RUN_DIR/config.yaml`` and waits, echoing the log, then plots and
evaluates from what the trainer wrote. :func:`launch_training` returns or raises with the return code
and the last lines of the log, so both surface in the executed notebook.

Inside a SLURM job the command runs under ``srun`` (one task per node, torchrun's c10d rendezvous on
the job's first node for several nodes). That makes torchrun an *srun task*, the only process that
``scancel --signal=USR1`` and ``#SBATCH --signal=USR1@120`` reach under ``proctrack/cgroup``
(tested against a local SLURM cluster in ``tests/test_cluster_slurm.py``); torchrun forwards SIGUSR1 to
the workers (``--signals-to-handle``), every rank saves at the next step and the trainer leaves a
``PREEMPTED`` file. A stop request that reaches the job script or ``lens run-notebook`` instead
(``scancel -b``, ``--signal=B:USR1@…``, SIGTERM) touches the run's preempt flag (``$LENS_PREEMPT_FLAG``);
this launcher polls it and signals its child. Either way the notebook then raises :class:`RunPreempted`,
``lens run-notebook`` exits with the requeue code (75) and the job script requeues; the next start
resumes from the checkpoint.

Used by training notebooks (chapters 4 and 7) and tested on a real SLURM cluster.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lenslib.atomic import write_text_atomic
from lenslib.train.config import TrainConfig, to_yaml
from lenslib.train.run_folder import PREEMPTED_FILE
from lenslib.train.signals import die_with_parent

from .records import PREEMPT_FLAG_NAME

__all__ = [
    "RunPreempted",
    "TrainingFailed",
    "LaunchResult",
    "torchrun_command",
    "srun_prefix",
    "launch_training",
    "master_address",
    "request_stop",
    "check_result",
]

#: torchrun's signal forwarding: SIGUSR1 added to its defaults (else it dies and orphans the workers).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
DEFAULT_PORT = 29500


class RunPreempted(RuntimeError):
    """Training stopped on request after saving a checkpoint; the job should be requeued and resumed."""


class TrainingFailed(RuntimeError):
    """torchrun exited with an error; the message holds the return code and the log tail."""


@dataclass
class LaunchResult:
    returncode: int
    command: list[str]
    log_path: Path
    tail: str
    seconds: float
    preempted: bool = False
    preempt_info: dict | None = None


def master_address() -> str:
    """The rendezvous host: ``$LENS_MASTER_ADDR``, else the first node of the SLURM job, else localhost."""
    if os.environ.get("LENS_MASTER_ADDR"):
        return os.environ["LENS_MASTER_ADDR"]
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if nodelist and shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    return "127.0.0.1"


def torchrun_command(
    config_path: str | Path,
    nodes: int = 1,
    nproc_per_node: int = 1,
    *,
    master_addr: str | None = None,
    master_port: int | None = None,
    rdzv_id: str | None = None,
    shutdown_timeout: int = 100,
    module: str = "lenslib.train",
    extra_args: tuple[str, ...] = (),
    python: str | None = None,
) -> list[str]:
    """The torchrun command line for one node (``python -m torch.distributed.run``: no PATH lookup).

    One node: ``--standalone``. Several: c10d rendezvous at ``master_addr:master_port`` with ``rdzv_id``
    (the SLURM job id), so every node's torchrun finds the others. ``shutdown_timeout`` is how long
    torchrun waits for workers to save after a signal; keep it below the ``--signal=USR1@T`` warning time.
    """
    if nodes < 1 or nproc_per_node < 1:
        raise ValueError(f"nodes={nodes} and nproc_per_node={nproc_per_node} must be >= 1.")
    cmd = [python or sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        cmd += ["--standalone", "--nnodes=1"]
    else:
        addr = master_addr or master_address()
        port = master_port or int(os.environ.get("LENS_MASTER_PORT", DEFAULT_PORT))
        rid = rdzv_id or os.environ.get("SLURM_JOB_ID", "lens")
        cmd += [
            f"--nnodes={nodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={addr}:{port}",
            f"--rdzv-id={rid}",
        ]
    cmd += [
        f"--nproc-per-node={nproc_per_node}",
        "--max-restarts=0",
        f"--signals-to-handle={FORWARDED_SIGNALS}",
        f"--shutdown-timeout={shutdown_timeout}",
        "-m",
        module,
        "--config",
        str(config_path),
        *extra_args,
    ]
    return cmd


def srun_prefix(nodes: int) -> list[str]:
    """``srun`` with one task per node and all of the job's CPUs per task (22.05+ does not inherit -c)."""
    cmd = [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        "--export=ALL",
    ]
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus:
        cmd.append(f"--cpus-per-task={cpus}")
    if nodes > 1:
        cmd.append("--label")
    return cmd


def _resolve_config(config: Any, run_dir: str | Path | None) -> tuple[Path, Path]:
    """(config file, run folder) from a TrainConfig, a YAML path or a run folder."""
    if isinstance(config, TrainConfig):
        out = Path(run_dir or config.run.out_dir or "")
        if not str(out) or not config.run.out_dir:
            raise ValueError(
                "the config has no run.out_dir: build it with config_from_parameters(..., run_dir=...) "
                "or set run.out_dir, so every node writes to the same run folder."
            )
        out.mkdir(parents=True, exist_ok=True)
        path = out / "config.yaml"
        write_text_atomic(path, to_yaml(config))
        return path, out
    path = Path(
        config if config is not None else Path(run_dir or os.environ.get("LENS_RUN_DIR", "")) / "config.yaml"
    )
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"training config {path} not found (run the notebook through `lens run-notebook` or pass a "
            "config)."
        )
    data = yaml.safe_load(path.read_text()) or {}
    out = run_dir or (data.get("run") or {}).get("out_dir")
    if not out:
        raise ValueError(f"{path} has no run.out_dir and no run_dir was given.")
    return path, Path(out)


def _stop_flag(run_dir: Path) -> Path:
    """The file whose appearance asks a running launch to stop: ``$LENS_PREEMPT_FLAG``, else
    ``RUN_DIR/.preempt``."""
    return (
        Path(os.environ["LENS_PREEMPT_FLAG"])
        if os.environ.get("LENS_PREEMPT_FLAG")
        else run_dir / PREEMPT_FLAG_NAME
    )


def request_stop(run_dir: str | Path) -> Path:
    """Ask the training launched into ``run_dir`` to save and stop, as a scheduler's preemption notice does.

    Touches the stop flag that :func:`launch_training` polls; the launcher then sends SIGUSR1 to torchrun,
    which forwards it to every rank. Chapter 4 uses it to demonstrate preemption and resume.
    """
    flag = _stop_flag(Path(run_dir))
    flag.touch()
    return flag


def check_result(result: LaunchResult) -> LaunchResult:
    """Raise :class:`RunPreempted` or :class:`TrainingFailed` for a launch that did not finish; else return
    it."""
    if result.preempted:
        info = result.preempt_info or {}
        raise RunPreempted(
            f"training saved step {info.get('step')} on {info.get('signal')} and stopped (torchrun exit code "
            f"{result.returncode}); the job is requeued and resumes from {info.get('checkpoint')}."
        )
    if result.returncode != 0:
        n = len(result.tail.splitlines())
        raise TrainingFailed(
            f"torchrun exited with code {result.returncode}. Last {n} lines of {result.log_path}:\n"
            f"{result.tail}"
        )
    return result


def launch_training(
    config: Any = None,
    run_dir: str | Path | None = None,
    *,
    nodes: int = 1,
    nproc_per_node: int = 1,
    srun: bool | None = None,
    extra_args: tuple[str, ...] = (),
    shutdown_timeout: int = 100,
    tail_lines: int = 30,
    echo: bool = True,
    check: bool = True,
    command: list[str] | None = None,
    on_line=None,
) -> LaunchResult:
    """Run the trainer under torchrun (under srun inside a SLURM job) and wait; see the module docstring.

    ``config`` is a :class:`TrainConfig` (written to ``RUN_DIR/config.yaml``), a YAML path, or None for
    ``$LENS_RUN_DIR/config.yaml`` (what ``lens run-notebook`` wrote). Output goes to
    ``RUN_DIR/logs/train-NNN.log`` and, with ``echo``, to the notebook. With ``check`` (default) a
    preemption raises :class:`RunPreempted` and any other failure :class:`TrainingFailed`; both carry the
    return code and log tail (:func:`check_result`). ``command`` replaces the torchrun command (tests,
    custom launchers). ``on_line(line)``, if given, is called in the calling thread for every output line,
    and with ``""`` every half second of silence: chapter 4 redraws its live loss curve from
    ``metrics.jsonl`` there. A stop request is the file ``$LENS_PREEMPT_FLAG`` (``lens run-notebook`` sets
    it), else ``RUN_DIR/.preempt`` (:func:`request_stop`).
    """

    config_path, run_dir = _resolve_config(config, run_dir)
    marker = run_dir / PREEMPTED_FILE
    marker.unlink(missing_ok=True)
    if srun is None:
        srun = bool(os.environ.get("SLURM_JOB_ID")) and shutil.which("srun") is not None
    if nodes > 1 and not srun:
        raise ValueError(f"nodes={nodes} needs a SLURM allocation (srun) to start torchrun on every node.")
    cmd = (
        list(command)
        if command
        else torchrun_command(
            config_path, nodes, nproc_per_node, shutdown_timeout=shutdown_timeout, extra_args=extra_args
        )
    )
    if srun:
        cmd = srun_prefix(nodes) + cmd
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"train-{len(list(logs.glob('train-*.log'))):03d}.log"
    flag = _stop_flag(run_dir)

    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    lines: queue.Queue[str | None] = queue.Queue()
    t0 = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log_file:
        log_file.write("$ " + " ".join(cmd) + "\n")
        log_file.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            preexec_fn=die_with_parent,  # the child gets SIGTERM if the kernel dies
        )

        def pump():
            for line in proc.stdout:
                log_file.write(line)
                log_file.flush()
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        signalled = False
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:  # the output pipe closed: torchrun is exiting
                break
            if line:
                tail.append(line.rstrip("\n"))
                if echo:
                    print(line, end="", flush=True)
            if on_line is not None:
                on_line(line)
            if not signalled and flag.exists() and proc.poll() is None:
                signalled = True
                print(f"[lens] stop requested ({flag}): asking training to save and exit", flush=True)
                proc.send_signal(signal.SIGUSR1)  # srun and torchrun forward it to every worker
        rc = proc.wait()
        reader.join()
    if signalled:
        flag.unlink(
            missing_ok=True
        )  # the request was delivered; the next launch (the resume) must not see it
    seconds = time.time() - t0
    info = json.loads(marker.read_text()) if marker.is_file() else None
    result = LaunchResult(
        rc, cmd, log_path, "\n".join(tail), seconds, preempted=info is not None, preempt_info=info
    )
    print(f"[lens] torchrun exited with code {rc} after {seconds:.1f} s (log: {log_path})", flush=True)
    if not check:
        return result
    return check_result(result)
