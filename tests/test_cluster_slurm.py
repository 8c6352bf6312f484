"""`lens submit --slurm` against a real SLURM cluster (slurmctld + slurmd on localhost, see slurm_cluster.py).

Each test submits a real batch job that runs a training notebook through `lens run-notebook`, papermill
and torchrun under srun, then reads the run folder back: record, manifest, config, metrics, checkpoints.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from slurm_cluster import REPO_ROOT, slurm_cluster  # noqa: F401  (fixture)

from lenslib.cluster.slurm import SlurmResources, job_states, submit_notebook, wait_for_job

pytestmark = pytest.mark.slow

TRAIN_NB = REPO_ROOT / "lenslib" / "cluster" / "templates" / "train_run.md"
ECHO_NB = REPO_ROOT / "tests" / "fixtures" / "cluster" / "echo_notebook.md"
JOB_TIMEOUT = 900  # the machine is shared: generous waits, small workloads


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_until(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _attempt(run_dir: Path, n: int, status: str) -> dict | None:
    attempts = json.loads((run_dir / "run.json").read_text())["attempts"]
    return attempts[n] if len(attempts) > n and attempts[n]["status"] == status else None


def _record_errors(record: Path) -> list[str]:
    nb = nbformat.read(record, as_version=4)
    return [
        o.get("ename", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def _explain(run_dir: Path) -> str:
    logs = sorted(run_dir.glob("slurm-*.out")) + sorted(run_dir.glob("logs/*.log"))
    return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs)


def test_two_process_training_job(slurm_cluster, tmp_path):
    run_dir = tmp_path / "tiny-2proc"
    res = SlurmResources(nproc_per_node=2, cpus_per_task=2, time="15:00")
    sub = submit_notebook(
        TRAIN_NB, run_dir, {"preset": "cpu-tiny", "steps": 3, "save_every": 2, "micro_batch": 16}, res
    )
    (task,) = wait_for_job(sub.job_id, timeout=JOB_TIMEOUT)
    assert task["JobState"] == "COMPLETED", _explain(run_dir)
    assert task["ExitCode"] == "0:0"

    # the record: every cell ran, none failed, and the torchrun summary surfaced in the notebook
    record = run_dir / "run.ipynb"
    nb = nbformat.read(record, as_version=4)
    assert _record_errors(record) == []
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "torchrun exited with code 0" in text and "final step 3" in text
    assert nb.metadata["papermill"]["parameters"]["nproc_per_node"] == 2

    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["attempts"][0]["slurm"]["job_id"] == sub.job_id

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["run"]["steps"] == 3 and cfg["run"]["out_dir"] == str(run_dir.resolve())
    assert cfg["optim"]["micro_batch"] == 16

    metrics = _metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["samples"] == cfg["optim"]["global_batch"] for m in metrics)  # 2 ranks x 16
    assert (run_dir / "checkpoints" / "latest").read_text().strip().endswith("3")

    # torchrun ran as an srun step with two workers
    log = (run_dir / "logs" / "train-000.log").read_text()
    assert log.startswith("$ srun ") and "--nproc-per-node=2" in log
    assert "world size 2" in log
    assert (run_dir / "submit.sbatch").read_text().count("#SBATCH --signal=USR1@120") == 1


def test_job_array_of_two_parameter_sets(slurm_cluster, tmp_path):
    root = tmp_path / "sweep"
    sweep = [{"lr": 0.002, "steps": 2}, {"lr": 0.0005, "steps": 3}]
    res = SlurmResources(nproc_per_node=1, cpus_per_task=1, time="15:00")
    sub = submit_notebook(TRAIN_NB, root, {"preset": "cpu-tiny", "save_every": 0}, res, sweep=sweep)
    assert [p.name for p in sub.run_dirs] == ["run-0", "run-1"]
    tasks = wait_for_job(sub.job_id, timeout=JOB_TIMEOUT, expect_tasks=2)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
    for i, element in enumerate(sweep):
        run_dir = root / f"run-{i}"
        state = next(t for t in tasks if t["ArrayTaskId"] == str(i))
        assert state["JobState"] == "COMPLETED", _explain(run_dir)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == element["lr"] and cfg["run"]["steps"] == element["steps"]
        assert [m["step"] for m in _metrics(run_dir)] == list(range(1, element["steps"] + 1))
        manifest = json.loads((run_dir / "run.json").read_text())
        assert manifest["attempts"][-1]["slurm"]["array_task_id"] == str(i)
        assert manifest["attempts"][-1]["slurm"]["array_job_id"] == sub.job_id
        assert _record_errors(run_dir / "run.ipynb") == []
        assert list(run_dir.glob("slurm-*_%d.out" % i)), "each array task logs into its own run folder"


def test_preemption_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    """Two preemptions by the two delivery paths, then the run finishes at the configured step.

    1. ``scancel --signal=USR1``: reaches the srun task (torchrun), which forwards it to the workers;
    2. ``scancel -b --signal=USR1``: reaches only the batch shell, whose trap asks the notebook to stop.
    Each time every rank saves, the job exits through ``scontrol requeue`` and restarts from the checkpoint.
    """
    run_dir = tmp_path / "preempt"
    steps = 10
    res = SlurmResources(nproc_per_node=2, cpus_per_task=2, time="20:00")
    sub = submit_notebook(TRAIN_NB, run_dir, {"steps": steps, "save_every": 0, "micro_batch": 16}, res)
    job = sub.job_id

    def training_attempt(n):  # attempt n has logged at least one new step
        log = run_dir / "logs" / f"train-{n:03d}.log"
        if not log.is_file() or job_states(job)[0]["JobState"] != "RUNNING":
            return False
        done = [m["step"] for m in _metrics(run_dir)]
        return n == 0 and done or n > 0 and "resumed from" in log.read_text() and done[-1] > _saved[-1]

    _saved: list[int] = []
    for n, flags in enumerate((["--signal=USR1"], ["-b", "--signal=USR1"])):
        _wait_until(lambda: training_attempt(n), JOB_TIMEOUT, f"attempt {n} to train\n{_explain(run_dir)}")
        subprocess.run(["scancel", *flags, job], check=True)
        attempt = _wait_until(
            lambda: _attempt(run_dir, n, "preempted"), JOB_TIMEOUT, f"preemption {n} to be recorded"
        )
        assert attempt["exit_code"] == 75 and "RunPreempted" in attempt["error"]
        saved = int(attempt["error"].split("saved step ")[1].split()[0])
        assert 0 < saved < steps
        _saved.append(saved)

    (task,) = wait_for_job(job, timeout=JOB_TIMEOUT)
    assert task["JobState"] == "COMPLETED", _explain(run_dir)
    assert task["Restarts"] == "2"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert [a["status"] for a in manifest["attempts"]] == ["preempted", "preempted", "completed"]
    assert [a["slurm"].get("restart_count", "0") for a in manifest["attempts"]] == ["0", "1", "2"]
    # each restart resumed from the checkpoint the previous attempt saved, and the run reached its end
    for n, saved in enumerate(_saved, start=1):
        log = (run_dir / "logs" / f"train-{n:03d}.log").read_text()
        assert f"step_{saved:07d} at step {saved}" in log
    steps_logged = [m["step"] for m in _metrics(run_dir)]
    assert steps_logged[-1] == steps and sorted(set(steps_logged)) == list(range(1, steps + 1))
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{steps:07d}"
    assert sorted(p.name for p in (run_dir / "attempts").iterdir()) == ["run-000.ipynb", "run-001.ipynb"]
    assert _record_errors(run_dir / "run.ipynb") == []
    assert _record_errors(run_dir / "attempts" / "run-000.ipynb") == ["RunPreempted"]


def test_injected_names_cannot_run_shell_code(slurm_cluster, tmp_path):
    marker = tmp_path / "PWNED"  # the job's shell runs in tmp_path: any executed `touch PWNED` lands here
    evil = 'x\' "y" $(touch PWNED) `touch PWNED`; touch PWNED'
    run_dir = tmp_path / f"run {evil}"
    res = SlurmResources(time="05:00")
    sub = submit_notebook(ECHO_NB, run_dir, {"label": evil}, res, name=evil, workdir=tmp_path)
    (task,) = wait_for_job(sub.job_id, timeout=JOB_TIMEOUT)
    assert task["JobState"] == "COMPLETED", _explain(run_dir)
    assert json.loads((run_dir / "echo.json").read_text())["label"] == evil
    assert (run_dir / "run.ipynb").is_file()
    assert not marker.exists(), "a name or parameter was executed by the shell"
