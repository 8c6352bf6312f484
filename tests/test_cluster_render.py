"""The sbatch script of `lens submit --slurm`, rendered and then *run by bash* with stand-ins for python and
scontrol: directives, literal passing of hostile names, the requeue decision, and the batch-shell trap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from lenslib.cli import main
from lenslib.cluster.slurm import SlurmError, SlurmResources, render_sbatch, sweep_run_dirs

TRAIN_NB = REPO_ROOT / "lenslib" / "cluster" / "templates" / "train_run.md"
EVIL = 'x\' "y" $(touch PWNED) `touch PWNED`; touch PWNED & echo $HOME'

STUB_PYTHON = """#!{python}
import json, os, sys, time
open(os.environ["STUB_DIR"] + "/started", "w").close()
time.sleep(float(os.environ.get("STUB_SLEEP", "0")))
with open(os.environ["STUB_DIR"] + "/argv.json", "w") as f:
    json.dump(sys.argv[1:], f)
sys.exit(int(os.environ.get("STUB_RC", "0")))
"""
STUB_SCONTROL = """#!/bin/bash
echo "$*" >> "$STUB_DIR/scontrol.log"
if [[ "$1 $2" == "show hostnames" ]]; then echo node-a; fi
"""


@pytest.fixture
def stubs(tmp_path):
    d = tmp_path / "stubs"
    d.mkdir()
    (d / "python").write_text(STUB_PYTHON.format(python=sys.executable))
    (d / "scontrol").write_text(STUB_SCONTROL)
    for p in d.iterdir():
        p.chmod(0o755)
    return d


def _run(script: str, tmp_path: Path, stubs: Path, wait=True, **env):
    path = tmp_path / "job.sh"
    path.write_text(script)
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update(PATH=f"{stubs}:{os.environ['PATH']}", STUB_DIR=str(stubs), SLURM_JOB_ID="77", **env)
    proc = subprocess.Popen(["bash", str(path)], cwd=tmp_path, env=full)
    return proc.wait(timeout=60) if wait else proc


def _render(tmp_path, stubs, params, run_dirs=None, **res):
    run_dirs = run_dirs or [tmp_path / f"run {EVIL}"]
    sets = params if isinstance(params, list) else [params]
    return render_sbatch(
        TRAIN_NB,
        run_dirs,
        sets,
        SlurmResources(**res),
        name=EVIL,
        python=str(stubs / "python"),
        workdir=tmp_path,
    )


def test_hostile_names_and_values_reach_run_notebook_literally(tmp_path, stubs):
    params = {"label": EVIL, "lr": 0.001, "overrides": ["run.name=a b"]}
    script = _render(tmp_path, stubs, params)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert _run(script, tmp_path, stubs) == 0
    argv = json.loads((stubs / "argv.json").read_text())
    assert argv[:5] == ["-m", "lenslib.cli", "run-notebook", str(TRAIN_NB), str(tmp_path / f"run {EVIL}")]
    assert argv[5] == "-y" and json.loads(argv[6]) == params
    assert not list(tmp_path.rglob("PWNED")), "the shell executed part of a name or value"
    assert "requeue" not in (stubs / "scontrol.log").read_text()


@pytest.mark.parametrize(
    "rc, restarts, expect_rc, requeued",
    [
        (75, "0", 0, True),  # preempted after a checkpoint: requeue and leave quietly
        (75, "50", 75, False),  # too many requeues: stop, keep the exit code
        (1, "0", 1, False),  # a failure is a failure
        (0, "0", 0, False),
    ],
)
def test_requeue_decision(tmp_path, stubs, rc, restarts, expect_rc, requeued):
    script = _render(tmp_path, stubs, {"lr": 0.001})
    assert _run(script, tmp_path, stubs, STUB_RC=str(rc), SLURM_RESTART_COUNT=restarts) == expect_rc
    assert ("requeue 77" in (stubs / "scontrol.log").read_text()) == requeued


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_to_the_batch_shell_asks_for_a_save_and_keeps_waiting(tmp_path, stubs, sig):
    run_dir = tmp_path / "run"
    script = _render(tmp_path, stubs, {"lr": 0.001}, run_dirs=[run_dir])
    run_dir.mkdir()
    proc = _run(script, tmp_path, stubs, wait=False, STUB_SLEEP="4", STUB_RC="0")
    deadline = time.time() + 30
    while not (stubs / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, sig)  # what `scancel -b --signal=USR1` / `--signal=B:USR1@T` / a TERM does
    t0 = time.time()
    while not (run_dir / ".preempt").exists() and time.time() - t0 < 2:
        time.sleep(0.02)
    assert (run_dir / ".preempt").exists(), "the trap ran only after the foreground command (deferred)"
    assert time.time() - t0 < 2 and proc.poll() is None  # the shell is still waiting for run-notebook
    assert proc.wait(timeout=60) == 0
    assert (stubs / "argv.json").exists()  # run-notebook was not killed: it finished its work


def test_paper_scale_directives_from_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "stage1"
    rc = main(
        [
            "submit",
            str(TRAIN_NB),
            str(run_dir),
            "-p",
            "preset",
            "lens-stage1",
            "-p",
            "data_path",
            "/data/lens/{000000..099999}.tar",
            "-p",
            "data_vae",
            "/models/lens/vae",
            "-y",
            '{"overrides": ["data.text_encoder_kwargs.path=/models/lens/text_encoder"]}',
            "--slurm",
            "--nodes",
            "16",
            "--gpus-per-node",
            "8",
            "--cpus-per-task",
            "96",
            "--time",
            "2-00:00:00",
            "--partition",
            "gpu",
            "--account",
            "lens",
            "--dry-run",
        ]
    )
    script = capsys.readouterr().out
    assert rc == 0
    for line in [
        "#SBATCH --nodes=16",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=96",
        "#SBATCH --time=2-00:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lens",
        "#SBATCH --signal=USR1@120",
        "#SBATCH --requeue",
        f"#SBATCH --output={run_dir}/slurm-%j.out",
    ]:
        assert line in script.splitlines(), line
    params = json.loads(script.split("PARAMS='")[1].split("'")[0])
    assert params["nodes"] == 16 and params["nproc_per_node"] == 8 and params["preset"] == "lens-stage1"
    assert not run_dir.exists()  # a dry run writes nothing
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_paper_scale_bad_world_size_fails_before_submitting(tmp_path, capsys):
    rc = main(
        [
            "submit",
            str(TRAIN_NB),
            str(tmp_path / "x"),
            "-p",
            "preset",
            "lens-stage1",
            "--slurm",
            "--nodes",
            "12",
            "--gpus-per-node",
            "8",
            "--dry-run",
            "-p",
            "data_path",
            "/d.tar",
        ]
    )
    assert rc == 2 and "world size 96" in capsys.readouterr().err


def test_sweep_is_a_job_array_with_one_run_folder_per_element(tmp_path, stubs):
    sets = [{"lr": 0.001}, {"lr": 0.002, "label": EVIL}]
    dirs = sweep_run_dirs(tmp_path / "sweep", 2)
    script = _render(tmp_path, stubs, sets, run_dirs=dirs, array_parallel=1)
    assert "#SBATCH --array=0-1%1" in script
    assert f"#SBATCH --output={tmp_path}/sweep/run-%a/slurm-%A_%a.out" in script
    assert _run(script, tmp_path, stubs, SLURM_ARRAY_TASK_ID="1") == 0
    argv = json.loads((stubs / "argv.json").read_text())
    assert argv[4] == str(dirs[1]) and json.loads(argv[6]) == sets[1]
    assert _run(script, tmp_path, stubs, SLURM_ARRAY_TASK_ID="2") == 2  # no such element


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"time": "two days"}, "time"),
        ({"partition": "gpu; rm -rf /"}, "partition"),
        ({"nodes": 0}, "nodes"),
    ],
)
def test_malformed_requests_are_refused(tmp_path, stubs, kwargs, message):
    with pytest.raises(SlurmError, match=message):
        _render(tmp_path, stubs, {}, **kwargs)


def test_percent_in_a_run_folder_is_refused(tmp_path, stubs):
    with pytest.raises(SlurmError, match="%"):
        _render(tmp_path, stubs, {}, run_dirs=[tmp_path / "100%"])


def test_submit_needs_a_scheduler(tmp_path, capsys):
    assert main(["submit", str(TRAIN_NB), str(tmp_path / "r")]) == 2
    assert "--slurm" in capsys.readouterr().err


def test_sweep_from_the_cli_validates_every_element(tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("- {lr: 0.001, steps: 5}\n- {lr: 0.002, steps: 7}\n")
    args = ["submit", str(TRAIN_NB), str(tmp_path / "s"), "--slurm", "--sweep", str(sweep), "--dry-run"]
    assert main(args) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in script and f"RUN_DIR={tmp_path}/s/run-1;" in script
    sweep.write_text("- {lr: 0.001}\n- {lr: fast}\n")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "sweep element 1" in err and "optim.lr" in err
