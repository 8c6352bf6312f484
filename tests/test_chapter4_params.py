"""Chapter 4 is the control plane of a real run:
`lens run-notebook book/04_training.md RUN_DIR -p preset ...`.

Validation happens before anything executes; a short cpu-tiny run leaves the record, metrics, samples and
checkpoints in RUN_DIR, and the same command on the same folder resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import re
import time

import nbformat
import pytest
import yaml
from conftest import REPO_ROOT

from lenslib.cli import main

CHAPTER_4 = REPO_ROOT / "book" / "04_training.md"

STAGE1_INPUTS = {  # what a cluster user's params.yaml holds (paths need not exist to validate)
    "data_path": "/data/lens-800m/{000000..099999}.tar",
    "data_vae": "/models/lens/vae",
    "overrides": [
        "data.text_encoder_kwargs.path=/models/lens/text_encoder",
        "data.text_encoder_kwargs.tokenizer_path=/models/lens/tokenizer",
    ],
}


def _outputs(record):
    return [o for c in record.cells for o in c.get("outputs", [])]


def test_stage1_at_16_nodes_validates_and_is_ready_to_launch(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(STAGE1_INPUTS))
    run_dir = tmp_path / "stage1"
    rc = main(
        [
            "run-notebook",
            str(CHAPTER_4),
            str(run_dir),
            "-p",
            "preset",
            "lens-stage1",
            "-p",
            "nodes",
            "16",
            "-y",
            str(params),
            "--check",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    prepared = nbformat.read(run_dir / ".lens" / "prepared.ipynb", as_version=4)
    injected = next(c for c in prepared.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'preset = "lens-stage1"' in injected.source and "nodes = 16" in injected.source
    assert f'run_dir = "{run_dir.resolve()}"' in injected.source
    assert not (run_dir / "run.ipynb").exists() and not (run_dir / "checkpoints").exists()  # nothing executed

    from lenslib.cluster.notebook import prepare

    prep = prepare(CHAPTER_4, run_dir, {"preset": "lens-stage1", "nodes": 16, **STAGE1_INPUTS})
    # the paper: global batch 3072 (= 128 GPUs x 24); on 16 single-process nodes that is 8 micro-batches of 24
    assert prep.config.optim.global_batch == 3072 and prep.config.grad_accum(16) == 8
    assert (
        prep.config.run.out_dir == str(run_dir.resolve())
        and prep.config.data.path == STAGE1_INPUTS["data_path"]
    )


def test_stage1_without_its_inputs_fails_naming_the_missing_key(tmp_path, capsys):
    rc = main(
        [
            "run-notebook",
            str(CHAPTER_4),
            str(tmp_path / "r"),
            "-p",
            "preset",
            "lens-stage1",
            "-p",
            "nodes",
            "16",
        ]
    )
    assert rc == 2 and "data.path" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, named",
    [
        (["-p", "preset", "lens-stage9"], "preset='lens-stage9'"),
        (["-p", "lr", "abc"], "parameter lr (config key optim.lr)"),
        (
            ["-p", "learning_rate", "0.1"],
            "unknown notebook parameter: learning_rate",
        ),  # not a parameter of the chapter
    ],
)
def test_bad_parameters_fail_before_execution_naming_the_key(tmp_path, capsys, args, named):
    run_dir = tmp_path / "run"
    t0 = time.time()
    rc = main(["run-notebook", str(CHAPTER_4), str(run_dir), "-p", "preset", "cpu-tiny", *args])
    err = capsys.readouterr().err
    assert rc == 2 and named in err, err
    assert not (run_dir / "run.ipynb").exists() and not (run_dir / "run.json").exists()
    assert time.time() - t0 < 30


def test_a_gpu_preset_on_this_machine_validates_then_stops_with_the_reason(tmp_path):
    """Executed here, lens-stage1 stops at 'Can this machine run it?': a failed record, nothing trained."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check would pass")
    from lenslib.cluster.notebook import run_notebook

    run_dir = tmp_path / "stage1"
    result = run_notebook(
        CHAPTER_4, run_dir, {"preset": "lens-stage1", "nodes": 16, **STAGE1_INPUTS}, log_output=False
    )
    assert (result.status, result.exit_code) == ("failed", 1)
    assert "RuntimeError" in result.error and "this machine cannot run it" in result.error
    assert "no CUDA GPU" in result.error and "SLURM allocation" in result.error
    assert (run_dir / "run.ipynb").is_file() and (run_dir / "config.yaml").is_file()
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["global_batch"] == 3072


def _steps(run_dir):
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_a_short_cpu_tiny_run_leaves_its_record_and_a_rerun_resumes(tmp_path, capsys):
    run_dir = tmp_path / "tiny"
    args = [
        "run-notebook",
        str(CHAPTER_4),
        str(run_dir),
        "-p",
        "steps",
        "4",
        "-p",
        "eval_every",
        "4",
        "-p",
        "stop_at",
        "2",
        "-p",
        "eval_lines",
        "1",
        "-p",
        "denoise_scenes",
        "4",
        "-p",
        "world_pool",
        "64",
    ]
    assert main(args) == 0, capsys.readouterr().err
    for name in ("run.ipynb", "run.json", "config.yaml", "parameters.yaml", "metrics.jsonl", "evals.jsonl"):
        assert (run_dir / name).is_file(), name
    assert _steps(run_dir) == [1, 2, 3, 4]
    assert (run_dir / "samples" / "step_0000004.png").is_file()
    assert (run_dir / "checkpoints" / "step_0000004" / "trainer_state.json").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["run"]["steps"] == 4 and config["run"]["out_dir"] == str(run_dir.resolve())

    # the record shows the preemption demo: torchrun's return code, the stop at a step >= 2, the resume
    record = nbformat.read(run_dir / "run.ipynb", as_version=4)
    text = "".join(o.get("text", "") for o in _outputs(record))
    assert "[lens] stop requested" in text and "preempted: True" in text
    stopped = int(re.search(r"resumed at step (\d+)", text).group(1))
    assert 2 <= stopped < 4
    assert "trained - untrained = " in text and "over 6 prompts" in text  # the suite score, one line per tag
    assert "4 held-out scenes x 5 noise levels x 2 models" in text  # the one-step denoising check
    assert (
        f"resumed from {run_dir.resolve()}/checkpoints/step_{stopped:07d} at step {stopped}"
        in (run_dir / "logs" / "train-001.log").read_text()
    )

    # the same command again: training resumes from the latest checkpoint (the finished step 4),
    # trains nothing twice
    assert main(args) == 0, capsys.readouterr().err
    manifest = json.loads((run_dir / "run.json").read_text())
    assert [a["status"] for a in manifest["attempts"]] == ["completed", "completed"]
    assert (run_dir / "attempts" / "run-000.ipynb").is_file()
    assert "at step 4" in (run_dir / "logs" / "train-002.log").read_text()
    assert _steps(run_dir) == [1, 2, 3, 4]
