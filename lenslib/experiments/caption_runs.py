"""Training and scoring every arm of the caption ablation (paper §3.4, §4.3): chapter 6's orchestration.

:func:`run_captions` trains each arm of ``lenslib.experiments.captions`` with ``lenslib.train``, scores
its ``eval_at`` checkpoints in every prompt mode with ``lenslib.eval.generate.score_checkpoint`` (EMA
weights, the exact judge) and returns a :class:`~lenslib.experiments.caption_results.CaptionResults`.
Work is kept at three levels, so a re-run reuses what is done and a stopped run continues: finished
arms (``lenslib.experiments.arms``, keyed by the resolved config without its run folder), each arm's
checkpoints (the trainer resumes) and each scored checkpoint (``<run folder>/scores/``). A run folder
trained under another config is moved aside to ``<out_dir>/stale/``. Used in chapters 5 and 6 and by
``lens experiment captions``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import lenslib.train
from lenslib.atomic import write_text_atomic
from lenslib.data.sources import TokenBatcher, build_source
from lenslib.eval import generate
from lenslib.experiments.arms import Arm, ArmFolder, run_arms
from lenslib.experiments.caption_results import RESULTS_NAME, CaptionResults, save_results
from lenslib.experiments.captions import (
    KINDS,
    MODES,
    PRESETS,
    Preset,
    arm_configs,
    check_arms,
    get_preset,
    prompt_lines,
    suite_lines,
)
from lenslib.paths import cache_dir
from lenslib.train import checkpoint as ckpt
from lenslib.train.config import to_dict
from lenslib.train.run_folder import run_dir_of, run_totals

__all__ = ["SCORES_DIR", "run_captions"]


def _arm_key(key: dict) -> dict:
    """An arm's cache key without its run folder's path: a run folder copied or moved elsewhere (from cluster
    scratch to a laptop, say) keeps its finished arms. Keys written with the path compare equal too."""
    key = json.loads(json.dumps(key))
    key["config"]["run"].pop("out_dir", None)
    return key


def _set_aside_stale_run(cfg, out_dir: Path, key: dict) -> None:
    """Move an arm's run folder aside when it was trained under another config (the base config or preset
    changed), so training starts afresh instead of resuming incompatible checkpoints. An unfinished run
    of the *same* config is kept and resumed."""
    run_dir = run_dir_of(cfg)
    key_file = run_dir.parent / f"{run_dir.name}.key.json"
    if run_dir.exists():
        old = json.loads(key_file.read_text()) if key_file.exists() else None
        if old is None or _arm_key(old) != key:
            stale = out_dir / "stale" / f"{run_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}"
            stale.parent.mkdir(parents=True, exist_ok=True)
            os.replace(run_dir, stale)
    write_text_atomic(key_file, json.dumps(key))


#: Per-checkpoint scores inside an arm's run folder (they move aside with it when its config changes).
SCORES_DIR = "scores"


def _score_checkpoints(cfg, p: Preset, lines: list[dict], modes, encoders: dict | None = None) -> list[dict]:
    """Result rows for every ``eval_at`` checkpoint of a finished arm, every prompt mode (EMA weights).

    ``encoders`` caches the frozen text encoder and codec between arms (they are the same for every arm).
    Each checkpoint's rows are kept in ``<run folder>/scores/`` (atomic JSON, keyed by prompts and sampler),
    so a run stopped while scoring (a preempted job, a closed laptop) loses at most one checkpoint's work.
    """
    d = cfg.data
    enc_key = json.dumps(
        [d.text_encoder, d.text_encoder_kwargs, d.codec, d.patch, d.vae, d.max_text_tokens], default=str
    )
    encoders = {} if encoders is None else encoders
    if enc_key not in encoders:
        _, codec, text_encoder = build_source(cfg)
        encoders[enc_key] = TokenBatcher(None, codec, text_encoder, d.max_text_tokens)
    batcher = encoders[enc_key]
    run_dir = run_dir_of(cfg)
    prompts = {m: prompt_lines(lines, m, cfg.data.vocab) for m in modes}
    rows = []
    saved = {c.name: c for c in ckpt.list_checkpoints(run_dir)}
    for step in p.eval_at:
        here = modes if step == max(p.eval_at) else tuple(m for m in modes if m in p.curve_modes)
        if not here:
            continue
        path = saved.get(ckpt.checkpoint_name(step), run_dir / ckpt.checkpoint_name(step))
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: the arm's run folder lost a checkpoint; delete {run_dir} to retrain it"
            )
        batch = [
            x for m in here for x in prompts[m]
        ]  # all prompt modes in one sampling pass (cheaper on CPU)
        sampler = dict(
            per_prompt=p.per_prompt,
            size=p.size,
            num_steps=p.sample_steps,
            guidance=p.guidance,
            mu=cfg.flow.mu,
            prompt="suite",
            seed=10_000 + cfg.run.seed,
        )
        key = json.loads(
            json.dumps({"checkpoint": path.name, "modes": list(here), "prompts": batch, "sampler": sampler})
        )
        done = run_dir / SCORES_DIR / f"{path.name}.json"
        kept = json.loads(done.read_text()) if done.is_file() else None
        if kept is not None and kept["key"] == key:
            rows += kept["rows"]
            continue
        got = generate.score_checkpoint(cfg, path, batch, batcher=batcher, batch_size=128, **sampler)
        here_rows = []
        for r in got:
            mode, index = here[r["index"] // len(lines)], r["index"] % len(lines)
            here_rows.append(
                {
                    "kind": cfg.data.caption_kind,
                    "seed": cfg.run.seed,
                    "step": step,
                    "mode": mode,
                    "index": index,
                    "k": r["k"],
                    "tag": r["tag"],
                    "correct": r["correct"],
                    "reason": r["reason"],
                }
            )
        write_text_atomic(done, json.dumps({"key": key, "rows": here_rows}))
        rows += here_rows
    return rows


def run_captions(
    preset: str | Preset = "reduced",
    out_dir: str | Path | None = None,
    kinds=KINDS,
    seeds=None,
    modes=MODES,
    overrides=(),
    progress=print,
) -> CaptionResults:
    """Train and score every arm (cached per arm in ``out_dir``); returns :class:`CaptionResults`.

    ``out_dir`` defaults to ``<cache>/experiments/captions/<preset>``. An arm whose result file
    (``<out_dir>/arms/<kind>-s<seed>.json``, :class:`lenslib.experiments.arms.ArmFolder`) matches its
    resolved config is not trained again; a changed config retrains it. Writes ``<out_dir>/results.json``
    (:func:`lenslib.experiments.caption_results.save_results`).
    """
    p = get_preset(preset)
    seeds = tuple(p.seeds if seeds is None else seeds)
    kinds, modes = tuple(kinds), tuple(modes)
    check_arms(p, kinds, modes, seeds)
    preset_name = next((k for k, v in PRESETS.items() if v == p), "custom")
    out_dir = Path(out_dir) if out_dir is not None else cache_dir() / "experiments" / "captions" / preset_name
    configs = arm_configs(p, out_dir, kinds, seeds, overrides)  # every config validated before any training
    lines = suite_lines(p.lines_per_tag)
    store = ArmFolder(out_dir / "arms")
    plan = {f"{kind}-s{seed}": (kind, seed, cfg) for (kind, seed), cfg in configs.items()}
    arms = [
        Arm(
            arm_name,
            {"config": to_dict(cfg), "preset": dataclasses.asdict(p), "modes": list(modes), "lines": lines},
        )
        for arm_name, (_, _, cfg) in plan.items()
    ]
    encoders = {}

    def run(arm: Arm, previous: dict | None) -> dict:
        kind, seed, cfg = plan[arm.name]
        _set_aside_stale_run(cfg, out_dir, _arm_key(arm.config))
        summary = lenslib.train.train(cfg)
        if summary.get("preempted"):
            raise RuntimeError(
                f"arm {kind} seed {seed} was preempted at step {summary['step']}; run again to continue"
            )
        totals = run_totals(run_dir_of(cfg))  # across resumptions, not just this call's share
        seconds = totals["train_seconds"]
        t0 = time.time()
        arm_rows = _score_checkpoints(cfg, p, lines, modes, encoders)
        progress(
            f"{kind:>9} seed {seed}: trained {p.steps} steps in {seconds:.0f} s, scored "
            f"{len(p.eval_at)} checkpoints (the last in {len(modes)} prompt modes) in "
            f"{time.time() - t0:.0f} s"
        )
        return {"rows": arm_rows, "train_seconds": seconds, "final_loss": totals["final_loss"]}

    def reused(arm: Arm, record: dict) -> None:
        kind, seed, _ = plan[arm.name]
        progress(f"{kind:>9} seed {seed}: cached ({store.path(arm.name)})")

    records = run_arms(arms, store, run, key=_arm_key, reused=reused)
    rows, meta = [], {}
    for arm_name, (kind, seed, _) in plan.items():
        rows += records[arm_name]["rows"]
        meta[(kind, seed)] = {"train_seconds": records[arm_name]["train_seconds"]}
    res = CaptionResults(rows, p, kinds, seeds, modes, configs, meta, preset_name=preset_name)
    save_results(res, out_dir / RESULTS_NAME, lines)
    return res
