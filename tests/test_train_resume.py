"""Exact resume on CPU: N steps straight == k steps, kill -9, resume to N (weights, EMA, AdamW, loss curve).

Also: a job killed *while writing* a checkpoint leaves the previous one as ``latest`` and loadable, the
half-written folder is never used and is cleaned up; rotation keeps the last K; ``lens export`` writes
an official-layout ``transformer/`` folder that loads and reproduces the EMA weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lenslib.train.faults import TINY_MODEL

pytestmark = pytest.mark.slow  # real subprocess / torchrun jobs: ~1-2 minutes on 2 cores

REPO = Path(__file__).resolve().parents[1]

# A very small Lens transformer on 16x16 world images (16 tokens), 2 micro-batches per step.
TINY = [
    "--config",
    "cpu-tiny",
    "optim.global_batch=4",
    "optim.micro_batch=2",
    "optim.warmup_steps=2",
    *TINY_MODEL,
    "eval.every=3",
    "eval.num_images=2",
    "eval.num_steps=2",
    "run.log_every=1",
    "run.progress=log",
    "ema.decay=0.9",
]
N = 6


def _env():
    env = dict(
        os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO)
    )
    env.pop("WORLD_SIZE", None)
    return env


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lenslib.train", *TINY, f"run.out_dir={out}", *extra]


def _run(cmd, timeout=240) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def _tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


def _curve(run: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in rows]


def _kill_after_step_3(out: Path, *extra: str) -> Path:
    """Start a training job and SIGKILL it right after its step-3 checkpoint is published; its ``latest``
    file."""
    proc = subprocess.Popen(
        _train_cmd(out, *extra), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() == "step_0000003":
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.read_text().strip() == "step_0000003", (
        "the job ended before it could be killed after step 3"
    )
    return latest


# The crash-in-save job: SIGKILL itself in the middle of writing step 6 (after the tensors, before the
# trainer state / rename / latest pointer), i.e. a job killed during a checkpoint write.
CRASH_IN_SAVE = """
import os, signal, sys
from pathlib import Path
import lenslib.train.checkpoint.saving as ck
real = ck.write_json_atomic
def dying(path, data):
    path = Path(path)
    if path.name == "trainer_state.json" and path.parent.name == "step_0000006.tmp":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data)
ck.write_json_atomic = dying
from lenslib.train.cli import main_train
sys.exit(main_train(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    straight, broken = root / "straight", root / "broken"
    # 1. N steps in one go (saving every 2 steps, keeping the last 2).
    _run(_train_cmd(straight, f"run.steps={N}", "run.save_every=2", "run.keep_last=2"))

    # 2. The same run, killed with SIGKILL right after its step-3 checkpoint is published.
    latest = _kill_after_step_3(broken, f"run.steps={N}", "run.save_every=3")
    steps_logged_before_kill = len(_curve(broken))

    # 3. Resume; this job is killed while writing the step-6 checkpoint.
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASH_IN_SAVE,
            *TINY,
            f"run.out_dir={broken}",
            f"run.steps={N}",
            "run.save_every=3",
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    after_crash = {
        "latest": latest.read_text().strip(),
        "dirs": sorted(x.name for x in (broken / "checkpoints").iterdir()),
    }
    # 4. Resume again, to N.
    out = _run(_train_cmd(broken, f"run.steps={N}", "run.save_every=3"))
    return {
        "straight": straight,
        "broken": broken,
        "after_crash": after_crash,
        "resume_log": out.stdout,
        "logged_before_kill": steps_logged_before_kill,
    }


def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(runs):
    from lenslib.train import checkpoint as ckpt

    crash = runs["after_crash"]
    assert crash["latest"] == "step_0000003"
    assert "step_0000006.tmp" in crash["dirs"] and "step_0000006" not in crash["dirs"]
    # the final resume started from step 3 (not from the half-written 6) and cleaned the stale folder
    assert "resumed from" in runs["resume_log"] and "step_0000003 at step 3" in runs["resume_log"]
    names = sorted(x.name for x in (runs["broken"] / "checkpoints").iterdir())
    assert not any(n.endswith(".tmp") for n in names)
    assert ckpt.latest_checkpoint(runs["broken"]).name == "step_0000006"


def test_resumed_run_is_bit_identical_to_the_straight_run(runs):
    a = _tensors(runs["straight"] / "checkpoints" / "step_0000006")
    b = _tensors(runs["broken"] / "checkpoints" / "step_0000006")
    assert set(a) == set(b)
    kinds = {k.split(".")[0] for k in a}
    assert kinds == {"model", "ema", "optim"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the weights did train (and the EMA differs from the live weights)
    init_like = [k for k in a if k.startswith("model.") and k.endswith("img_in.weight")]
    assert init_like and not torch.equal(a[init_like[0]], a["ema." + init_like[0][6:]])


def test_loss_curve_is_identical_and_continuous(runs):
    a, b = _curve(runs["straight"]), _curve(runs["broken"])
    assert [s for s, *_ in a] == list(range(1, N + 1))
    assert a == b  # every step logged once, same loss, grad norm and lr
    assert runs["logged_before_kill"] >= 3


def test_a_job_resumed_at_its_last_step_reports_the_runs_loss_and_time(runs, tmp_path):
    import shutil

    from lenslib.train import load_config, train
    from lenslib.train.run_folder import run_totals

    run = shutil.copytree(runs["broken"], tmp_path / "run")
    curve = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in curve if "step_time_s" in r]
    totals = run_totals(run)  # the broken run took 3 jobs: each of its 6 steps counts once
    assert totals["steps"] == N and [r["step"] for r in steps] == list(range(1, N + 1))
    assert totals["final_loss"] == steps[-1]["loss"]
    assert totals["train_seconds"] == pytest.approx(sum(r["step_time_s"] for r in steps))
    args = [a for a in TINY if a not in ("--config", "cpu-tiny")]
    cfg = load_config("cpu-tiny", [*args, f"run.out_dir={run}", f"run.steps={N}", "run.save_every=3"])
    summary = train(cfg)  # nothing left to train
    assert summary["start_step"] == summary["step"] == N
    assert summary["final_loss"] == steps[-1]["loss"]
    assert run_totals(run) == totals


def test_trainer_state_carries_everything_for_resume(runs):
    ck = runs["straight"] / "checkpoints" / "step_0000006"
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["world_size"] == 1 and state["has_ema"]
    assert state["config"]["optim"]["global_batch"] == 4 and state["samples_seen"] == 24
    assert state["optimizer_param_groups"][0]["betas"] == [0.9, 0.999]
    with safe_open(str(ck / "rng" / "rank_00000.safetensors"), framework="pt") as h:
        assert {"torch", "numpy.keys"} <= set(h.keys())
        meta = h.metadata()
    assert {"python", "numpy"} <= set(meta)
    assert (runs["straight"] / "config.yaml").is_file()
    assert sorted(p.name for p in (runs["straight"] / "samples").iterdir()) == [
        "step_0000003.png",
        "step_0000006.png",
    ]


def test_rotation_keeps_the_last_k(runs):
    names = sorted(x.name for x in (runs["straight"] / "checkpoints").iterdir())
    assert names == ["latest", "step_0000004", "step_0000006"]


def test_rng_states_round_trip():
    import random

    import numpy as np

    from lenslib.train.checkpoint import rng_state, set_rng_state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    tensors, meta = rng_state()
    expect = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(tensors, meta)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expect


def test_export_writes_the_ema_as_an_official_transformer_folder(runs, tmp_path):
    from lenslib.model.transformer import LensTransformer2DModel
    from lenslib.train.cli import export

    folder = export(runs["straight"], tmp_path / "out")
    assert folder.name == "transformer" and (folder / "config.json").is_file()
    assert any(p.suffix == ".safetensors" for p in folder.iterdir())
    model = LensTransformer2DModel.from_pretrained(folder)
    ema = {
        k[4:]: v
        for k, v in _tensors(runs["straight"] / "checkpoints" / "step_0000006").items()
        if k.startswith("ema.")
    }
    sd = model.state_dict()
    assert set(sd) == set(ema)
    for k, v in sd.items():
        assert torch.equal(v, ema[k]), k


def test_compiled_run_trains_the_same_model(runs, tmp_path):
    """model.compile=true (torch.compile in place) keeps checkpoint names and follows the eager loss curve."""
    compiled = tmp_path / "compiled"
    out = _run(
        _train_cmd(compiled, "run.steps=3", "run.save_every=3", "eval.every=0", "model.compile=true"),
        timeout=400,
    )
    assert "torch.compile" in out.stdout + out.stderr
    eager_ckpt = runs["straight"] / "checkpoints" / "step_0000006"
    tensors = _tensors(compiled / "checkpoints" / "step_0000003")
    assert set(tensors) == set(_tensors(eager_ckpt)), "compiling changed the checkpoint's tensor names"
    eager, comp = _curve(runs["straight"])[:3], _curve(compiled)
    assert [r[0] for r in comp] == [1, 2, 3]
    for (_, le, ge, _), (_, lc, gc, _) in zip(eager, comp):
        assert lc == pytest.approx(le, rel=1e-3) and gc == pytest.approx(ge, rel=1e-2)


def test_data_workers_repeat_the_run_bit_for_bit(runs, tmp_path):
    """Batches built ahead by data.num_workers threads are the batches the loop would build: same curve, same
    weights."""
    ahead = tmp_path / "ahead"
    _run(_train_cmd(ahead, f"run.steps={N}", "run.save_every=2", "run.keep_last=2", "data.num_workers=2"))
    assert _curve(ahead) == _curve(runs["straight"])
    a, b = (
        _tensors(ahead / "checkpoints" / "step_0000006"),
        _tensors(runs["straight"] / "checkpoints" / "step_0000006"),
    )
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_is_logged_per_noise_band(runs):
    """Every step records its loss in t-bins (``loss_by_t``): where along the noise range the model still
    errs."""
    from lenslib.train.trainer import T_BIN_EDGES

    rows = [json.loads(x) for x in (runs["straight"] / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "step_time_s" in r]
    assert rows and all(len(r["loss_by_t"]) == len(T_BIN_EDGES) + 1 for r in rows)
    for (
        r
    ) in rows:  # the bins' sample-weighted mean is the step's loss (one micro-batch size, 2 micro-batches)
        seen = [v for v in r["loss_by_t"] if v is not None]
        assert seen and all(v >= 0 for v in seen)
        assert min(seen) <= r["loss"] + 1e-6 and max(seen) >= r["loss"] - 1e-6


def test_a_run_from_the_world_cache_resumes_bit_for_bit(tmp_path):
    """A finite pool read from the world cache (``data.num_scenes``): killed after step 3 and resumed, it ends
    with the weights, EMA, AdamW state and loss curve of the same run trained straight."""
    pool = ["data.num_scenes=10", f"data.path={tmp_path / 'world'}", f"run.steps={N}", "run.save_every=3"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    _run(_train_cmd(straight, *pool))  # builds the cache; the resumed run reads the same one
    assert len(list((tmp_path / "world").iterdir())) == 1
    _kill_after_step_3(broken, *pool)
    out = _run(_train_cmd(broken, *pool))
    assert "step_0000003 at step 3" in out.stdout
    assert _curve(broken) == _curve(straight)
    a, b = (
        _tensors(straight / "checkpoints" / "step_0000006"),
        _tensors(broken / "checkpoints" / "step_0000006"),
    )
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
