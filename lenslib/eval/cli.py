"""``lens eval``: score a folder of generated images on a GenEval-format suite with the exact judge.

::

    lens eval --metadata data/suites/shapes_geneval.jsonl --images outputs/ [--out results/] [--vocab shapes]

The folder is laid out as GenEval's generation script writes it (``<index:05d>/metadata.jsonl``,
``<index:05d>/samples/<k:04d>.png``). Writes ``results.jsonl`` (one line per image) and
``summary.json`` (per-tag accuracy, overall, bootstrap 95 % intervals) into ``--out`` (default:
the image folder) and prints GenEval's summary table. Missing or unreadable images score as
failures and are counted; lines or images that cannot be judged get an error record and the run
completes; the exit status is then 1. Lines naming a class the world cannot draw are not judged:
they are listed in ``summary.json`` and counted in the table (``--strict`` refuses them, exit 2).
Bad arguments (a count below 1, an ``--out`` that is a file) are refused with exit 2 before any image
is read. Used in chapter 5.
"""

from __future__ import annotations

from pathlib import Path

from lenslib.atomic import blocking_file
from lenslib.cli import fail, options


def check_args(args) -> None:
    """Refuse what would fail after judging: counts below 1 and an output path that cannot be a folder.

    ``lens eval`` calls it before any image is read (chapter 5 runs it on its samples)."""
    for flag, value in (("--per-prompt", args.per_prompt), ("--size", args.size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: give a positive number, or omit it to take it from the folder")
    if args.n_boot < 1:
        raise ValueError(
            f"--n-boot {args.n_boot}: the bootstrap needs at least 1 replicate (2000, the default, "
            "gives stable 95 % intervals)"
        )
    out = Path(args.out or args.images)
    if (p := blocking_file(out)) is not None:
        raise NotADirectoryError(
            f"--out {out}: {p} is a file; give a folder for results.jsonl and summary.json"
        )
    for name in ("results.jsonl", "summary.json"):
        if (out / name).is_dir():
            raise IsADirectoryError(f"--out {out}: {out / name} is a folder; move it or give another --out")


def _eval(args) -> int:
    # lazy: lenslib.cli imports this module for `lens --help`; the judge costs ~0.4 s (python -X
    # importtime)
    from lenslib.eval.geneval import (  # noqa: PLC0415
        evaluate_folder,
        format_summary,
        summarize,
        write_results,
    )

    try:
        check_args(args)
        named = options(args, "vocab", "size", "per_prompt", "strict")
        rows = evaluate_folder(args.images, args.metadata, **named)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError) as err:
        return fail("eval", err)  # bad arguments, no folder, no prompts at all: nothing to score
    summary = summarize(rows, n_boot=args.n_boot, seed=args.seed)
    results, summary_path = write_results(rows, summary, args.out or args.images)
    print(format_summary(summary))
    print(f"results: {results}\nsummary: {summary_path}")
    if summary["n_errors"]:
        lost = summary["n_missing"] + summary["n_unreadable"]
        print(
            f"{summary['n_errors']} images could not be judged ({summary['n_missing']} missing, "
            f"{summary['n_unreadable']} unreadable: {lost} scored as failures); "
            f"see the 'error' lines in {results}"
        )
        return 1
    return 0


def register(subparsers) -> None:
    """Add ``lens eval``."""
    p = subparsers.add_parser(
        "eval",
        help="score GenEval-layout image folders with the exact judge",
        description="Score images in GenEval's folder layout with the world's exact judge.",
    )
    p.add_argument(
        "--metadata",
        default=None,
        help="suite file (evaluation_metadata.jsonl); default: each folder's own metadata.jsonl",
    )
    p.add_argument("--images", required=True, help="folder with <index:05d>/samples/<k:04d>.png")
    p.add_argument(
        "--out", default=None, help="where to write results.jsonl and summary.json (default: --images)"
    )
    p.add_argument("--vocab", choices=("shapes", "emoji"), default="shapes")
    p.add_argument(
        "--size", type=int, help="expected image side in px (default: the most common in the folder)"
    )
    p.add_argument(
        "--per-prompt",
        type=int,
        default=None,
        help="expected images per prompt (default: the most found for any prompt)",
    )
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse lines this world cannot draw (default: list and count them, unjudged)",
    )
    p.set_defaults(func=_eval)
