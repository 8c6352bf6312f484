"""Fault injection: kill a training job at random moments, resume it, and compare with a job never killed.

A preempted or crashed job may cost time, never the result. :func:`kill_trial` trains a small run to the end
through a series of ``SIGKILL``\\ s, each at a random moment of one of four kinds, resuming after each one as
a requeued job would, and then compares the run with an uninterrupted run of the same config
(:func:`reference_run`), bit for bit: the final checkpoint's model, EMA, AdamW and RNG tensors, and every
logged step's loss, gradient norm, learning rate and per-noise-band loss. The kinds of kill:

* ``startup``: at a uniformly random time before the job's first step (imports, text encoder and model,
  checkpoint verification and loading, the metrics rewrite, cleaning up what the previous kill left, the
  first step);
* ``training``: at a uniformly random time in the next few steps after the job's first new step (with a
  save after every step, often inside a save);
* ``save``: the job kills itself at a random point of a random save, before or after one of the file
  operations of :func:`~lenslib.train.checkpoint.save_checkpoint` (the tensor files, the RNG file, the trainer
  state, the checksums, an fsync, a rename, the ``latest`` pointer, the rotation of old checkpoints);
* ``torn``: the job writes part of a metrics line, flushes it and kills itself (a torn ``metrics.jsonl``).

The in-job kills are installed by :func:`lenslib.train.fault_hooks.child_main`, which a job runs instead of
``python -m lenslib.train``. ``tests/test_train_kill.py`` runs one short trial;
``benchmarks/kill_resume.py`` runs 30 kills and records the tally in ``benchmarks/results/kill_resume.json``.
They are the evidence behind chapter 4's statement that a killed run resumes bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open

import lenslib

from . import checkpoint as ck
from .fault_hooks import PLAN_ENV
from .run_folder import read_metrics

__all__ = [
    "KINDS",
    "TINY_MODEL",
    "TINY_OVERRIDES",
    "Kill",
    "Reference",
    "reference_run",
    "kill_trial",
    "compare_runs",
    "tally",
]

KINDS = ("startup", "training", "save", "torn")

#: The smallest cpu-tiny run that still trains: 16x16 world images, brief captions in 8 text tokens, two
#: narrow blocks. The fault trials below and the trainer's resume, integrity and distributed tests use it.
TINY_MODEL = [
    "data.image_size=16",
    "data.caption_kind=brief",
    "data.max_text_tokens=8",
    "data.text_encoder_kwargs.max_length=8",
    "model.kwargs.num_layers=2",
    "model.kwargs.num_attention_heads=2",
    "model.kwargs.attention_head_dim=16",
    "model.kwargs.axes_dims_rope=[4,6,6]",
]

#: :data:`TINY_MODEL` saving after every step and evaluating every 5: a kill at a random time often falls
#: inside a save.
TINY_OVERRIDES = [
    "optim.global_batch=4",
    "optim.micro_batch=2",
    "optim.warmup_steps=2",
    *TINY_MODEL,
    "eval.every=5",
    "eval.num_images=2",
    "eval.num_steps=2",
    "run.log_every=1",
    "run.progress=log",
    "ema.decay=0.9",
    "run.save_every=1",
    "run.keep_last=2",
]

_CHILD = "from lenslib.train.fault_hooks import child_main; child_main()"


@dataclass
class Kill:
    """One kill: its kind, where the job was, the checkpoint it had reached, and how the next job resumed."""

    kind: str
    moment: str
    job_seconds: float
    latest_before: int  # step of the run's latest checkpoint when the job started
    latest_after: int  # ... and after it was killed
    last_logged: int  # the last step the job logged (0: none)
    last_line: str  # the job's last line of output
    resumed_at: int | None = (
        None  # step the next job started from (0: from scratch; None: it died before saying)
    )


@dataclass
class Reference:
    """An uninterrupted run: its folder, the file operations of each save, and how long the job's parts
    take."""

    run_dir: Path
    steps: int
    save_ticks: list[int]
    startup_s: float  # from the job's start to its first step line
    step_s: float  # a step with its save
    seconds: float


def _env(threads: int) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(
            [str(Path(lenslib.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
    )
    for key in (
        "WORLD_SIZE",
        "RANK",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
        PLAN_ENV,
    ):
        env.pop(key, None)
    return env


class _Job:
    """A training job in a subprocess whose output is collected line by line (``step N`` lines are events)."""

    def __init__(self, cmd: list[str], env: dict, plan: dict | None = None):
        if plan:
            env = dict(env, **{PLAN_ENV: json.dumps(plan)})
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.first_step_s: float | None = None  # seconds from the start to the job's first step line
        self.stepped = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("step ") and not self.stepped.is_set():
                self.first_step_s = self.seconds
                self.stepped.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
            raise RuntimeError(
                f"a training job ran past {timeout:.0f} s; its output:\n" + self.tail()
            ) from None
        self.reader.join(5)
        return rc

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.t0

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])


def _cmd(config: str, overrides: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, "-c", _CHILD, "--config", config, *overrides, f"run.out_dir={run_dir}"]


def _records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir)[0] if "step_time_s" in r]


def _latest_step(run_dir: Path) -> int:
    path = ck.latest_checkpoint(run_dir)
    if path is None:
        return 0
    try:
        return int(ck.read_trainer_state(path)["step"])
    except (OSError, ValueError, KeyError, ck.DamagedCheckpointError):
        return int(path.name.split("_")[-1])


def reference_run(
    run_dir: str | Path,
    steps: int,
    config: str = "cpu-tiny",
    overrides: list[str] | None = None,
    threads: int = 1,
    timeout: float = 600,
) -> Reference:
    """Train ``steps`` steps without interruption into ``run_dir``, counting each save's file operations."""
    run_dir = Path(run_dir)
    overrides = [*(TINY_OVERRIDES if overrides is None else overrides), f"run.steps={steps}"]
    report = run_dir.parent / f".{run_dir.name}.ticks.json"
    job = _Job(_cmd(config, overrides, run_dir), _env(threads), {"kind": "count", "report": str(report)})
    rc = job.wait(timeout)
    if rc != 0:
        raise RuntimeError(f"the uninterrupted run failed (exit {rc}):\n{job.tail()}")
    ticks = json.loads(report.read_text())["ticks"]
    report.unlink()
    recs = _records(run_dir)
    return Reference(
        run_dir,
        steps,
        ticks,
        startup_s=job.first_step_s,
        step_s=recs[-1]["elapsed_s"] / steps,
        seconds=job.seconds,
    )


def _tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            rel = f.relative_to(folder).as_posix()
            out.update({f"{rel}:{k}": h.get_tensor(k) for k in h.keys()})
            # Python's RNG state is kept in the metadata
            out.update(
                {f"{rel}:meta:{k}": v for k, v in (h.metadata() or {}).items() if f.parent.name == "rng"}
            )
    return out


def compare_runs(reference: str | Path, run: str | Path, steps: int) -> list[str]:
    """Differences between two runs of ``steps`` steps (empty when bit-identical): the step's checkpoint
    (model, EMA, AdamW and RNG tensors), the logged curve, one metrics line per step, nothing half-written
    left."""
    reference, run = Path(reference), Path(run)
    problems = []
    name = ck.checkpoint_name(steps)
    latest = ck.latest_checkpoint(run)
    if latest is None or latest.name != name:
        problems.append(f"latest checkpoint is {latest.name if latest else None}, not {name}")
    check = ck.verify_checkpoint(run / ck.CHECKPOINT_DIR / name)
    if not check.ok:
        problems.append(check.describe())
    else:
        a, b = _tensors(reference / ck.CHECKPOINT_DIR / name), _tensors(run / ck.CHECKPOINT_DIR / name)
        if set(a) != set(b):
            problems.append(f"checkpoint tensors differ in names: {sorted(set(a) ^ set(b))[:5]}")
        for key in sorted(set(a) & set(b)):
            x, y = a[key], b[key]
            same = torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
            if not same:
                problems.append(f"{name} {key} differs")
    keys = ("step", "loss", "grad_norm", "lr", "loss_by_t")
    ra, rb = _records(reference), _records(run)
    if [r["step"] for r in rb] != list(range(1, steps + 1)):
        problems.append(f"metrics.jsonl steps are {[r['step'] for r in rb]}, not 1..{steps} once each")
    for x, y in zip(ra, rb):
        if [x[k] for k in keys] != [y[k] for k in keys]:
            problems.append(
                f"step {x['step']}: logged {[y[k] for k in keys]} vs {[x[k] for k in keys]} uninterrupted"
            )
    leftovers = [
        p.name
        for folder in (run, run / ck.CHECKPOINT_DIR)
        if folder.is_dir()
        for p in folder.iterdir()
        if ".tmp" in p.name
    ]
    if leftovers:
        problems.append(f"half-written files left: {leftovers}")
    return problems


def kill_trial(
    run_dir: str | Path,
    reference: Reference,
    kinds: list[str],
    seed: int = 0,
    config: str = "cpu-tiny",
    overrides: list[str] | None = None,
    threads: int = 1,
    window_steps: int = 3,
    timeout: float = 600,
) -> dict:
    """Train ``reference``'s config into ``run_dir`` through one SIGKILL per entry of ``kinds`` (see the
    module docstring), resuming after each, then to the end; compare with the reference
    (:func:`compare_runs`).

    Each kill falls within the job's next ``window_steps`` steps (or its start-up), so every job moves the run
    on by at most that much. Returns ``{"kills": [Kill...], "identical", "problems", "finished_early",
    "seconds", "jobs"}``; a job that fails instead of being killed raises ``RuntimeError`` with its output.
    """
    run_dir = Path(run_dir)
    rng = random.Random(seed)
    steps = reference.steps
    overrides = [*(TINY_OVERRIDES if overrides is None else overrides), f"run.steps={steps}"]
    env = _env(threads)
    report = run_dir.parent / f".{run_dir.name}.moment.json"
    kills: list[Kill] = []
    t0 = time.monotonic()
    jobs, finished_early, waiting = 0, False, False
    # the shortest start-up seen so far: a start-up kill comes before the first step
    startup = reference.startup_s
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown kind of kill {kind!r}; choose from {', '.join(KINDS)}")
        before = _latest_step(run_dir)
        left = steps - before
        if left <= 0:  # the last kill came after the last save: only the final job is left
            finished_early = True
            break
        report.unlink(missing_ok=True)
        plan = None
        if kind == "save":
            k = rng.randint(1, min(window_steps, left))  # the job's k-th save (one per step)
            typical = reference.save_ticks[min(before + k, len(reference.save_ticks)) - 1]
            plan = {"kind": "save", "save": k, "tick": rng.randint(1, typical), "report": str(report)}
        elif kind == "torn":
            plan = {
                "kind": "torn",
                "line": rng.randint(1, min(window_steps, left)),
                "cut": rng.uniform(0.05, 0.95),
                "report": str(report),
            }
        job = _Job(_cmd(config, overrides, run_dir), env, plan)
        jobs += 1
        moment = None
        if kind == "startup":
            delay = rng.uniform(0, startup)
            try:
                job.proc.wait(delay)
            except subprocess.TimeoutExpired:
                job.kill()
                moment = f"{delay:.2f} s after the job started"
        elif kind == "training":
            delay = rng.uniform(0, min(window_steps, left) * reference.step_s)
            while not job.stepped.wait(0.05) and job.proc.poll() is None:
                if job.seconds > timeout:
                    break
            if job.proc.poll() is None:
                time.sleep(delay)
                job.kill()
                moment = f"{delay:.3f} s after the job's first step"
        rc = job.wait(timeout)
        if job.first_step_s is not None:
            startup = min(startup, job.first_step_s)
        if waiting:  # this job is the one that resumed after the previous kill
            kills[-1].resumed_at, waiting = _resumed_at(job.lines), False
        if rc == 0:
            finished_early = True  # the run ended before the kill came
            break
        if rc != -signal.SIGKILL:
            raise RuntimeError(f"a job failed (exit {rc}) instead of being killed ({kind}):\n{job.tail()}")
        if moment is None:
            moment = json.loads(report.read_text().splitlines()[-1])["moment"] if report.is_file() else kind
        kills.append(
            Kill(
                kind,
                moment,
                round(job.seconds, 2),
                before,
                _latest_step(run_dir),
                _last_logged(job.lines),
                (job.lines or [""])[-1][:100],
            )
        )
        waiting = True
    report.unlink(missing_ok=True)
    # The last job, unharmed, as a requeued job would run (after a run that ended, it resumes and trains
    # nothing).
    job = _Job(_cmd(config, overrides, run_dir), env)
    jobs += 1
    rc = job.wait(timeout)
    if rc != 0:
        raise RuntimeError(f"the final job failed (exit {rc}):\n{job.tail()}")
    if waiting:
        kills[-1].resumed_at = _resumed_at(job.lines)
    problems = compare_runs(reference.run_dir, run_dir, steps)
    return {
        "kills": kills,
        "identical": not problems,
        "problems": problems,
        "finished_early": finished_early,
        "jobs": jobs,
        "seconds": time.monotonic() - t0,
    }


def _last_logged(lines: list[str]) -> int:
    steps = [int(line.split()[1]) for line in lines if line.startswith("step ") and line.split()[1].isdigit()]
    return steps[-1] if steps else 0


def _resumed_at(lines: list[str]) -> int | None:
    """The step a job started from (0: from scratch), read from the trainer's ``..., steps S->N`` line; None
    when the job died before printing it."""
    for line in lines:
        m = re.search(r", steps (\d+)->\d+$", line)
        if m:
            return int(m.group(1))
    return None


def tally(trials: list[dict]) -> dict:
    """Counts over trials: kills by kind, what the jobs resumed from, and whether every run came out
    identical."""
    kills = [k for t in trials for k in t["kills"]]
    # A timed kill whose job's last line logged a step fell between that step and the end of its save (or
    # evaluation).
    after_step_line = sum(
        k.kind in ("startup", "training") and k.last_line.startswith("step ") for k in kills
    )
    return {
        "kills": len(kills),
        "by_kind": {kind: sum(k.kind == kind for k in kills) for kind in KINDS},
        "inside_a_save": sum(k.kind == "save" for k in kills),
        "timed_kills_between_a_step_and_its_save": after_step_line,
        "next_job_started_from_scratch": sum(k.resumed_at == 0 for k in kills),
        "next_job_killed_before_resuming": sum(k.resumed_at is None for k in kills),
        "steps_trained_again": sum(
            max(0, k.last_logged - k.resumed_at) for k in kills if k.resumed_at is not None
        ),
        "runs": len(trials),
        "runs_identical": sum(t["identical"] for t in trials),
        "jobs": sum(t["jobs"] for t in trials),
        "detail": [asdict(k) for k in kills],
    }
