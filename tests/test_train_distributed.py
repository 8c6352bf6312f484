"""The same trainer under ``torchrun --nproc_per_node 2`` on CPU (gloo): DDP, FSDP2, DCP resharding,
preemption.

Three torchrun jobs (each costs ~10-25 s of process start-up on 2 cores), gloo timeouts of 60 s:

* DDP through ``lens train --nproc-per-node 2`` with stage-2 style mixed resolution (each rank draws its
  own bucket every step); SIGUSR1 to that job makes every rank save at the same step and the job exit with
  the requeue code 75;
* FSDP2 (``fully_shard`` per block + root) with bf16 mixed precision and activation checkpointing; its
  sharded checkpoint (one safetensors file per rank) is loaded by one process, both directly and by a
  resumed single-process training run;
* a SIGKILLed torchrun launcher: its orphaned workers get SIGTERM from the kernel (PR_SET_PDEATHSIG),
  save and exit instead of training on.
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
#: ``lenslib.train`` in two torchrun workers on this machine.
TORCHRUN_TRAIN = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc-per-node",
    "2",
    "-m",
    "lenslib.train",
]
TINY = [
    "--config",
    "cpu-tiny",
    "optim.global_batch=4",
    "optim.micro_batch=2",
    *TINY_MODEL,
    "eval.every=0",
    "run.log_every=1",
    "run.progress=log",
    "dist.timeout_s=60",
]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _steps_logged(run: Path) -> int:
    f = run / "metrics.jsonl"
    return len(f.read_text().splitlines()) if f.is_file() else 0


@pytest.fixture(scope="module")
def ddp_preempted(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [
        sys.executable,
        "-m",
        "lenslib",
        "train",
        "--nproc-per-node",
        "2",
        *TINY,
        "run.steps=1000",
        "run.save_every=0",
        f"run.out_dir={run}",
        "dist.strategy=ddp",
        "data.buckets={bases: [24, 32], batches: [3, 2], multiple: 8}",
        "optim.global_batch=null",
        "flow.mu_schedule=tokens",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and _steps_logged(run) < 2:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    proc.send_signal(signal.SIGUSR1)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return {"run": run, "rc": proc.returncode, "log": out}


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("fsdp") / "run"
    cmd = [
        *TORCHRUN_TRAIN,
        *TINY,
        "run.steps=3",
        f"run.out_dir={run}",
        "dist.strategy=fsdp",
        "dist.precision=bf16",
        "model.activation_checkpointing=true",
    ]
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return run


def test_sigusr1_makes_every_ddp_rank_save_and_exit_with_the_requeue_code(ddp_preempted):
    from lenslib.train.signals import REQUEUE_EXIT_CODE

    assert ddp_preempted["rc"] == REQUEUE_EXIT_CODE == 75, ddp_preempted["log"][-3000:]
    run = ddp_preempted["run"]
    marker = json.loads((run / "PREEMPTED").read_text())
    assert marker["signal"] == "SIGUSR1" and marker["exit_code"] == 75
    ck = run / "checkpoints" / f"step_{marker['step']:07d}"
    assert (run / "checkpoints" / "latest").read_text().strip() == ck.name
    # both ranks took part in the same save
    assert sorted(p.name for p in (ck / "rng").iterdir()) == [
        "rank_00000.safetensors",
        "rank_00001.safetensors",
    ]
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == marker["step"] >= 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == marker["step"] and all(0 < r["loss"] < 10 for r in rows)
    # mixed resolution: ranks trained different buckets within the same step
    assert all(len(r["rank_tokens"]) == 2 for r in rows)
    assert any(len(set(r["rank_tokens"])) > 1 for r in rows)


def _assemble_shards(ck: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Full tensors rebuilt by hand from the per-rank shard files and their offsets (independent of DCP)."""
    parts: dict[str, list] = {}
    for f in sorted(ck.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            offsets = json.loads(h.metadata()["DCP_SHARDING_INFO"])
            for k in h.keys():
                if k.startswith(prefix + "."):
                    parts.setdefault(k[len(prefix) + 1 :], []).append(
                        (offsets[k]["saved_offsets"], h.get_tensor(k))
                    )
    full = {}
    for k, chunks in parts.items():
        chunks.sort(key=lambda c: c[0])
        full[k] = torch.cat([t for _, t in chunks], dim=0) if chunks[0][1].dim() else chunks[0][1]
    return full


def test_fsdp2_checkpoint_is_sharded_and_loads_in_one_process(fsdp_run):
    from lenslib.model.vae import PixelCodec
    from lenslib.train import checkpoint as ckpt
    from lenslib.train.build import build_model
    from lenslib.train.config import load_config
    from lenslib.train.ema import EMA

    ck = fsdp_run / "checkpoints" / "step_0000003"
    shard_files = sorted(p.name for p in ck.glob("*.safetensors"))
    assert len(shard_files) == 2  # one per rank: nothing was gathered to write it
    losses = [json.loads(x)["loss"] for x in (fsdp_run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(0 < v < 10 for v in losses)

    class Sizes:  # the text encoder's shape, without loading it
        hidden_size, num_layers = 384, 3

    cfg = load_config(TINY[1], TINY[2:])
    model = build_model(cfg, PixelCodec(cfg.data.patch), Sizes())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ema = EMA(model, 0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = ckpt.load_checkpoint(ck, model, opt, ema)  # world size 1, no process group
    assert state["world_size"] == 2 and state["step"] == 3

    by_hand = _assemble_shards(ck, "model")
    sd = model.state_dict()
    assert set(by_hand) == set(sd)
    for k, v in sd.items():
        assert torch.equal(v, by_hand[k]), k
    assert any(not torch.equal(before[k], sd[k]) for k in sd)  # training moved the weights
    ema_by_hand = _assemble_shards(ck, "ema")
    for k, v in ema.state_dict().items():
        assert torch.equal(v, ema_by_hand[k]), k
    steps = {float(s["step"]) for s in opt.state.values()}
    assert steps == {3.0}
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_fsdp2_checkpoint_resumes_training_at_world_size_one(fsdp_run):
    cmd = [
        sys.executable,
        "-m",
        "lenslib.train",
        *TINY,
        "run.steps=4",
        f"run.out_dir={fsdp_run}",
        "dist.strategy=none",
    ]
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "step_0000003 at step 3" in p.stdout
    rows = [json.loads(x) for x in (fsdp_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    ck = fsdp_run / "checkpoints" / "step_0000004"
    assert json.loads((ck / "trainer_state.json").read_text())["world_size"] == 1


def _pids_with(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_workers_of_a_sigkilled_launcher_save_and_exit(tmp_path):
    # torchrun starts workers in their own sessions: without PR_SET_PDEATHSIG they would keep training.
    run = tmp_path / "orphans"
    cmd = [
        *TORCHRUN_TRAIN,
        *TINY,
        "run.steps=1000",
        "run.save_every=0",
        f"run.out_dir={run}",
    ]
    launcher = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and launcher.poll() is None and _steps_logged(run) < 2:
            time.sleep(0.1)
        assert launcher.poll() is None
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.time() + 90
        while time.time() < deadline and _pids_with(f"run.out_dir={run}"):
            time.sleep(0.2)
        assert not _pids_with(f"run.out_dir={run}"), "workers survived their launcher"
    finally:
        for pid in _pids_with(f"run.out_dir={run}"):  # never leave our own workers behind
            os.kill(pid, signal.SIGKILL)
    marker = json.loads((run / "PREEMPTED").read_text())
    assert marker["signal"] == "SIGTERM"
    ck = run / "checkpoints" / f"step_{marker['step']:07d}"
    assert sorted(p.name for p in (ck / "rng").iterdir()) == [
        "rank_00000.safetensors",
        "rank_00001.safetensors",
    ]


def test_wrap_model_compiles_in_place():
    """model.compile compiles the module itself (not a wrapper), so state-dict names stay official."""
    from lenslib.model.presets import get_config
    from lenslib.model.transformer import LensTransformer2DModel
    from lenslib.train.distributed import DistInfo, wrap_model

    model = LensTransformer2DModel(**get_config("cpu-tiny", num_layers=1))
    names = list(model.state_dict())
    wrapped = wrap_model(model, DistInfo(), compile=True)
    assert wrapped is model and model._compiled_call_impl is not None
    assert list(wrapped.state_dict()) == names
    assert (
        wrap_model(
            LensTransformer2DModel(**get_config("cpu-tiny", num_layers=1)), DistInfo()
        )._compiled_call_impl
        is None
    )
