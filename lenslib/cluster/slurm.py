"""``lens submit --slurm``: a training notebook as a SLURM batch job (or a job array for a sweep).

The job script runs ``lens run-notebook`` on the job's first node; the notebook starts ``torchrun`` on
every node through ``srun`` (:mod:`lenslib.cluster.launch`). The script is built from what was measured
on a real cluster (and tested against a local SLURM cluster in ``tests/test_cluster_slurm.py``):

* ``--signal=USR1@120`` warns the *srun tasks* (torchrun, which forwards to the workers) two minutes
  before the time limit; under ``proctrack/cgroup`` nothing else receives it.
* A signal that reaches the batch shell instead (``scancel -b``, ``--signal=B:USR1@…``, SIGTERM at
  preemption) would be deferred while a foreground command runs, so ``lens run-notebook`` runs in the
  background and the shell ``wait``\\ s in a loop; its trap only touches the run's preempt flag, which
  the notebook's launcher turns into a save-and-exit.
* After a save the notebook stops with ``RunPreempted``, ``lens run-notebook`` exits with the requeue code
  (75) and the script runs ``scontrol requeue`` (``--requeue``, ``--open-mode=append``): the next start
  resumes from the checkpoint in the same run folder.
* Every value that reaches a shell line is quoted with :func:`shlex.quote` and parameters travel as one
  JSON document, so a run name like ``x $(rm -rf ~)`` stays a name. ``#SBATCH`` values are quoted too
  (sbatch parses them shell-style) and the job name is reduced to ``[A-Za-z0-9._+-]``.

A sweep is a YAML list of parameter sets; element *i* runs in ``ROOT/run-i`` as array task *i*.

Used in chapter 7; tested against a real single-node cluster (``.ci/slurm-setup.sh``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lenslib.atomic import write_text_atomic
from lenslib.train.signals import REQUEUE_EXIT_CODE

from .notebook import prepare
from .params import ParameterError, check_parameters, load_notebook, notebook_parameters

__all__ = [
    "SlurmResources",
    "SlurmError",
    "render_sbatch",
    "submit",
    "submit_notebook",
    "job_states",
    "wait_for_job",
    "load_sweep",
    "sweep_run_dirs",
    "TERMINAL_STATES",
]

TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
}
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_PLAIN = re.compile(r"^[A-Za-z0-9_.,:+=@/-]+$")


class SlurmError(RuntimeError):
    """sbatch/scontrol failed, a job did not finish in time, or a resource request is malformed."""


@dataclass
class SlurmResources:
    """What the job asks SLURM for. ``nproc_per_node`` defaults to the GPUs per node (1 without GPUs)."""

    nodes: int = 1
    gpus_per_node: int = 0
    nproc_per_node: int | None = None
    cpus_per_task: int | None = None  # CPUs of the one task per node (default: nproc_per_node)
    mem: str | None = None  # e.g. "480G"; None: the partition's default
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    signal_seconds: int = 120  # USR1 this long before the time limit
    requeue: bool = True
    max_requeues: int = 50  # give up (exit 75) after this many restarts
    array_parallel: int | None = None  # at most this many array tasks at once (``--array=0-N%K``)
    extra: list[str] = field(default_factory=list)  # further sbatch options, e.g. ["--exclusive"]

    def procs(self) -> int:
        return self.nproc_per_node or (self.gpus_per_node if self.gpus_per_node > 0 else 1)

    def check(self) -> None:
        for name in ("nodes", "max_requeues"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "nodes" else 0):
                raise SlurmError(
                    f"{name}={value!r} must be a {'positive' if name == 'nodes' else 'non-negative'} integer."
                )
        for name in ("gpus_per_node", "nproc_per_node", "cpus_per_task", "array_parallel"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or value < (0 if name == "gpus_per_node" else 1)
            ):
                raise SlurmError(f"{name}={value!r} must be a positive integer.")
        if not _TIME.match(self.time):
            raise SlurmError(
                f"time={self.time!r} is not a SLURM time: use MM, HH:MM:SS or D-HH:MM:SS (e.g. 2-00:00:00)."
            )
        if self.signal_seconds < 0:
            raise SlurmError(f"signal_seconds={self.signal_seconds} must be >= 0.")
        for name in ("mem", "partition", "account", "qos", "constraint"):
            value = getattr(self, name)
            if value is not None and not _PLAIN.match(value):
                raise SlurmError(
                    f"{name}={value!r} contains characters SLURM does not accept in that option."
                )
        for (
            opt
        ) in self.extra:  # each becomes one `#SBATCH` line: a line break would add directives of its own
            if not isinstance(opt, str) or any(ord(c) < 32 or ord(c) == 127 for c in opt):
                raise SlurmError(
                    f"sbatch option {opt!r} contains a newline or another control character; give one "
                    "option per --sbatch-arg, on one line."
                )
            if not opt.startswith("-"):
                raise SlurmError(
                    f"sbatch option {opt!r} is not an option: give it as --name=value (e.g. --exclusive)."
                )


def _job_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "lens"
    return clean[:64]


def _check_path(path: Path, what: str) -> str:
    text = str(path)
    if "\n" in text or "%" in text:
        raise SlurmError(
            f"{what} {text!r} contains a newline or '%', which SLURM's output paths cannot hold; rename it."
        )
    return text


def _sbatch_lines(res: SlurmResources, name: str, output: str, workdir: str, array: int | None) -> list[str]:
    q = shlex.quote
    lines = [
        f"#SBATCH --job-name={q(_job_name(name))}",
        f"#SBATCH --nodes={res.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={res.cpus_per_task or res.procs()}",
    ]
    if res.gpus_per_node > 0:
        lines.append(f"#SBATCH --gpus-per-node={res.gpus_per_node}")
    if res.mem:
        lines.append(f"#SBATCH --mem={q(res.mem)}")
    lines.append(f"#SBATCH --time={res.time}")
    for opt in ("partition", "account", "qos", "constraint"):
        if getattr(res, opt):
            lines.append(f"#SBATCH --{opt}={q(getattr(res, opt))}")
    if res.signal_seconds:
        lines.append(f"#SBATCH --signal=USR1@{res.signal_seconds}")
    lines.append("#SBATCH --requeue" if res.requeue else "#SBATCH --no-requeue")
    lines += ["#SBATCH --open-mode=append", f"#SBATCH --output={q(output)}", f"#SBATCH --chdir={q(workdir)}"]
    if array is not None:
        lines.append(
            f"#SBATCH --array=0-{array - 1}" + (f"%{res.array_parallel}" if res.array_parallel else "")
        )
    for opt in res.extra:
        lines.append(f"#SBATCH {q(opt)}")
    return lines


def render_sbatch(
    notebook: str | Path,
    run_dirs: list[str | Path],
    parameter_sets: list[dict],
    resources: SlurmResources,
    *,
    name: str | None = None,
    python: str | None = None,
    workdir: str | Path | None = None,
    run_notebook_args: list[str] | None = None,
    prologue: list[str] | None = None,
) -> str:
    """The batch script; one run folder and parameter set per job (several: a job array).

    ``prologue`` lines (e.g. ``module load cuda``) are copied verbatim: they are the user's own shell.
    """
    resources.check()
    if not run_dirs or len(run_dirs) != len(parameter_sets):
        raise SlurmError("give one run folder per parameter set.")
    q = shlex.quote
    run_dirs = [Path(r).resolve() for r in run_dirs]
    for r in run_dirs:
        _check_path(r, "run folder")
    notebook = Path(notebook).resolve()
    workdir = Path(workdir or Path.cwd()).resolve()
    python = python or sys.executable
    array = len(run_dirs) if len(run_dirs) > 1 else None
    if array is None:
        output = str(run_dirs[0] / "slurm-%j.out")
        name = name or run_dirs[0].name
    else:
        root = run_dirs[0].parent
        if any(r.parent != root or r.name != f"run-{i}" for i, r in enumerate(run_dirs)):
            raise SlurmError("array run folders must be ROOT/run-0, ROOT/run-1, ... (see sweep_run_dirs).")
        output = str(root / "run-%a" / "slurm-%A_%a.out")
        name = name or root.name
    _check_path(workdir, "working directory")
    extra = list(run_notebook_args or [])

    cases = []
    for i, (run_dir, params) in enumerate(zip(run_dirs, parameter_sets)):
        doc = json.dumps(params, sort_keys=True, default=str)
        cases.append(f"    {i}) RUN_DIR={q(str(run_dir))}; PARAMS={q(doc)} ;;")

    body = [
        "#!/bin/bash",
        "# Generated by `lens submit --slurm`: runs a training notebook with `lens run-notebook`.",
        *_sbatch_lines(resources, name, output, str(workdir), array),
        "",
        "set -u",
        f"LENS_PYTHON={q(python)}",
        f"NOTEBOOK={q(str(notebook))}",
        f"REQUEUE_EXIT_CODE={REQUEUE_EXIT_CODE}",
        f"MAX_REQUEUES={resources.max_requeues}",
        'case "${SLURM_ARRAY_TASK_ID:-0}" in',
        *cases,
        '    *) echo "lens: no parameter set for array task ${SLURM_ARRAY_TASK_ID:-0}" >&2; exit 2 ;;',
        "esac",
        'export LENS_RUN_DIR="$RUN_DIR"',
        'export LENS_PREEMPT_FLAG="$RUN_DIR/.preempt"',
        "export PYTHONUNBUFFERED=1",
        "# torchrun's rendezvous (several nodes) lives on the job's first node",
        'export LENS_MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" | head -n 1)"',
        "export LENS_MASTER_PORT=$(( 20000 + ${SLURM_JOB_ID:-0} % 20000 ))",
        *(prologue or []),
        'echo "lens: job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname) '
        'at $(date -u +%FT%TZ): $RUN_DIR"',
        "",
        "# A signal to this shell (scancel -b, --signal=B:..., SIGTERM) would wait for a foreground command;",
        "# run-notebook runs in the background and the trap only asks the notebook to save and stop.",
        "interrupted=0",
        "trap 'interrupted=1; touch \"$LENS_PREEMPT_FLAG\"' USR1 TERM",
        '"$LENS_PYTHON" -m lenslib.cli run-notebook "$NOTEBOOK" "$RUN_DIR" -y "$PARAMS"'
        + "".join(f" {q(a)}" for a in extra)
        + " &",
        "child=$!",
        "while :; do",
        "    interrupted=0",
        '    wait "$child"; rc=$?',
        "    [[ $interrupted == 1 ]] || break      # woken by the trap: keep waiting for the child",
        "done",
        'if [[ $rc == "$REQUEUE_EXIT_CODE" ]]; then',
        "    if (( ${SLURM_RESTART_COUNT:-0} >= MAX_REQUEUES )); then",
        '        echo "lens: preempted after $MAX_REQUEUES requeues; giving up (the checkpoint is kept)" >&2',
        '        exit "$rc"',
        "    fi",
        '    echo "lens: checkpoint saved; requeueing job ${SLURM_JOB_ID}"',
        '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
        "fi",
        'exit "$rc"',
        "",
    ]
    return "\n".join(body)


def _sbatch() -> str:
    path = shutil.which("sbatch")
    if path is None:
        raise SlurmError(
            "sbatch not found: run this on a SLURM login node (or start the local test cluster with "
            "`.ci/slurm-setup.sh start`)."
        )
    return path


def submit(script: str, script_path: str | Path) -> str:
    """Write ``script`` (atomically) and ``sbatch`` it; returns the job id."""
    script_path = Path(script_path)
    write_text_atomic(script_path, script)
    out = subprocess.run([_sbatch(), "--parsable", str(script_path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SlurmError(f"sbatch failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip().split(";")[0]


_FIELD = re.compile(r"(\S+?)=(.*?)(?= \S+?=|$)")


def job_states(job_id: str) -> list[dict]:
    """``scontrol show job -o`` for a job (one dict per array task); works without accounting."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SlurmError(f"scontrol show job {job_id}: {out.stderr.strip() or out.stdout.strip()}")
    return [dict(_FIELD.findall(line.strip())) for line in out.stdout.splitlines() if line.strip()]


def wait_for_job(job_id: str, timeout: float = 3600, poll: float = 0.5, expect_tasks: int = 1) -> list[dict]:
    """Poll ``scontrol`` until every task of ``job_id`` is finished; returns their records.

    A requeued job passes through PENDING again and is waited for. ``sbatch --wait`` polls every ~10 s;
    this polls every ``poll`` seconds.
    """
    deadline = time.time() + timeout
    states: list[dict] = []
    while time.time() < deadline:
        states = job_states(job_id)
        tasks = [
            s for s in states if "_" not in s.get("ArrayTaskId", "") and "-" not in s.get("ArrayTaskId", "")
        ]
        if len(tasks) >= expect_tasks and all(s.get("JobState") in TERMINAL_STATES for s in tasks):
            return tasks
        time.sleep(poll)
    summary = ", ".join(f"{s.get('JobId')}={s.get('JobState')}" for s in states)
    raise SlurmError(f"job {job_id} did not finish within {timeout:.0f} s ({summary}).")


# --------------------------------------------------------------------------------------------------
# Sweeps and the whole submit step
# --------------------------------------------------------------------------------------------------


def load_sweep(path: str | Path) -> list[dict]:
    """A YAML list of parameter sets (mappings). Lists are not expanded into grids: write every element."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, list) or not data or not all(isinstance(x, dict) for x in data):
        raise SlurmError(
            f"sweep file {path} must be a non-empty YAML list of parameter mappings (- lr: 1e-3 ...)."
        )
    return data


def sweep_run_dirs(root: str | Path, n: int) -> list[Path]:
    root = Path(root).resolve()
    return [root / f"run-{i}" for i in range(n)]


@dataclass
class Submitted:
    job_id: str | None
    script: str
    script_path: Path | None
    run_dirs: list[Path]


def submit_notebook(
    notebook: str | Path,
    run_dir: str | Path,
    parameters: dict,
    resources: SlurmResources,
    *,
    sweep: list[dict] | None = None,
    name: str | None = None,
    dry_run: bool = False,
    python: str | None = None,
    workdir: str | Path | None = None,
    run_notebook_args: list[str] | None = None,
    prologue: list[str] | None = None,
) -> Submitted:
    """Validate every parameter set (exactly as ``lens run-notebook`` will), render, and submit.

    ``nodes`` and ``nproc_per_node`` come from ``resources`` and are passed to the notebook when its
    parameters cell has them. With ``sweep``, element *i* (merged over ``parameters``) runs in
    ``RUN_DIR/run-i``. ``dry_run`` returns the script without writing or submitting anything.
    """
    declared = notebook_parameters(load_notebook(notebook))
    sets = [dict(parameters, **element) for element in (sweep or [{}])]
    for params in sets:
        for key, value in (("nodes", resources.nodes), ("nproc_per_node", resources.procs())):
            if key in params and params[key] != value:
                raise SlurmError(
                    f"parameter {key}={params[key]!r} contradicts the job's {key}={value}; give it once."
                )
            if key in declared:
                params[key] = value
    run_dirs = sweep_run_dirs(run_dir, len(sets)) if sweep else [Path(run_dir).resolve()]
    for i, (rd, params) in enumerate(zip(run_dirs, sets)):
        try:
            if dry_run:  # check without writing anything
                check_parameters(
                    declared, dict(params, **({"run_dir": str(rd)} if "run_dir" in declared else {}))
                )
            else:
                prepare(notebook, rd, params)
        except ParameterError as err:
            if not sweep:
                raise
            raise ParameterError(f"sweep element {i} ({json.dumps(sweep[i], default=str)}): {err}") from None
    script = render_sbatch(
        notebook,
        run_dirs,
        sets,
        resources,
        name=name,
        python=python,
        workdir=workdir,
        run_notebook_args=run_notebook_args,
        prologue=prologue,
    )
    if dry_run:
        return Submitted(None, script, None, run_dirs)
    root = Path(run_dir).resolve()
    if sweep:
        write_text_atomic(root / "sweep.yaml", yaml.safe_dump(sets, sort_keys=True))
    script_path = root / "submit.sbatch"
    job_id = submit(script, script_path)
    return Submitted(job_id, script, script_path, run_dirs)
