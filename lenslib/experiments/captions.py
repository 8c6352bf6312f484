"""The caption ablation (paper §3.4) and the reasoner ablation (paper §4.3): its arms and presets.

One model, one set of training images, one compute budget and the same seeds, trained four times: with
alt-text, brief, detailed and mixed captions (``lenslib.world.captions``). The arms differ *only* in
``data.caption_kind``: :func:`arm_configs` builds every arm from one base config and
:func:`config_differences` proves it. Each arm's checkpoints are scored with the exact judge on a
GenEval-format suite of the world (:func:`suite_lines`), prompted three ways (:func:`prompt_lines`):

* ``brief``    — the suite's own short prompts ("a photo of a red circle and a blue star");
* ``reasoner`` — the same short prompts rewritten by :class:`lenslib.reasoner.RuleReasoner`
  (the paper's GPT-5.5 step, here exact and offline);
* ``detailed`` — the Lens-style dense rewrite of each line (``lenslib.world.suites.detailed_prompt``).

The rest of the experiment has its own modules: training and scoring every arm
(``lenslib.experiments.caption_runs.run_captions``), the results file and
:class:`~lenslib.experiments.caption_results.CaptionResults` (``caption_results``), and its tables,
curves and sentences (``caption_report``); the paired bootstrap is ``lenslib.eval.stats``. The
notebook parameters of chapter 6 are checked here (:func:`check_parameters`, registered as the
``captions`` experiment). Used in chapters 4, 5 and 6 and by ``lens experiment captions``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import gcd
from pathlib import Path

from lenslib.experiments import register
from lenslib.reasoner import RuleReasoner
from lenslib.train.config import load_config, to_dict
from lenslib.world.suites import GENEVAL_TAGS, detailed_prompt, suite_path

__all__ = [
    "GENEVAL_TAGS",
    "KINDS",
    "MODES",
    "PRESETS",
    "WHOLE_CAPTIONS",
    "WORLD_64",
    "Preset",
    "arm_configs",
    "check_arms",
    "check_parameters",
    "config_differences",
    "get_preset",
    "prompt_lines",
    "suite_lines",
]

KINDS = ("alt_text", "brief", "detailed", "mixed")  # lenslib.world.captions
MODES = ("brief", "reasoner", "detailed")  # how the suite is prompted at evaluation time


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


#: The shapes judge is exact from 64 px up (``lenslib.world.spec.VOCAB_MIN_SIDE``): the short presets train
#: at 64 px with 8-px patches (64 tokens per image) to fit chapter 6's CPU budget, pinned here so they keep
#: their size if the base changes. The full preset trains cpu-tiny's own recipe (4-px patches, chapter 4).
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
    # the experiment proper (hours on two CPU cores): cpu-tiny's own recipe, schedule and batch
    "full": Preset(
        steps=1200,
        eval_at=(150, 300, 600, 900, 1200),
        curve_modes=("brief", "detailed"),
        seeds=(0, 1, 2),
        lines_per_tag=20,
        per_prompt=2,
        sample_steps=20,
        overrides=("data.image_size=64", *WHOLE_CAPTIONS),
        description="cpu-tiny's recipe and batch for 1200 steps, 3 seeds, 110 suite lines x 2 images",
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


def check_arms(preset: Preset, kinds, modes, seeds) -> None:
    """Refuse unknown caption kinds or prompt modes, bad seeds and a preset that cannot run."""
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
    lines = [json.loads(x) for x in suite_path(suite).read_text().splitlines() if x.strip()]
    out = []
    for tag in GENEVAL_TAGS:
        of_tag = [x for x in lines if x["tag"] == tag]
        if not of_tag:
            raise ValueError(f"suite {suite} has no {tag} lines; a GenEval-format suite needs all six tags")
        out += of_tag[:lines_per_tag]
    return out


def prompt_lines(lines: list[dict], mode: str, vocab: str = "shapes", seed: int = 0) -> list[dict]:
    """Suite lines whose ``prompt`` is what the model is given under ``mode`` (the judged metadata is
    unchanged)."""
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
    p = get_preset(preset)
    seeds = tuple(p.seeds if seeds is None else seeds)
    check_arms(p, tuple(kinds), MODES, seeds)
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


@register("captions")
def check_parameters(params: dict):
    """Validate chapter 6's notebook parameters before it executes; returns the base arm's TrainConfig.

    A bad ``preset`` or seed list raises ``ValueError`` naming the parameter."""
    preset = params.get("preset")
    try:
        p = get_preset(preset)
    except ValueError as err:
        raise ValueError(f"parameter preset={preset!r}: {err}") from None
    seeds = params.get("seeds")
    if seeds is not None and (not isinstance(seeds, (list, tuple)) or len(seeds) < 1):
        raise ValueError(
            f"parameter seeds={seeds!r} must be a list of training seeds (or None for the preset's)"
        )
    try:
        cfgs = arm_configs(p, params.get("run_dir") or ".", ("detailed",), seeds)
    except ValueError as err:
        raise ValueError(f"parameter seeds={seeds!r}: {err}") from None
    return next(iter(cfgs.values()))
