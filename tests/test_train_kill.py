"""Random kills: a training job killed at random moments, inside a save too, and resumed each time, ends
bit-identical to the job never killed (weights, EMA, AdamW and RNG state, every logged step).

One short trial of :func:`lenslib.train.faults.kill_trial` (four kills, one of each kind);
``benchmarks/kill_resume.py`` runs 30 and records the tally in ``benchmarks/results/kill_resume.json``.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from lenslib.train import faults

pytestmark = pytest.mark.slow  # about 35 s: six short training jobs

STEPS = 16  # a save after each: room for four kills of at most 3 steps each


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return faults.reference_run(tmp_path_factory.mktemp("kill") / "uninterrupted", STEPS)


def test_a_run_killed_four_times_at_random_ends_bit_identical(reference, tmp_path):
    kinds = ["startup", "save", "torn", "training"]
    result = faults.kill_trial(tmp_path / "killed", reference, kinds, seed=3)
    assert result["problems"] == [] and result["identical"]
    kills = result["kills"]
    assert [k.kind for k in kills] == kinds, "the run ended before every kill"
    assert kills[1].moment.startswith("save ") and "operation" in kills[1].moment  # inside save_checkpoint
    assert kills[2].moment.startswith("metrics line")  # part of a metrics line was on disk when it died
    # the run moved on between kills and the jobs after them resumed from the checkpoints, not from scratch
    assert kills[-1].latest_after > 0 and result["jobs"] == len(kills) + 1
    assert all(k.resumed_at is None or k.resumed_at == k.latest_after for k in kills)


def test_the_comparison_sees_a_single_changed_number(reference, tmp_path):
    """The check is not vacuous: one logged loss or one weight changed in the last ulp is reported."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lenslib.train import checkpoint as ck
    from lenslib.train.checkpoint.integrity import format_sums, hash_files

    assert faults.compare_runs(reference.run_dir, reference.run_dir, STEPS) == []
    run = shutil.copytree(reference.run_dir, tmp_path / "copy")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rec = json.loads(lines[4])
    rec["loss"] = math.nextafter(rec["loss"], math.inf)
    lines[4] = json.dumps(rec)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert any(p.startswith("step 5:") for p in faults.compare_runs(reference.run_dir, run, STEPS))

    shutil.copy(reference.run_dir / "metrics.jsonl", run / "metrics.jsonl")
    last = run / "checkpoints" / f"step_{STEPS:07d}"
    shard = next(last.glob("model-*.safetensors"))
    with safe_open(str(shard), framework="pt") as h:  # keep DCP's metadata (the tensors' offsets) as written
        meta = h.metadata()
    tensors = load_file(str(shard))
    key = next(k for k in tensors if k.startswith("model.") and tensors[k].dtype == torch.float32)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = torch.nextafter(tensors[key].view(-1)[0], torch.tensor(1e9))
    save_file(tensors, str(shard), metadata=meta)
    (last / ck.CHECKSUMS).write_text(format_sums(hash_files(last, ck.checkpoint_files(last))))
    problems = faults.compare_runs(reference.run_dir, run, STEPS)
    assert problems == [f"{last.name} {shard.name}:{key} differs"], problems
