"""``lens experiment captions``: the caption (and reasoner) ablation from the command line.

    lens experiment captions --preset reduced --out runs/captions
    lens experiment captions --preset full --seeds 0 1 2 3 --kinds brief detailed

Prints the per-arm table, the detailed − brief paired difference and the reasoner's effect, and writes
``summary.json`` into the output folder. Used in chapter 6.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("experiment", help="run one of the paper's ablations on the synthetic world")
    sub = p.add_subparsers(dest="experiment", required=True)
    c = sub.add_parser(
        "captions",
        help="caption ablation: alt-text / brief / detailed / mixed training captions",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    c.add_argument("--preset", default="reduced", help="micro | reduced | full")
    c.add_argument(
        "--out", default=None, help="output folder (default <cache>/experiments/captions/<preset>)"
    )
    c.add_argument("--kinds", nargs="+", default=None, help="caption kinds (default all four)")
    c.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default the preset's)")
    c.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    c.add_argument(
        "overrides", nargs="*", help="run-config overrides applied to every arm (section.key=value)"
    )
    c.set_defaults(func=_cmd_captions)


def _cmd_captions(args) -> int:
    # lazy: lenslib.cli imports this module for `lens --help`, which these would slow down (captions
    # ~0.2 s; atomic and paths 5-25 ms, tempfile and random; python -X importtime); lenslib.cli is also
    # the caller. caption_runs (torch, ~4 s) is imported once the arguments are checked.
    from lenslib.atomic import write_text_atomic  # noqa: PLC0415
    from lenslib.cli import fail  # noqa: PLC0415
    from lenslib.experiments import captions as cap  # noqa: PLC0415
    from lenslib.paths import cache_dir  # noqa: PLC0415

    kinds = tuple(args.kinds or cap.KINDS)
    try:
        if args.n_boot < 1:
            raise ValueError(
                f"--n-boot {args.n_boot}: the bootstrap needs at least 1 replicate (default 2000)"
            )
        preset = cap.get_preset(args.preset)
        out = (
            Path(args.out) if args.out else cache_dir(create=False) / "experiments" / "captions" / args.preset
        )
        above = next((p for p in (out, *out.parents) if p.exists()), None)
        if above is not None and not above.is_dir():
            raise NotADirectoryError(f"--out {out}: {above} is a file; give a folder (existing or new)")
        cap.arm_configs(preset, out, kinds, args.seeds, args.overrides)  # fail before any training
    except (ValueError, NotADirectoryError) as err:
        return fail("experiment captions", err)
    from lenslib.experiments import caption_report, caption_runs  # noqa: PLC0415 (see above)

    res = caption_runs.run_captions(preset, out, kinds, args.seeds, overrides=args.overrides)
    print(res.table(n_boot=args.n_boot).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    report = {"preset": args.preset, "kinds": list(kinds), "seeds": list(res.seeds)}
    if {"detailed", "brief"} <= set(kinds):
        d = res.difference("detailed", "brief", "detailed", n_boot=args.n_boot)
        print(caption_report.conclusion(d))
        report["detailed_minus_brief_prompted_in_detail"] = d
    for kind in kinds:
        d = res.mode_difference(kind, "reasoner", "brief", n_boot=args.n_boot)
        print(
            caption_report.conclusion(
                d, "reasoner-rewritten prompts", "brief prompts", f"{kind}-trained model"
            )
        )
        report[f"reasoner_minus_brief_{kind}"] = d
    report["table"] = res.table(n_boot=args.n_boot).to_dict(orient="records")
    report["curves"] = res.curves().to_dict(orient="records")
    write_text_atomic(out / "summary.json", json.dumps(report, indent=1, default=list))
    print(f"wrote {out / 'summary.json'}")
    return 0
