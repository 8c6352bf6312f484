"""The caption ablation (paper §3.4) and the reasoner ablation (paper §4.3) on the synthetic world.

One model, one set of training images, one compute budget and the same seeds, trained four times: with
alt-text, brief, detailed and mixed captions (``lenslib.world.captions``). The arms differ *only* in
``data.caption_kind``: :func:`arm_configs` builds every arm from one base config and
:func:`config_differences` proves it. Each arm's checkpoints are scored with the exact judge on a
GenEval-format suite of the world, prompted three ways:

* ``brief``    — the suite's own short prompts ("a photo of a red circle and a blue star");
* ``reasoner`` — the same short prompts rewritten by :class:`lenslib.reasoner.RuleReasoner`
  (the paper's GPT-5.5 step, here exact and offline);
* ``detailed`` — the Lens-style dense rewrite of each line (``lenslib.world.suites.detailed_prompt``).

Scores come as GenEval summaries (per tag and overall, bootstrap 95 % intervals over prompts and seeds)
and as paired differences between arms (:func:`paired_difference`: the arms share prompts and seeds, so
the bootstrap resamples them jointly). Results are cached per arm under ``out_dir`` (atomic JSON), so a
re-run reuses finished arms and a stopped run continues. Used in chapters 5 and 6 and by
``lens experiment captions``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "KINDS",
    "MODES",
    "Preset",
    "PRESETS",
    "get_preset",
    "suite_lines",
    "arm_configs",
    "config_differences",
    "prompt_lines",
    "run_captions",
    "CaptionResults",
    "paired_difference",
    "summarize_rows",
    "conclusion",
    "RESULTS_NAME",
    "save_results",
    "load_results",
]

KINDS = ("alt_text", "brief", "detailed", "mixed")  # lenslib.world.captions
MODES = ("brief", "reasoner", "detailed")  # how the suite is prompted at evaluation time
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclass(frozen=True)
class Preset:
    """One scale of the experiment. Every arm of a run uses the same values.

    ``eval_at`` are the training steps whose checkpoints are scored (the score-vs-steps curve): the last
    in every prompt mode, the earlier ones in ``curve_modes`` only (sampling is most of a CPU run's
    cost); ``lines_per_tag`` suite lines are taken from each of GenEval's six tags; each line is sampled
    ``per_prompt`` times per training seed with ``sample_steps`` Euler steps.
    """

    base: str = "cpu-tiny"
    steps: int = 300
    eval_at: tuple[int, ...] = (100, 200, 300)
    curve_modes: tuple[str, ...] = MODES
    seeds: tuple[int, ...] = (0, 1, 2)
    lines_per_tag: int = 10
    per_prompt: int = 2
    sample_steps: int = 20
    guidance: float = 3.0
    size: int = 64
    overrides: tuple[str, ...] = ()
    description: str = ""


#: The shapes judge is exact from 64 px up (``lenslib.world.spec.VOCAB_MIN_SIDE``): every arm trains at
#: 64 px with 8-px patches (64 tokens per image), pinned here so the ablation keeps its size if the base changes.
WORLD_64 = ("data.image_size=64", "data.patch=8")
#: Every arm reads its whole caption. The world's detailed captions run to 168 MiniLM tokens (median 81,
#: 99th percentile 158); cpu-tiny keeps 32 text tokens for speed, which would cut the detailed arm's captions
#: to their first sentence or two and hand the comparison to the brief arm. 160 tokens cover 99 % of them.
WHOLE_CAPTIONS = ("data.max_text_tokens=160", "data.text_encoder_kwargs.max_length=160")

PRESETS: dict[str, Preset] = {
    # tests: seconds
    "micro": Preset(
        steps=4,
        eval_at=(2, 4),
        seeds=(0,),
        lines_per_tag=1,
        per_prompt=1,
        sample_steps=4,
        overrides=(
            *WORLD_64,
            *WHOLE_CAPTIONS,
            "optim.global_batch=4",
            "optim.micro_batch=4",
            "optim.warmup_steps=2",
        ),
        description="a smoke test: 4 steps, 1 seed, 6 suite lines",
    ),
    # the book's default: 4 arms x 3 seeds inside chapter 6's CPU budget; far too short to learn the world
    "reduced": Preset(
        steps=8,
        eval_at=(4, 8),
        seeds=(0, 1, 2),
        lines_per_tag=2,
        per_prompt=1,
        sample_steps=2,
        overrides=(
            *WORLD_64,
            *WHOLE_CAPTIONS,
            "optim.global_batch=8",
            "optim.micro_batch=8",
            "optim.warmup_steps=4",
        ),
        description="the book's CPU default: 8 steps of batch 8, 3 seeds, 12 suite lines",
    ),
    # the experiment proper (hours on two CPU cores): cpu-tiny's own schedule and batch
    "full": Preset(
        steps=1200,
        eval_at=(150, 300, 600, 900, 1200),
        curve_modes=("brief", "detailed"),
        seeds=(0, 1, 2),
        lines_per_tag=20,
        per_prompt=2,
        sample_steps=20,
        overrides=(*WORLD_64, *WHOLE_CAPTIONS),
        description="cpu-tiny's batch for 1200 steps, 3 seeds, 110 suite lines x 2 images",
    ),
}


def get_preset(name: str | Preset) -> Preset:
    """A preset by name (``micro``, ``reduced``, ``full``); a clear error otherwise."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ValueError(
            f"unknown caption-ablation preset {name!r}; choose one of {', '.join(PRESETS)} "
            "(lenslib.experiments.captions.PRESETS)."
        )
    return PRESETS[name]


def _check(preset: Preset, kinds, modes, seeds) -> None:
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"caption kinds {bad or list(kinds)!r}: choose from {', '.join(KINDS)}")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"prompt modes {bad or list(modes)!r}: choose from {', '.join(MODES)}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds {list(seeds)!r} must be non-negative integers (at least one)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {list(seeds)!r} repeat a seed")
    if not preset.eval_at or any(s < 1 or s > preset.steps for s in preset.eval_at):
        raise ValueError(f"eval_at {preset.eval_at} must lie in 1..steps={preset.steps}")
    if not set(preset.curve_modes) <= set(MODES):
        raise ValueError(f"curve_modes {list(preset.curve_modes)!r}: choose from {', '.join(MODES)}")
    if preset.lines_per_tag < 1 or preset.per_prompt < 1 or preset.sample_steps < 1:
        raise ValueError("lines_per_tag, per_prompt and sample_steps must be >= 1")


def suite_lines(lines_per_tag: int, suite: str = "shapes_geneval") -> list[dict]:
    """The first ``lines_per_tag`` lines of each GenEval tag of a shipped suite (a fixed subset).

    A tag with fewer lines gives all it has: like GenEval's, the suite has one ``single_object`` line per
    class (10 in the shapes world). The overall score is the mean over tags, so each tag weighs the same.
    """
    from lenslib.world.suites import suite_path

    lines = [json.loads(x) for x in suite_path(suite).read_text().splitlines() if x.strip()]
    out = []
    for tag in GENEVAL_TAGS:
        of_tag = [x for x in lines if x["tag"] == tag]
        if not of_tag:
            raise ValueError(f"suite {suite} has no {tag} lines; a GenEval-format suite needs all six tags")
        out += of_tag[:lines_per_tag]
    return out


def prompt_lines(lines: list[dict], mode: str, vocab: str = "shapes", seed: int = 0) -> list[dict]:
    """Suite lines whose ``prompt`` is what the model is given under ``mode`` (the judged metadata is unchanged)."""
    from lenslib.reasoner import RuleReasoner
    from lenslib.world.suites import detailed_prompt

    if mode == "brief":
        return [dict(x) for x in lines]
    if mode == "reasoner":
        reasoner = RuleReasoner(vocab)
        return [dict(x, prompt=reasoner.rewrite(x["prompt"], seed + i)) for i, x in enumerate(lines)]
    if mode == "detailed":
        return [dict(x, prompt=detailed_prompt(x, seed, vocab)) for x in lines]
    raise ValueError(f"prompt mode {mode!r}: choose from {', '.join(MODES)}")


def arm_configs(preset: str | Preset, out_dir: str | Path, kinds=KINDS, seeds=None, overrides=()) -> dict:
    """``{(kind, seed): TrainConfig}``: one base config, changed only in caption kind (and run folder/name).

    Checkpoints are kept at every ``eval_at`` step (``run.save_every`` = their common divisor, nothing
    rotated away), so the curve can be scored after training.
    """
    from math import gcd

    from lenslib.train.config import load_config

    p = get_preset(preset)
    seeds = tuple(p.seeds if seeds is None else seeds)
    _check(p, tuple(kinds), MODES, seeds)
    every = 0
    for s in p.eval_at:
        every = gcd(every, s)
    out = {}
    for kind in kinds:
        for seed in seeds:
            name = f"{kind}-s{seed}"
            cfg = load_config(
                p.base,
                [
                    *p.overrides,
                    *overrides,
                    f"run.steps={p.steps}",
                    f"run.seed={seed}",
                    f"run.save_every={every}",
                    "run.keep_last=0",
                    "eval.every=0",
                    f"run.log_every={max(1, min(10, p.steps))}",
                    "run.progress=log",
                    f"data.caption_kind={kind}",
                    f"run.name=captions-{name}",
                    f"run.out_dir={json.dumps(str(Path(out_dir) / 'runs' / name))}",
                ],
            )
            out[(kind, seed)] = cfg
    return out


def config_differences(a, b) -> list[str]:
    """Dotted keys whose values differ between two TrainConfigs (run name and folder excluded)."""
    from lenslib.train.config import to_dict

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    fa, fb = dict(flat(to_dict(a))), dict(flat(to_dict(b)))
    return sorted(
        k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and k not in ("run.name", "run.out_dir")
    )


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


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
    from lenslib.train.trainer import run_dir_of

    run_dir = run_dir_of(cfg)
    key_file = run_dir.parent / f"{run_dir.name}.key.json"
    if run_dir.exists():
        old = json.loads(key_file.read_text()) if key_file.exists() else None
        if old is None or _arm_key(old) != key:
            stale = out_dir / "stale" / f"{run_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}"
            stale.parent.mkdir(parents=True, exist_ok=True)
            os.replace(run_dir, stale)
    _write_json(key_file, key)


#: Per-checkpoint scores inside an arm's run folder (they move aside with it when its config changes).
SCORES_DIR = "scores"


def _score_checkpoints(cfg, p: Preset, lines: list[dict], modes, encoders: dict | None = None) -> list[dict]:
    """Result rows for every ``eval_at`` checkpoint of a finished arm, every prompt mode (EMA weights).

    ``encoders`` caches the frozen text encoder and codec between arms (they are the same for every arm).
    Each checkpoint's rows are kept in ``<run folder>/scores/`` (atomic JSON, keyed by prompts and sampler),
    so a run stopped while scoring (a preempted job, a closed laptop) loses at most one checkpoint's work.
    """
    from lenslib.eval.generate import score_checkpoint
    from lenslib.train import checkpoint as ckpt
    from lenslib.train.data import TokenBatcher, build_source
    from lenslib.train.trainer import run_dir_of

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
        got = score_checkpoint(cfg, path, batch, batcher=batcher, batch_size=128, **sampler)
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
        _write_json(done, {"key": key, "rows": here_rows})
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
) -> "CaptionResults":
    """Train and score every arm (cached per arm in ``out_dir``); returns :class:`CaptionResults`.

    ``out_dir`` defaults to ``<cache>/experiments/captions/<preset>``. An arm whose result file matches
    its resolved config is not trained again; a changed config retrains it.
    """
    from lenslib.paths import cache_dir
    from lenslib.train import train
    from lenslib.train.config import to_dict
    from lenslib.train.trainer import run_dir_of, run_totals

    p = get_preset(preset)
    seeds = tuple(p.seeds if seeds is None else seeds)
    kinds, modes = tuple(kinds), tuple(modes)
    _check(p, kinds, modes, seeds)
    name = next((k for k, v in PRESETS.items() if v == p), "custom")
    out_dir = Path(out_dir) if out_dir is not None else cache_dir() / "experiments" / "captions" / name
    configs = arm_configs(p, out_dir, kinds, seeds, overrides)  # every config validated before any training
    lines = suite_lines(p.lines_per_tag)
    rows, meta, encoders = [], {}, {}
    for (kind, seed), cfg in configs.items():
        key = _arm_key(
            {"config": to_dict(cfg), "preset": dataclasses.asdict(p), "modes": list(modes), "lines": lines}
        )
        path = out_dir / "arms" / f"{kind}-s{seed}.json"
        cached = json.loads(path.read_text()) if path.exists() else None
        if cached is not None and _arm_key(cached["key"]) == key:
            arm_rows, seconds = cached["rows"], cached["train_seconds"]
            progress(f"{kind:>9} seed {seed}: cached ({path})")
        else:
            _set_aside_stale_run(cfg, out_dir, key)
            summary = train(cfg)
            if summary.get("preempted"):
                raise RuntimeError(
                    f"arm {kind} seed {seed} was preempted at step {summary['step']}; run again to continue"
                )
            totals = run_totals(run_dir_of(cfg))  # across resumptions, not just this call's share
            seconds = totals["train_seconds"]
            t0 = time.time()
            arm_rows = _score_checkpoints(cfg, p, lines, modes, encoders)
            _write_json(
                path,
                {"key": key, "rows": arm_rows, "train_seconds": seconds, "final_loss": totals["final_loss"]},
            )
            progress(
                f"{kind:>9} seed {seed}: trained {p.steps} steps in {seconds:.0f} s, scored "
                f"{len(p.eval_at)} checkpoints (the last in {len(modes)} prompt modes) in {time.time() - t0:.0f} s"
            )
        rows += arm_rows
        meta[(kind, seed)] = {"train_seconds": seconds}
    res = CaptionResults(rows, p, kinds, seeds, modes, configs, meta, preset_name=name)
    save_results(res, out_dir / RESULTS_NAME, lines)
    return res


# --------------------------------------------------------------------------------------------------
# The run's results file: every verdict, compact enough to commit beside a record page
# --------------------------------------------------------------------------------------------------

RESULTS_NAME = "results.json"
_RESULTS_FORMAT = "lens-caption-ablation/1"


def save_results(res: "CaptionResults", path: str | Path, lines: list[dict] | None = None) -> Path:
    """Write every judged image of a run to ``path`` (atomic JSON, about 100 KB for the full preset).

    Verdicts are stored per (arm, seed, step, prompt mode) as a string of 0/1, one character per image in
    (suite line, image) order, with each failed image's failure kinds (``lenslib.eval.geneval.failure_kinds``)
    as digits into a legend, not the judge's full reasons; the suite lines are stored once.
    :func:`load_results` gives back a :class:`CaptionResults` whose tables and intervals equal the run's.
    ``run_captions`` writes it as ``<out_dir>/results.json``; ``lens record`` copies it beside the record
    page, where chapter 6 reads it.
    """
    from lenslib import __version__
    from lenslib.eval.geneval import failure_kinds

    lines = suite_lines(res.preset.lines_per_tag) if lines is None else lines
    per = res.preset.per_prompt
    cells = defaultdict(lambda: ["?"] * (len(lines) * per))
    failed = defaultdict(lambda: [""] * (len(lines) * per))
    legend: dict[str, str] = {}
    for r in res.rows:
        key, j = (r["kind"], r["seed"], r["step"], r["mode"]), r["index"] * per + r["k"]
        cells[key][j] = "1" if r["correct"] else "0"
        if not r["correct"]:
            kinds = r["failures"] if "failures" in r else failure_kinds(r["reason"])
            failed[key][j] = "".join(legend.setdefault(k, str(len(legend))) for k in kinds)
    missing = [key for key, v in cells.items() if "?" in v]
    if missing or len(legend) > 10:
        raise ValueError(
            f"results of {missing[:3]} lack some (line, image) verdicts; nothing was written to {path}"
            if missing
            else f"{len(legend)} failure kinds do not fit one digit each; nothing was written"
        )
    doc = {
        "format": _RESULTS_FORMAT,
        "preset": res.preset_name,
        "preset_values": dataclasses.asdict(res.preset),
        "kinds": list(res.kinds),
        "seeds": list(res.seeds),
        "modes": list(res.modes),
        "lines": [{"tag": x["tag"], "prompt": x["prompt"]} for x in lines],
        "failure_kinds": sorted(legend, key=legend.get),
        "cells": [
            {
                "kind": k,
                "seed": s,
                "step": st,
                "mode": m,
                "correct": "".join(v),
                "failures": ",".join(failed[(k, s, st, m)]),
            }
            for (k, s, st, m), v in sorted(cells.items(), key=lambda kv: tuple(map(str, kv[0])))
        ],
        "train_seconds": {f"{k}-s{s}": v["train_seconds"] for (k, s), v in res.meta.items()},
        "lenslib": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json(Path(path), doc)
    return Path(path)


def load_results(path: str | Path) -> "CaptionResults":
    """A :class:`CaptionResults` from a file of :func:`save_results` (e.g. a recorded full run)."""
    path = Path(path)
    doc = json.loads(path.read_text())
    if doc.get("format") != _RESULTS_FORMAT:
        raise ValueError(
            f"{path} is not a caption-ablation results file (format {doc.get('format')!r}, "
            f"expected {_RESULTS_FORMAT!r}); write it with lenslib.experiments.captions.save_results"
        )
    values = dict(doc["preset_values"])
    for key in ("eval_at", "curve_modes", "seeds", "overrides"):
        values[key] = tuple(values[key])
    preset, lines, per = Preset(**values), doc["lines"], doc["preset_values"]["per_prompt"]
    rows = []
    for c in doc["cells"]:
        if len(c["correct"]) != len(lines) * per:
            raise ValueError(
                f"{path}: a cell of {c['kind']} seed {c['seed']} has {len(c['correct'])} verdicts, "
                f"expected {len(lines)} lines x {per} images"
            )
        failures = c["failures"].split(",")
        for j, v in enumerate(c["correct"]):
            index, k = divmod(j, per)
            rows.append(
                {
                    "kind": c["kind"],
                    "seed": c["seed"],
                    "step": c["step"],
                    "mode": c["mode"],
                    "index": index,
                    "k": k,
                    "tag": lines[index]["tag"],
                    "correct": v == "1",
                    "failures": [doc["failure_kinds"][int(d)] for d in failures[j]],
                }
            )
    meta = {}
    for key, seconds in doc["train_seconds"].items():
        kind, seed = key.rsplit("-s", 1)
        meta[(kind, int(seed))] = {"train_seconds": seconds}
    return CaptionResults(
        rows,
        preset,
        tuple(doc["kinds"]),
        tuple(doc["seeds"]),
        tuple(doc["modes"]),
        meta=meta,
        preset_name=doc["preset"],
        created=doc["created"],
        lenslib=doc["lenslib"],
    )


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def _by_prompt_seed(rows: list[dict]) -> tuple[dict, dict]:
    """``{(index, seed): mean correct over images}`` and ``{index: tag}``."""
    acc, tag = defaultdict(list), {}
    for r in rows:
        acc[(r["index"], r["seed"])].append(float(bool(r["correct"])))
        tag[r["index"]] = r["tag"]
    return {k: float(np.mean(v)) for k, v in acc.items()}, tag


def paired_difference(
    rows_a: list[dict], rows_b: list[dict], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """GenEval overall of ``rows_a`` minus that of ``rows_b``, with a paired bootstrap interval.

    Both sets must score the same prompts (``index``, with ``tag``) under the same training seeds
    (``seed``); each (prompt, seed) cell is the mean of its images. The overall score is GenEval's:
    the unweighted mean of the tags' accuracies. Each replicate draws prompts with replacement within
    each tag and training seeds with replacement, the *same* draws for both sets (they share prompts
    and seeds, so their noise partly cancels), and recomputes the difference. Returns ``diff``,
    ``ci95`` (percentile interval), ``p_le_zero`` (share of replicates <= 0), ``n_prompts``, ``n_seeds``.
    """
    a, tag_a = _by_prompt_seed(rows_a)
    b, tag_b = _by_prompt_seed(rows_b)
    if set(a) != set(b) or tag_a != tag_b:
        raise ValueError(
            "paired_difference needs both sets to cover the same (prompt index, seed) cells with the same tags; "
            f"only in the first: {sorted(set(a) - set(b))[:5]}, only in the second: {sorted(set(b) - set(a))[:5]}"
        )
    if not a:
        raise ValueError("paired_difference got no rows")
    prompts = sorted(tag_a)
    seeds = sorted({s for _, s in a})
    d = np.array([[a[(i, s)] - b[(i, s)] for s in seeds] for i in prompts])  # prompts x seeds
    tags = [t for t in GENEVAL_TAGS if t in tag_a.values()] + sorted(set(tag_a.values()) - set(GENEVAL_TAGS))
    groups = [np.array([j for j, i in enumerate(prompts) if tag_a[i] == t]) for t in tags]

    def overall(pick_seeds, picks):
        return float(np.mean([d[np.ix_(g[pick], pick_seeds)].mean() for g, pick in zip(groups, picks)]))

    estimate = overall(np.arange(len(seeds)), [np.arange(len(g)) for g in groups])
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for r in range(n_boot):
        pick_seeds = rng.integers(0, len(seeds), len(seeds))
        reps[r] = overall(pick_seeds, [rng.integers(0, len(g), len(g)) for g in groups])
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {
        "diff": estimate,
        "ci95": (float(lo), float(hi)),
        "p_le_zero": float(np.mean(reps <= 0)),
        "n_prompts": len(prompts),
        "n_seeds": len(seeds),
        "n_boot": n_boot,
    }


def summarize_rows(rows: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """GenEval summary (per tag and overall, bootstrap 95 % intervals) of one arm/mode/step's rows.

    Images of different training seeds count as further images of the same prompt, so the bootstrap
    resamples prompts within tags and, inside each prompt, the images of all seeds.
    """
    from lenslib.eval.geneval import summarize

    ks = sorted({(r["seed"], r["k"]) for r in rows})
    number = {sk: j for j, sk in enumerate(ks)}
    return summarize([dict(r, k=number[(r["seed"], r["k"])]) for r in rows], n_boot=n_boot, seed=seed)


def conclusion(
    diff: dict, a: str = "detailed captions", b: str = "brief captions", what: str = "prompted in detail"
) -> str:
    """One sentence that states what a :func:`paired_difference` of ``a`` − ``b`` found, chosen by its sign
    and whether its interval excludes 0 (never written before the numbers)."""
    lo, hi = diff["ci95"]
    head = (
        f"{a} − {b} ({what}) = {diff['diff']:+.3f}, 95 % interval [{lo:+.3f}, {hi:+.3f}] "
        f"({diff['n_prompts']} prompts × {diff['n_seeds']} seeds)"
    )
    if lo > 0:
        return head + f": {a} scores higher than {b}, and the interval excludes 0."
    if hi < 0:
        return head + f": {b} scores higher than {a}, and the interval excludes 0."
    if diff["diff"] == 0 and lo == hi == 0:
        return head + ": both score the same on every prompt and seed; this run cannot tell them apart."
    side = a if diff["diff"] > 0 else b if diff["diff"] < 0 else None
    lean = f"the point estimate favours {side}, but " if side else ""
    return head + f": {lean}the interval includes 0, so this run does not show a difference."


@dataclass
class CaptionResults:
    """Every scored image of a caption-ablation run, with the run's settings."""

    rows: list[dict]
    preset: Preset
    kinds: tuple
    seeds: tuple
    modes: tuple
    configs: dict = field(repr=False, default_factory=dict)
    meta: dict = field(repr=False, default_factory=dict)
    preset_name: str = "custom"
    created: str | None = None  # set when read back from a results file
    lenslib: str | None = None

    @property
    def final_step(self) -> int:
        return max(self.preset.eval_at)

    def select(self, kind: str | None = None, mode: str | None = None, step: int | None = None) -> list[dict]:
        """Rows of one arm / prompt mode / step (``step`` defaults to the last)."""
        step = self.final_step if step is None else step
        return [
            r
            for r in self.rows
            if (kind is None or r["kind"] == kind)
            and (mode is None or r["mode"] == mode)
            and r["step"] == step
        ]

    def summary(self, kind: str, mode: str, step: int | None = None, n_boot: int = 2000) -> dict:
        return summarize_rows(self.select(kind, mode, step), n_boot=n_boot)

    def difference(
        self,
        a: str = "detailed",
        b: str = "brief",
        mode: str = "detailed",
        step: int | None = None,
        n_boot: int = 2000,
    ) -> dict:
        """Paired difference arm ``a`` − arm ``b`` under prompt ``mode`` (for modes, pass kind as a/b and mode)."""
        return paired_difference(self.select(a, mode, step), self.select(b, mode, step), n_boot=n_boot)

    def mode_difference(
        self, kind: str, a: str = "reasoner", b: str = "brief", step: int | None = None, n_boot: int = 2000
    ) -> dict:
        """Paired difference between two prompt modes for one arm (e.g. reasoner − brief)."""
        return paired_difference(self.select(kind, a, step), self.select(kind, b, step), n_boot=n_boot)

    def findings(self, n_boot: int = 2000) -> list[str]:
        """The run's conclusions, one sentence each (:func:`conclusion`): detailed − brief prompted in detail
        and briefly, then the reasoner's gain on every arm. Chapter 6 prints them for a recorded full run."""
        out = []
        if {"detailed", "brief"} <= set(self.kinds):
            for mode, what in (("detailed", "prompted in detail"), ("brief", "prompted briefly")):
                if mode in self.modes:
                    out.append(
                        conclusion(self.difference("detailed", "brief", mode, n_boot=n_boot), what=what)
                    )
        if {"reasoner", "brief"} <= set(self.modes):
            for kind in self.kinds:
                out.append(
                    conclusion(
                        self.mode_difference(kind, "reasoner", "brief", n_boot=n_boot),
                        "reasoner-rewritten prompts",
                        "brief prompts",
                        f"{kind}-trained model",
                    )
                )
        return out

    def table(self, n_boot: int = 1000):
        """A pandas table: one row per (arm, prompt mode) at the last step, per-tag and overall scores with CIs."""
        import pandas as pd

        out = []
        for kind in self.kinds:
            for mode in self.modes:
                s = self.summary(kind, mode, n_boot=n_boot)
                row = {
                    "captions": kind,
                    "prompted": mode,
                    "overall": s["overall"]["score"],
                    "overall_ci95": tuple(round(x, 3) for x in s["overall"]["ci95"]),
                }
                for t, v in s["tags"].items():
                    row[t] = v["accuracy"]
                    row[f"{t}_ci95"] = tuple(round(x, 3) for x in v["ci95"])
                out.append(row)
        return pd.DataFrame(out)

    def curves(self):
        """A pandas table of overall score vs training step, per arm and prompt mode (mean over seeds); modes
        outside ``preset.curve_modes`` have the last step only."""
        import pandas as pd

        out = []
        for kind in self.kinds:
            for mode in self.modes:
                for step in self.preset.eval_at:
                    rows = self.select(kind, mode, step)
                    if not rows:  # this mode is scored at the last step only (Preset.curve_modes)
                        continue
                    by_tag = defaultdict(list)
                    for r in rows:
                        by_tag[r["tag"]].append(float(bool(r["correct"])))
                    out.append(
                        {
                            "captions": kind,
                            "prompted": mode,
                            "step": step,
                            "overall": float(np.mean([np.mean(v) for v in by_tag.values()])),
                        }
                    )
        return pd.DataFrame(out)
