"""What makes ``cpu-tiny`` learn the world? Each change to the recipe alone and together, at one step budget.

Every arm is ``cpu-tiny`` as it was when the ablation began (``ABLATION_BASE``) plus a few overrides,
trained by ``lenslib.train.train`` for the same number of steps on this CPU, then scored once: its EMA
weights sample the GenEval-format shape suite (``data/suites/shapes_geneval.jsonl``, every
``--stride``-th line, ``--per-prompt`` images each, detailed prompts, Euler + CFG) and the exact judge
gives GenEval's overall score with a bootstrap 95 % interval (``lenslib.eval.geneval.summarize``), and,
for the one-object lines, how often the samples have the colour, class and place the prompt asked for
(``lenslib.eval.words``: a score near zero does not say which words a model follows). Rows keep the
training seconds, so speed and quality are read together.

Arms run one after another and are kept as they finish (``lenslib.experiments.arms``, one results file):
a stopped run resumes at the arm it was training (its checkpoints) and skips finished arms whose overrides,
budget and scoring are unchanged; an arm whose scoring alone changed is scored again without training.
Arms share one world cache (``data.num_scenes``), built on first use. Chapter 4 tells what it found.

Run: ``.venv/bin/python benchmarks/learning_ablation.py [--arms a,b] [--steps N]``.
Writes ``benchmarks/results/learning_ablation.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lenslib.eval.generate import score_checkpoint
from lenslib.eval.geneval import summarize
from lenslib.eval.words import word_following
from lenslib.experiments.arms import Arm, ArmTable, run_arms
from lenslib.paths import cache_dir
from lenslib.train import train
from lenslib.train.checkpoint import latest_checkpoint
from lenslib.train.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "learning_ablation.json"
SUITE = Path(__file__).resolve().parent.parent / "data" / "suites" / "shapes_geneval.jsonl"

# name -> (what it tests, overrides of ABLATION_BASE)
ARMS: dict[str, tuple[str, list[str]]] = {}


def arm(name: str, what: str, *overrides: str) -> None:
    ARMS[name] = (what, list(overrides))


def score(cfg, lines, args) -> dict:
    """GenEval summary of the run's last checkpoint and which words its one-object samples follow
    (``lenslib.eval.words``); its first 32 samples go to ``samples.png`` in the run folder."""
    rows, images = score_checkpoint(
        cfg,
        latest_checkpoint(cfg.run.out_dir),
        lines,
        per_prompt=args.per_prompt,
        num_steps=args.sample_steps,
        guidance=args.guidance,
        prompt="detailed",
        batch_size=140,
        return_images=True,
    )
    grid = np.concatenate(
        [np.concatenate(images[r * 8 : (r + 1) * 8], 1) for r in range(min(4, len(images) // 8))], 0
    )
    Image.fromarray(grid).save(Path(cfg.run.out_dir) / "samples.png")
    s = summarize(rows, n_boot=1000)
    return {
        "overall": s["overall"]["score"],
        "ci95": list(s["overall"]["ci95"]),
        "tags": {k: v["accuracy"] for k, v in s["tags"].items()},
        "n_images": s["n_images"],
        "words": {
            r["word"]: {"share": r["share"], "ci95": list(r["ci95"]), "n": r["n"]}
            for r in word_following(lines, rows, images)
            if r["n"]
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="", help="comma-separated arm names (default: all)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--stride", type=int, default=1, help="score every N-th suite line (default: all 350)"
    )
    parser.add_argument("--per-prompt", type=int, default=1)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--out", default=None, help="run folders (default <cache>/ablation)")
    parser.add_argument("--list", action="store_true", help="print the arms and exit")
    args = parser.parse_args()
    if args.list:
        for name, (what, ov) in ARMS.items():
            print(f"{name:24s} {what}  {' '.join(ov)}")
        return 0
    names = [a for a in args.arms.split(",") if a] or list(ARMS)
    unknown = [a for a in names if a not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; --list shows them")
    out = Path(args.out) if args.out else cache_dir() / "ablation"
    lines = [json.loads(x) for x in SUITE.read_text().splitlines()][:: args.stride]
    eval_key = {
        "words": True,  # records scored before word_following existed are scored again
        "stride": args.stride,
        "per_prompt": args.per_prompt,
        "sample_steps": args.sample_steps,
        "guidance": args.guidance,
    }
    store = ArmTable(
        RESULTS,
        run_fields=lambda: dict(
            torch=torch.__version__,
            cpu=platform.processor() or platform.machine(),
            cpu_count=os.cpu_count(),
            date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        ),
    )

    def run(one: Arm, done: dict | None) -> dict:
        """Train the arm (unless a record under another scoring key has its training) and score it."""
        name = one.name
        what, overrides = ARMS[name]
        train_key = {"overrides": overrides, "steps": args.steps}
        cfg = load_config(
            "cpu-tiny",
            [
                *ABLATION_BASE,
                *overrides,
                f"run.steps={args.steps}",
                "eval.every=0",
                "run.progress=log",
                f"run.save_every={args.steps}",
                "run.log_every=100",
                f"run.name={name}",
                f"run.out_dir={out / name}",
            ],
        )
        trained = done and {k: done["key"].get(k) for k in train_key} == train_key
        if trained and latest_checkpoint(cfg.run.out_dir) is not None:  # same training: score it again only
            summary = {"params": done["params"], "seconds": done["train_s"], "final_loss": done["final_loss"]}
        else:
            summary = train(cfg)
        t = time.time()
        row = {
            "what": what,
            "params": summary["params"],
            "train_s": summary["seconds"],
            "final_loss": summary["final_loss"],
            **score(cfg, lines, args),
            "eval_s": time.time() - t,
            "torch_threads": torch.get_num_threads(),
            "load_avg_end": os.getloadavg()[0],
        }
        if trained:
            row.update(
                load_avg_end=done.get("load_avg_end"), torch_threads=done.get("torch_threads")
            )  # the training's
        print(
            f"{name}: overall {row['overall']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] "
            f"after {row['train_s']:.0f} s; tags {row['tags']}",
            flush=True,
        )
        return row

    arms = [Arm(name, {"overrides": ARMS[name][1], "steps": args.steps, **eval_key}) for name in names]
    run_arms(arms, store, run, reused=lambda one, done: print(f"{one.name}: kept ({done['overall']:.3f})"))
    print(f"{'arm':24s}{'train s':>9}{'overall':>9}  95% CI")
    for name, r in store.read()["arms"].items():
        print(f"{name:24s}{r['train_s']:>9.0f}{r['overall']:>9.3f}  [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
    return 0


# Every arm starts from ABLATION_BASE, cpu-tiny as it was when the ablation began (8x8 patches, constant
# LR), and spells out the four choices of the first round (width, conv options, training mu, sampling
# shift), so the table keeps its meaning when the shipped cpu-tiny.yaml changes. "base" is cpu-tiny before
# this ablation.
ABLATION_BASE = ("data.patch=8", "optim.decay_ratio=0.0")
POOL = "data.num_scenes=20000"
W256 = ("model.preset=cpu-small", "model.kwargs={num_layers: 4}")  # width 256, 4 blocks, ~10M parameters
W128 = ("model.preset=cpu-tiny", "model.kwargs={}")  # width 128, 4 blocks, ~2.7M parameters
W128_CONV = ("model.preset=cpu-tiny", "model.kwargs={pixel_stem: 16, pixel_head: 32}")  # not Lens
W256_CONV = ("model.preset=cpu-small", "model.kwargs={num_layers: 4, pixel_stem: 16, pixel_head: 32}")
MU0 = ("flow.mu=0.0", "eval.sample_mu=null")
MU1 = ("flow.mu=1.0", "eval.sample_mu=1.0")

arm(
    "base",
    "cpu-tiny before this ablation (width 256, mu 0), on a cached pool of 20k scenes",
    POOL,
    *W256,
    *MU0,
)
arm("mu1", "train and sample towards noise (logit-normal mu 1, Euler shift 1)", POOL, *W256, *MU1)
arm(
    "mu1-conv",
    "mu1 with a conv stem and head around the patches (not Lens: pixel_stem 16, pixel_head 32)",
    POOL,
    *W256_CONV,
    *MU1,
)
arm(
    "mu1-p4-w128",
    "mu1 with 4x4 patches (256 tokens) and width 128: about the cost of 8x8 at width 256",
    POOL,
    *W128,
    *MU1,
    "data.patch=4",
)
arm("mu1-w128", "mu1 at width 128", POOL, *W128, *MU1)
arm(
    "conv-w128",
    "the conv stem and head at width 128, without the shift towards noise (mu 0)",
    POOL,
    *W128_CONV,
    *MU0,
)
arm(
    "mu1-conv-w128",
    "all three: conv stem and head, width 128, mu 1 (cpu-tiny after the first round)",
    POOL,
    *W128_CONV,
    *MU1,
)

# Second round, on top of the first round's recipe (mu1-conv-w128).
ROUND1 = (POOL, *W128_CONV, *MU1)  # mu1-conv-w128
arm(
    "wsd",
    "mu1-conv-w128, with the LR decayed linearly to 0 over the last 30 % of steps (warmup-stable-decay)",
    *ROUND1,
    "optim.decay_ratio=0.3",
)
arm(
    "p4-w64-conv",
    "4x4 patches (256 tokens) at width 64 (2 heads), conv stem and head: about the cost of mu1-conv-w128",
    POOL,
    *MU1,
    "model.preset=cpu-tiny",
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32}",
    "data.patch=4",
)
arm(
    "depth6",
    "mu1-conv-w128 with 6 blocks instead of 4",
    POOL,
    *MU1,
    "model.preset=cpu-tiny",
    "model.kwargs={num_layers: 6, pixel_stem: 16, pixel_head: 32}",
)
arm(
    "velocity",
    "mu1-conv-w128, predicting the velocity (Lens) instead of the clean image",
    *ROUND1,
    "flow.prediction=velocity",
)

arm(
    "skip",
    "mu1-conv-w128, with the head also reading the stem's features of the input and the timestep "
    "(pixel_skip, not Lens)",
    POOL,
    *MU1,
    "model.preset=cpu-tiny",
    "model.kwargs={pixel_stem: 16, pixel_head: 32, pixel_skip: true}",
)

P4_W64 = (
    "model.preset=cpu-tiny",
    "data.patch=4",
)  # with model.kwargs {inner_dim: 64, num_attention_heads: 2, ...}
arm(
    "p4-w64-wsd",
    "p4-w64-conv with the LR decay of wsd (the shipped cpu-tiny)",
    POOL,
    *MU1,
    *P4_W64,
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32}",
    "optim.decay_ratio=0.3",
)
TEXT96 = ("data.max_text_tokens=96", "data.text_encoder_kwargs.max_length=96")
arm(
    "p4-w64-wsd-t96",
    "p4-w64-wsd reading 96 caption tokens instead of 32 (every suite prompt's relations fit, not "
    "only its first sentence)",
    POOL,
    *MU1,
    *P4_W64,
    *TEXT96,
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32}",
    "optim.decay_ratio=0.3",
)

# Third round, on top of the shipped recipe (p4-w64-wsd).
P4_W64_WSD = (POOL, *MU1, *P4_W64, "optim.decay_ratio=0.3")
arm(
    "pooled",
    "p4-w64-wsd with the mean caption token added to the timestep embedding (pooled_text, not Lens): every "
    "block's modulation sees the caption, as DiT's class label does",
    *P4_W64_WSD,
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32, pooled_text: true}",
)
P4_W64_POOLED = (
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32, pooled_text: true}"
)
arm(
    "single",
    "p4-w64-wsd trained on one object per scene (a diagnostic: can the model draw a shape when nothing else "
    "is asked of it?)",
    *P4_W64_WSD,
    "data.world_kwargs.max_objects=1",
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32}",
)
arm(
    "tokconv",
    "p4-w64-wsd with a residual depthwise 3x3 convolution over the token grid before every block "
    "(token_conv, not Lens): neighbouring tokens see each other without learning to attend",
    *P4_W64_WSD,
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32, token_conv: true}",
)
arm(
    "lr3e-3",
    "p4-w64-wsd at three times the learning rate (3e-3): is a 0.7M-parameter model held back by its step "
    "size?",
    *P4_W64_WSD,
    "optim.lr=3e-3",
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32}",
)
arm(
    "p4-w128-wsd",
    "p4-w64-wsd at width 128 (4 heads of 32, 2.7M parameters, about 2x the cost of a step): is the "
    "ceiling the model's size?",
    *P4_W64_WSD,
    "model.kwargs={pixel_stem: 16, pixel_head: 32}",
)
arm(
    "mu2",
    "p4-w64-wsd with training and sampling shifted further towards noise (mu 2: half the samples at "
    "t > 0.88), where the estimates still follow the noise",
    *P4_W64_WSD,
    "flow.mu=2.0",
    "eval.sample_mu=2.0",
    "model.kwargs={inner_dim: 64, num_attention_heads: 2, pixel_stem: 16, pixel_head: 32}",
)

if __name__ == "__main__":
    raise SystemExit(main())
