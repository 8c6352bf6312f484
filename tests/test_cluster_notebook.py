"""`lens run-notebook`: validation before execution, the run folder, attempts, and the torchrun launcher."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import REPO_ROOT

from lenslib.cli import main
from lenslib.cluster.launch import RunPreempted, TrainingFailed, launch_training, torchrun_command
from lenslib.cluster.notebook import prepare, run_notebook
from lenslib.cluster.params import ParameterError, config_from_parameters, config_key

TRAIN_NB = REPO_ROOT / "lenslib" / "cluster" / "templates" / "train_run.md"
ECHO_NB = REPO_ROOT / "tests" / "fixtures" / "cluster" / "echo_notebook.md"


@pytest.mark.parametrize(
    "args, named",
    [
        (["-p", "preset", "lens-stage9"], "lens-stage9"),
        (["-p", "lr", "abc"], "lr"),
        (["-p", "learning_rate", "0.1"], "learning_rate"),
        (["-p", "eval_every", "often"], "eval_every"),
        (["-p", "nodes", "0"], "nodes"),
        (["-p", "nproc_per_node", "3"], "optim.global_batch"),  # 32 samples cannot split over 3 ranks x 32
    ],
)
def test_bad_parameter_fails_before_execution_naming_it(tmp_path, capsys, args, named):
    run_dir = tmp_path / "run"
    t0 = time.time()
    rc = main(["run-notebook", str(TRAIN_NB), str(run_dir), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert named in err, err
    assert not (run_dir / "run.ipynb").exists() and not (run_dir / "run.json").exists()  # nothing executed
    assert time.time() - t0 < 60


def test_unknown_parameter_suggests_the_close_name(tmp_path):
    with pytest.raises(ParameterError, match=r"unknown notebook parameter: stesp \(did you mean steps\?\)"):
        prepare(TRAIN_NB, tmp_path / "run", {"stesp": 3})


def test_notebook_only_parameter_is_type_checked_against_its_default(tmp_path):
    with pytest.raises(ParameterError, match="count='many'.*int"):
        prepare(ECHO_NB, tmp_path / "run", {"count": "many"})


def test_config_keys_follow_the_schema():
    assert config_key("lr") == "optim.lr"
    assert config_key("optim_lr") == "optim.lr"
    assert config_key("steps") == "run.steps"
    assert config_key("data_path") == "data.path"
    assert config_key("model_preset") == "model.preset"
    assert config_key("seed") == "run.seed"
    assert config_key("every") is None  # ema.every or eval.every: ambiguous, so not a config key
    assert config_key("label") is None
    assert config_key("preset") is None  # the config's name, not model.preset


def test_yaml_file_and_p_values_build_the_config(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("lr: 0.002\nsteps: 5\noverrides: ['optim.warmup_steps=7']\n")
    run_dir = tmp_path / "run"
    rc = main(
        ["run-notebook", str(TRAIN_NB), str(run_dir), "-y", str(params_file), "-p", "steps", "9", "--check"]
    )
    assert rc == 0
    prepared = nbformat.read(run_dir / ".lens" / "prepared.ipynb", as_version=4)
    injected = next(c for c in prepared.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "steps = 9" in injected.source and "lr = 0.002" in injected.source
    cfg = config_from_parameters(
        {
            "preset": "cpu-tiny",
            "lr": 0.002,
            "steps": 9,
            "overrides": ["optim.warmup_steps=7"],
            "run_dir": str(run_dir),
        }
    )
    assert (cfg.optim.lr, cfg.run.steps, cfg.optim.warmup_steps, cfg.run.out_dir) == (
        0.002,
        9,
        7,
        str(run_dir),
    )
    assert not (run_dir / "run.ipynb").exists()


def test_world_pool_is_the_world_presets_scene_pool_and_ignored_by_data_sets():
    """Chapter 4's ``world_pool``: part of the validated config for a world preset, so a re-run compares
    like with like."""
    assert config_key("world_pool") is None
    tiny = config_from_parameters({"preset": "cpu-tiny", "world_pool": 64}, for_training=False)
    assert tiny.data.num_scenes == 64
    assert (
        config_from_parameters({"preset": "cpu-tiny", "world_pool": 0}, for_training=False).data.num_scenes
        is None
    )
    stage1 = config_from_parameters(
        {"preset": "lens-stage1", "nodes": 16, "world_pool": 64}, for_training=False
    )
    assert stage1.data.source != "world" and stage1.data.num_scenes is None
    with pytest.raises(ParameterError, match="world_pool"):
        config_from_parameters({"preset": "cpu-tiny", "world_pool": -3}, for_training=False)


def test_paper_preset_validates_at_its_scale(tmp_path):
    # lens-stage1 at 16 nodes x 8 GPUs: global batch 3072 = 128 x 24, and it needs a data path
    with pytest.raises(ParameterError, match="data.path"):
        prepare(TRAIN_NB, tmp_path / "a", {"preset": "lens-stage1", "nodes": 16, "nproc_per_node": 8})
    inputs = {
        "data_path": "/data/lens/{000000..000009}.tar",
        "data_vae": "/models/lens/vae",
        "overrides": ["data.text_encoder_kwargs.path=/models/lens/text_encoder"],
    }
    with pytest.raises(ParameterError, match="data.vae"):
        prepare(
            TRAIN_NB,
            tmp_path / "a",
            {"preset": "lens-stage1", "nodes": 16, "nproc_per_node": 8, "data_path": inputs["data_path"]},
        )
    prep = prepare(
        TRAIN_NB, tmp_path / "b", {"preset": "lens-stage1", "nodes": 16, "nproc_per_node": 8, **inputs}
    )
    assert prep.config.optim.global_batch == 3072 and prep.config.grad_accum(128) == 1
    with pytest.raises(ParameterError, match="world size 96"):
        prepare(
            TRAIN_NB, tmp_path / "c", {"preset": "lens-stage1", "nodes": 12, "nproc_per_node": 8, **inputs}
        )


def test_resume_refuses_a_changed_config(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    from lenslib.train.config import to_yaml

    old = config_from_parameters(
        {"preset": "cpu-tiny", "lr": 0.001, "eval_every": 0, "run_dir": str(run_dir.resolve())}
    )
    (run_dir / "config.yaml").write_text(to_yaml(old))
    prepare(TRAIN_NB, run_dir, {"lr": 0.001})  # same config: fine
    with pytest.raises(ParameterError, match="optim.lr: 0.001 -> 0.002"):
        prepare(TRAIN_NB, run_dir, {"lr": 0.002})
    prepare(TRAIN_NB, run_dir, {"lr": 0.002}, allow_config_change=True)


def test_run_writes_record_and_manifest_and_keeps_earlier_attempts(tmp_path):
    run_dir = tmp_path / "echo"
    first = run_notebook(ECHO_NB, run_dir, {"label": "first", "count": 3})
    assert (first.status, first.exit_code) == ("completed", 0)
    assert json.loads((run_dir / "echo.json").read_text()) == {
        "label": "first",
        "count": 3,
        "factor": 0.5,
        "total": 1.5,
    }
    record = nbformat.read(run_dir / "run.ipynb", as_version=4)
    assert record.metadata["papermill"]["parameters"] == {
        "label": "first",
        "count": 3,
        "run_dir": str(run_dir),
    }
    assert yaml.safe_load((run_dir / "parameters.yaml").read_text())["label"] == "first"

    second = run_notebook(ECHO_NB, run_dir, {"label": "second", "fail": True})
    assert (second.status, second.exit_code) == ("failed", 1)
    assert "ValueError: asked to fail" in second.error
    manifest = json.loads((run_dir / "run.json").read_text())
    assert [a["status"] for a in manifest["attempts"]] == ["completed", "failed"]
    assert manifest["status"] == "failed"
    kept = nbformat.read(run_dir / "attempts" / "run-000.ipynb", as_version=4)
    assert kept.metadata["papermill"]["parameters"]["label"] == "first"
    failed = nbformat.read(run_dir / "run.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in failed.cells for o in c.get("outputs", []))


# -- the launcher, with a stand-in for torchrun (a process that behaves like the trainer on a signal) --------

FAKE_TRAINER = r"""
import json, os, signal, sys, time
run_dir = sys.argv[1]
def stop(signum, frame):
    with open(os.path.join(run_dir, "PREEMPTED"), "w") as f:
        json.dump({"step": 4, "signal": signal.Signals(signum).name, "checkpoint": "ckpt/step_4"}, f)
    sys.exit(1)  # torchrun's exit code after a forwarded signal
signal.signal(signal.SIGUSR1, stop)
for i in range(600):
    print(f"step {i}", flush=True)
    time.sleep(0.05)
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"run": {"out_dir": str(tmp_path)}}))
    return path


def test_launcher_turns_a_stop_request_into_run_preempted(tmp_path, monkeypatch):
    flag = tmp_path / ".preempt"
    monkeypatch.setenv("LENS_PREEMPT_FLAG", str(flag))

    def request_stop_once_training():  # like a scheduler's notice, arriving mid-run
        log = tmp_path / "logs" / "train-000.log"
        deadline = time.time() + 120
        while time.time() < deadline and not (log.is_file() and "step 3\n" in log.read_text()):
            time.sleep(0.05)
        flag.touch()

    threading.Thread(target=request_stop_once_training, daemon=True).start()
    with pytest.raises(RunPreempted, match="saved step 4 on SIGUSR1"):
        launch_training(
            _config(tmp_path),
            srun=False,
            echo=False,
            command=[sys.executable, "-c", FAKE_TRAINER, str(tmp_path)],
        )
    log = (tmp_path / "logs" / "train-000.log").read_text()
    assert log.startswith("$ ") and "step 3\n" in log


def test_launcher_failure_carries_return_code_and_log_tail(tmp_path):
    code = "import sys\nfor i in range(100): print('line', i)\nsys.exit(3)"
    with pytest.raises(TrainingFailed) as info:
        launch_training(
            _config(tmp_path), srun=False, echo=False, tail_lines=5, command=[sys.executable, "-c", code]
        )
    text = str(info.value)
    assert "code 3" in text and "line 99" in text and "line 95" in text and "line 94" not in text


def test_torchrun_command_single_node_and_rendezvous_on_first_node():
    one = torchrun_command("/r/config.yaml", nodes=1, nproc_per_node=2)
    assert (
        "--standalone" in one and "--nproc-per-node=2" in one and one[-2:] == ["--config", "/r/config.yaml"]
    )
    many = torchrun_command(
        "/r/config.yaml", nodes=16, nproc_per_node=8, master_addr="gpu-001", master_port=29400, rdzv_id="4242"
    )
    assert "--standalone" not in many
    assert {
        "--nnodes=16",
        "--nproc-per-node=8",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu-001:29400",
        "--rdzv-id=4242",
    } <= set(many)
    assert any(a.startswith("--signals-to-handle=") and "SIGUSR1" in a for a in many)


def test_a_parameters_line_papermill_cannot_read_is_reported(tmp_path):
    text = ECHO_NB.read_text().replace('label = "plain"', 'label = "plain"  # e.g. mode=fast')
    broken = tmp_path / "broken.md"
    broken.write_text(text)
    with pytest.raises(ParameterError, match="label"):
        prepare(broken, tmp_path / "run", {})


@pytest.mark.slow
def test_two_node_rendezvous_on_the_first_node(tmp_path):
    """Two torchrun launchers (two "nodes" on this machine) find each other at the c10d endpoint."""
    import os
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = torchrun_command(
        tmp_path / "config.yaml",
        nodes=2,
        nproc_per_node=1,
        master_addr="127.0.0.1",
        master_port=port,
        rdzv_id="probe",
        module="dist_probe",
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "tests" / "fixtures" / "cluster"), OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = sorted(line for out in outs for line in out.splitlines() if line.startswith("rank "))
    assert lines == ["rank 0 of 2 on node 0: sum 1", "rank 1 of 2 on node 1: sum 1"]


CHAPTER_4 = REPO_ROOT / "book" / "04_training.md"


@pytest.mark.parametrize(
    "args, named", [(["-p", "steps", "many"], "steps"), (["-p", "stpes", "10"], "stpes")]
)
def test_a_book_chapter_is_checked_against_its_own_parameters(tmp_path, capsys, args, named):
    assert main(["run-notebook", str(CHAPTER_4), str(tmp_path / "r"), *args]) == 2
    assert named in capsys.readouterr().err
    assert main(["run-notebook", str(CHAPTER_4), str(tmp_path / "r"), "-p", "steps", "10", "--check"]) == 0
