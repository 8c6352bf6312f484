"""A trainer that cannot be fooled: resume is an identity check, checkpoints are verified, failures leave no
debris.

* a run folder's checkpoint continues only a run of the same config, up to ``RESUMABLE_KEYS`` (run length, LR
  schedule, logging, ...): another depth or patch size is refused naming the key and the fix, before the model
  or text encoder is built (``lens train`` exits 2);
* every checkpoint carries ``SHA256SUMS``; a flipped bit, a damaged safetensors header or a truncated
  ``trainer_state.json`` is found, reported loudly and the newest intact checkpoint resumed (``lens export``
  refuses a damaged checkpoint too);
* a torn last line in ``metrics.jsonl`` (what a kill mid-write leaves) is dropped and reported;
* a save that fails (a full disk) leaves no ``*.tmp`` behind and the previous checkpoint as ``latest``.

All in one process on a tiny run (2 blocks, 16x16 images, 4 samples a step): about 2 s per training call.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lenslib.paths import sha256_file
from lenslib.train.faults import TINY_MODEL

TINY = [  # pinned here, so the tests keep their meaning when cpu-tiny.yaml's recipe changes
    "data.patch=8",
    "optim.decay_ratio=0.0",
    "optim.global_batch=4",
    "optim.micro_batch=2",
    "optim.warmup_steps=2",
    *TINY_MODEL,
    "eval.every=0",
    "run.log_every=1",
    "run.progress=log",
    "ema.decay=0.9",
]


def _cfg(run: Path, *extra: str):
    from lenslib.train import load_config

    return load_config("cpu-tiny", [*TINY, f"run.out_dir={run}", *extra])


def _train(run: Path, *extra: str) -> dict:
    from lenslib.train import train

    return train(_cfg(run, *extra))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished 4-step run saved at steps 2 and 4 (never modified: tests work on copies)."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    _train(run, "run.steps=4", "run.save_every=2")
    return run


@pytest.fixture
def run(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "run"))


def _ck(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def _tensor_file(ck: Path) -> Path:
    (f,) = [p for p in ck.glob("*.safetensors")]
    return f


def _tensors(ck: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(_tensor_file(ck)), framework="pt") as h:
        return {k: h.get_tensor(k) for k in h.keys()}


def _flip_bytes(path: Path, n: int = 3) -> None:
    """Flip ``n`` bytes in the tensor data (after the safetensors header): a silent-corruption stand-in."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    for i in range(n):
        data[start + 97 + 1013 * i] ^= 0xFF
    path.write_bytes(bytes(data))


def _tmp_debris(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if ".tmp" in p.name)


def _steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


# --------------------------------------------------------------------------------------------------
# Resume is an identity check
# --------------------------------------------------------------------------------------------------


def test_changed_depth_is_refused_naming_the_key_before_anything_is_built(run, monkeypatch, capsys):
    from lenslib.train import trainer
    from lenslib.train.cli import EXIT_CONFIG_ERROR, main_train

    def never(*a, **k):
        raise AssertionError("the data source, codec and text encoder were built before the identity check")

    monkeypatch.setattr(trainer, "build_source", never)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    rc = main_train(
        ["--config", "cpu-tiny", *TINY, f"run.out_dir={run}", "run.steps=6", "model.kwargs.num_layers=1"]
    )
    err = capsys.readouterr().err
    assert rc == EXIT_CONFIG_ERROR == 2, err
    assert "model.kwargs.num_layers: 2 -> 1 (architecture)" in err
    assert "run.out_dir" in err and "run.resume=never" in err and "Traceback" not in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing touched


def test_changed_patch_is_refused_not_a_size_mismatch(run):
    from lenslib.train.config import ResumeMismatchError

    with pytest.raises(ResumeMismatchError, match=r"data\.patch: 8 -> 4 \(codec\)"):
        _train(run, "run.steps=6", "data.patch=4")


def test_a_changed_recipe_is_refused_and_never_starts_over(run):
    from lenslib.train.config import ResumeMismatchError

    with pytest.raises(
        ResumeMismatchError, match=r"optim\.weight_decay: 0\.0 -> 0\.1 \(optimizer\).*run\.seed: 0 -> 1"
    ):
        _train(run, "run.steps=6", "optim.weight_decay=0.1", "run.seed=1")
    summary = _train(run, "run.steps=5", "run.seed=1", "run.resume=never")  # the documented way out
    assert summary["start_step"] == 0 and _steps(run) == [1, 2, 3, 4, 5]


def test_allowed_changes_resume_and_are_logged(run, capsys):
    summary = _train(
        run,
        "run.steps=6",
        "optim.decay_ratio=0.5",
        "optim.min_lr_factor=0.1",
        "optim.lr=5e-4",
        "run.log_every=2",
        "run.save_every=1",
        "eval.num_steps=3",
        "dist.timeout_s=60",
    )
    out = capsys.readouterr().out
    assert summary["start_step"] == 4 and summary["step"] == 6
    assert "changed since the checkpoint" in out and "optim.decay_ratio 0.0 -> 0.5" in out
    assert "run.steps 4 -> 6" in out
    assert _steps(run) == [1, 2, 3, 4, 5, 6]


def test_resumable_keys_are_one_documented_list():
    from lenslib.train.config import RESUMABLE_KEYS, TrainConfig, resume_differences, to_dict

    sections = to_dict(TrainConfig())
    for key, why in RESUMABLE_KEYS.items():
        section, name = key.split(".", 1) if "." in key else (key, None)
        assert section in sections and (name is None or name.split(".")[0] in sections[section]), key
        assert why
    for key in (
        "run.steps",
        "optim.lr",
        "optim.decay_ratio",
        "optim.decay_type",
        "optim.min_lr_factor",
        "run.log_every",
        "run.save_every",
        "eval",
    ):
        assert key in RESUMABLE_KEYS
    saved = to_dict(TrainConfig())
    del saved["optim"]["decay_ratio"]  # a checkpoint written before the key existed compares at its default
    saved["optim"]["a_key_since_removed"] = 1
    assert resume_differences(saved, TrainConfig()) == ([], [])
    deeper = TrainConfig()
    deeper.model.kwargs = {"num_layers": 2}
    ((key, old, new),), _ = resume_differences(saved, deeper)
    assert (key, repr(old), new) == ("model.kwargs.num_layers", "(unset)", 2)


def test_torchrun_launch_refuses_a_mismatched_run_before_starting_processes(run, monkeypatch, capsys):
    import subprocess

    from lenslib.train.cli import _cmd_train

    def never(*a, **k):
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(subprocess, "Popen", never)
    args = argparse.Namespace(
        config="cpu-tiny",
        overrides=[*TINY, f"run.out_dir={run}", "model.kwargs.num_layers=1"],
        nproc_per_node=2,
        shutdown_timeout=5,
        print_config=False,
    )
    assert _cmd_train(args) == 2
    assert "model.kwargs.num_layers: 2 -> 1" in capsys.readouterr().err


def test_the_built_model_must_match_the_checkpoints_model_config(run, monkeypatch):
    """Same config keys, but the preset's definition changed in the code: the resulting model config
    differs."""
    import lenslib.model.presets as presets
    from lenslib.train.config import ResumeMismatchError

    real = presets.get_config

    def changed(name, **kw):
        config = real(name, **kw)
        config["num_layers"] = 1
        return config

    monkeypatch.setattr(presets, "get_config", changed)
    with pytest.raises(ResumeMismatchError, match=r"num_layers: 2 -> 1"):
        _train(run, "run.steps=6")


def test_a_model_option_added_since_the_checkpoint_compares_at_its_default():
    from lenslib.train.config import ResumeMismatchError
    from lenslib.train.resume import check_model_config

    saved = {"num_layers": 2, "_diffusers_version": "0.1"}
    check_model_config(
        saved,
        {"num_layers": 2, "new_option": False, "_diffusers_version": "0.2"},
        "ck",
        {"new_option": False},
    )
    with pytest.raises(ResumeMismatchError, match=r"new_option: False -> True"):
        check_model_config(saved, {"num_layers": 2, "new_option": True}, "ck", {"new_option": False})
    with pytest.raises(ResumeMismatchError, match=r"other: \(unset\) -> 1"):
        check_model_config(saved, {"num_layers": 2, "other": 1}, "ck", {})


def test_load_checkpoint_refuses_a_model_with_other_tensors(base):
    from lenslib.model.transformer import LensTransformer2DModel
    from lenslib.train import checkpoint as ckpt

    state = ckpt.read_trainer_state(_ck(base, 4))
    config = {k: v for k, v in state["model_config"].items() if not k.startswith("_")}
    ckpt.load_checkpoint(_ck(base, 4), LensTransformer2DModel(**config), restore_rng=False)
    fewer = LensTransformer2DModel(**{**config, "num_layers": 1})
    with pytest.raises(ValueError, match="another model"):
        ckpt.load_checkpoint(_ck(base, 4), fewer, restore_rng=False)


# --------------------------------------------------------------------------------------------------
# Checkpoints carry checksums and are verified
# --------------------------------------------------------------------------------------------------


def test_every_checkpoint_file_has_its_sha256(base):
    from lenslib.train import checkpoint as ckpt

    ck = _ck(base, 4)
    lines = dict(reversed(line.split("  ", 1)) for line in (ck / "SHA256SUMS").read_text().splitlines())
    files = sorted(
        p.relative_to(ck).as_posix() for p in ck.rglob("*") if p.is_file() and p.name != "SHA256SUMS"
    )
    assert sorted(lines) == files and "trainer_state.json" in files and "rng/rank_00000.safetensors" in files
    assert all(lines[f] == sha256_file(ck / f) for f in files)
    check = ckpt.verify_checkpoint(ck)
    assert check.ok and check.verified and check.state["step"] == 4


def test_flipped_bytes_are_found_and_the_older_checkpoint_resumes(run, base, capsys):
    from lenslib.train import checkpoint as ckpt

    bad = _tensor_file(_ck(run, 4))
    _flip_bytes(bad)
    check = ckpt.verify_checkpoint(_ck(run, 4))
    assert not check.ok and any(bad.name in p and "SHA-256 differs" in p for p in check.problems)
    with pytest.raises(ckpt.DamagedCheckpointError, match=bad.name):
        ckpt.load_checkpoint(_ck(run, 4), torch.nn.Linear(1, 1), restore_rng=False)

    summary = _train(run, "run.steps=4", "run.save_every=2")
    err = capsys.readouterr().err
    assert summary["start_step"] == 2 and summary["step"] == 4
    assert summary["damaged_checkpoints"] == ["step_0000004"]
    assert "!! WARNING" in err and "step_0000004 is damaged" in err and "resuming from step_0000002" in err
    aside = run / "checkpoints" / "damaged" / "step_0000004"
    assert "SHA-256 differs" in (aside / "DAMAGED.txt").read_text()
    # steps 3-4 were trained again from the intact step 2: the same weights as the original step 4
    assert ckpt.verify_checkpoint(_ck(run, 4)).ok
    a, b = _tensors(_ck(run, 4)), _tensors(_ck(base, 4))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert _steps(run) == [1, 2, 3, 4]


def test_damaged_header_falls_back_to_the_older_checkpoint(run, capsys):
    f = _tensor_file(_ck(run, 4))
    data = bytearray(f.read_bytes())
    data[8:40] = b"\x00" * 32  # the JSON header's beginning
    f.write_bytes(bytes(data))
    summary = _train(run, "run.steps=4")
    assert summary["start_step"] == 2 and "step_0000004 is damaged" in capsys.readouterr().err


def test_truncated_trainer_state_falls_back_to_the_older_checkpoint(run, capsys):
    state = _ck(run, 4) / "trainer_state.json"
    state.write_text(state.read_text()[: len(state.read_text()) // 2])
    summary = _train(run, "run.steps=4")
    err = capsys.readouterr().err
    assert summary["start_step"] == 2 and "trainer_state.json is unreadable" in err


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(run, capsys):
    from lenslib.train import checkpoint as ckpt
    from lenslib.train.cli import EXIT_DAMAGED, main_train

    for step in (2, 4):
        _flip_bytes(_tensor_file(_ck(run, step)))
    with pytest.raises(ckpt.DamagedCheckpointError, match="no intact checkpoint.*run.resume=never"):
        _train(run, "run.steps=6")
    rc = main_train(["--config", "cpu-tiny", *TINY, f"run.out_dir={run}", "run.steps=6"])
    assert rc == EXIT_DAMAGED and "no intact checkpoint" in capsys.readouterr().err
    assert (_ck(run, 4) / "SHA256SUMS").is_file() and not (run / "checkpoints" / "damaged").exists()


def test_a_named_damaged_checkpoint_is_refused(run):
    from lenslib.train import checkpoint as ckpt

    _flip_bytes(_tensor_file(_ck(run, 4)))
    with pytest.raises(ckpt.DamagedCheckpointError, match="step_0000004 is damaged"):
        _train(run, "run.steps=6", f"run.resume={_ck(run, 4)}")


def test_checkpoint_without_checksums_resumes_with_a_warning(run, capsys):
    from lenslib.train import checkpoint as ckpt

    ck = _ck(run, 4)  # as written before checksums existed
    (ck / "SHA256SUMS").unlink()
    state = json.loads((ck / "trainer_state.json").read_text())
    del state["checksums"]
    (ck / "trainer_state.json").write_text(json.dumps(state))
    check = ckpt.verify_checkpoint(ck)
    assert check.ok and not check.verified
    summary = _train(run, "run.steps=5")
    assert summary["start_step"] == 4 and "unverified" in capsys.readouterr().err


def test_losing_the_checksums_is_damage(run):
    from lenslib.train import checkpoint as ckpt

    (_ck(run, 4) / "SHA256SUMS").unlink()  # trainer_state.json says there is one
    assert "SHA256SUMS is missing" in ckpt.verify_checkpoint(_ck(run, 4)).problems


def test_export_verifies(run, tmp_path, capsys):
    from lenslib.train import checkpoint as ckpt
    from lenslib.train.cli import EXIT_DAMAGED, _cmd_export, export

    _flip_bytes(_tensor_file(_ck(run, 4)))
    with pytest.raises(ckpt.DamagedCheckpointError, match="step_0000004 is damaged"):
        export(_ck(run, 4), tmp_path / "a")
    assert not (tmp_path / "a" / "transformer").exists()
    rc = _cmd_export(argparse.Namespace(checkpoint=str(_ck(run, 4)), out=str(tmp_path / "b"), weights="ema"))
    assert rc == EXIT_DAMAGED and "give the run folder" in capsys.readouterr().err
    folder = export(run, tmp_path / "c")  # a run folder: the newest intact checkpoint, loudly
    err = capsys.readouterr().err
    info = json.loads((folder / "lens_export.json").read_text())
    assert info["step"] == 2 and info["verified"] is True
    assert "step_0000004 is damaged" in err and "exporting step_0000002" in err


# --------------------------------------------------------------------------------------------------
# Metrics and failed writes
# --------------------------------------------------------------------------------------------------


def test_torn_metrics_line_is_dropped_and_reported(run, capsys):
    from lenslib.train.run_folder import read_metrics, run_totals

    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.1')  # a kill in the middle of a write
    records, notes = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and len(notes) == 1 and "last line" in notes[0]
    assert run_totals(run)["steps"] == 4
    summary = _train(run, "run.steps=5")
    out = capsys.readouterr().out
    assert summary["start_step"] == 4 and "WARNING: metrics.jsonl: dropped its last line" in out
    assert _steps(run) == [1, 2, 3, 4, 5]  # every line parses again


def test_failed_save_leaves_no_tmp_and_keeps_latest(run, monkeypatch):
    from lenslib.train import checkpoint as ckpt
    from lenslib.train.checkpoint import saving

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saving, "save_file", disk_full)  # the RNG file of the step-6 save
    with pytest.raises(OSError, match="No space left"):
        _train(run, "run.steps=6")
    assert _tmp_debris(run) == []
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    assert not _ck(run, 6).exists() and ckpt.verify_checkpoint(_ck(run, 4)).ok


def test_failed_resave_of_a_step_keeps_the_old_copy(run, monkeypatch):
    """Re-saving an existing step swaps folders; a failure in between puts the old copy back."""
    from lenslib.train import checkpoint as ckpt

    real_replace = os.replace

    def fail_second_swap(src, dst):
        if str(src).endswith("step_0000004.tmp"):
            raise OSError(errno.EIO, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second_swap)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(OSError, match="I/O error"):
        ckpt.save_checkpoint(run, 4, model, opt)
    monkeypatch.setattr(os, "replace", real_replace)
    assert _tmp_debris(run) == [] and ckpt.verify_checkpoint(_ck(run, 4)).ok
    assert (
        ckpt.read_trainer_state(_ck(run, 4))["model_config"]["num_layers"] == 2
    )  # the run's, not the Linear's


def test_failed_atomic_write_removes_its_temporary_file(run, monkeypatch):
    from lenslib.atomic import write_text_atomic

    config = (run / "config.yaml").read_text()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(run / "config.yaml", "new")
    with pytest.raises(
        OSError, match="No space left"
    ):  # the trainer's config.yaml write, after loading step 4
        _train(run, "run.steps=6")
    assert _tmp_debris(run) == [] and (run / "config.yaml").read_text() == config


def test_debris_of_a_killed_job_is_removed_at_start(run, capsys):
    (run / "checkpoints" / "step_0000006.tmp").mkdir()
    (run / "config.yaml.tmp").write_text("half")
    (run / "checkpoints" / "latest.tmp1234").write_text("step_")
    summary = _train(run, "run.steps=5")
    assert summary["start_step"] == 4 and _tmp_debris(run) == []
    assert "left by an interrupted job" in capsys.readouterr().err
