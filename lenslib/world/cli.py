"""``lens world``: make synthetic datasets, render ground-truth suites, regenerate shipped suites.

::

    lens world make --n 10000 --size 64 --vocab shapes --out data/world-shapes [--shards] [--seed 0]
        [--overwrite]
    lens world render --metadata data/suites/shapes_geneval.jsonl --out renders/ [--per-prompt 4]
        [--vocab shapes] [--size 64] [--strict]
    lens world suites [--out data/suites]

Used in chapters 4 to 6. ``lens --help`` imports this module, so the commands import what they need
when they run (each of those imports costs 0.1-0.2 s, measured with ``python -X importtime``).
"""

from __future__ import annotations

from lenslib.cli import fail, options

SIZE_HELP = "image side in pixels (default and minimum: 64 for shapes, 128 for emoji)"


def _fail(command: str, err: Exception) -> int:
    return fail(f"world {command}", err)


def _make(args) -> int:
    from lenslib.world.dataset import make_dataset  # noqa: PLC0415  # lazy: 0.14 s, see the module doc

    try:
        named = options(args, "seed", "shards", "overwrite", "shard_size")
        out = make_dataset(args.n, args.size, args.vocab, args.out, **named)
    except (
        FileExistsError,
        NotADirectoryError,
        ValueError,
    ) as err:  # bad arguments or an occupied --out: nothing written
        return _fail("make", err)
    print(
        f"wrote {args.n} {args.vocab} examples to {out}"
        + (" (with webdataset shards)" if args.shards else "")
    )
    return 0


def _render(args) -> int:
    from lenslib.eval.geneval import NOT_DRAWN, render_suite  # noqa: PLC0415  # lazy: see the module doc
    from lenslib.world.suites import read_metadata  # noqa: PLC0415  # lazy: see the module doc

    # cheap: reads and checks every line; render_suite refuses (one line, before any work) what it cannot do
    try:
        report = read_metadata(args.metadata, args.vocab)
        named = options(args, "per_prompt", "vocab", "size", "seed", "overwrite", "strict")
        out = render_suite(args.metadata, args.out, **named)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as err:
        return _fail("render", err)
    print(f"rendered {len(report.lines)} of {report.n_lines} prompts x {args.per_prompt} images to {out}")
    if report.undrawable:
        classes = ", ".join(f"{c} ({n})" for c, n in report.undrawable_classes.most_common())
        print(
            f"{report.n_undrawable} of {report.n_lines} lines not drawn: they name classes the {args.vocab} "
            f"world cannot draw: {classes}"
        )
        print(
            f"lines not drawn are listed in {out / NOT_DRAWN} (pass --strict to refuse such a file instead)"
        )
    return 0


def _suites(args) -> int:
    from lenslib.world.suites import write_suites  # noqa: PLC0415  # lazy: 0.17 s, see the module doc

    for path in write_suites(args.out):
        print(f"wrote {path}")
    return 0


def register(subparsers) -> None:
    """Add ``lens world {make,render,suites}``."""
    world = subparsers.add_parser(
        "world", help="synthetic world: datasets, ground-truth renders, prompt suites"
    )
    world.description = "The synthetic world: scenes with exact ground truth."
    sub = world.add_subparsers(dest="world_command", metavar="WORLD_COMMAND")
    world.set_defaults(func=lambda args: (world.print_help(), 0)[1])

    make = sub.add_parser("make", help="write an image-caption dataset (HF datasets folder, optional shards)")
    make.add_argument("--n", type=int, required=True, help="number of examples")
    make.add_argument("--size", type=int, help=SIZE_HELP)
    make.add_argument("--vocab", choices=("shapes", "emoji"), default="shapes")
    make.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--shards", action="store_true", help="also write webdataset tar shards")
    make.add_argument("--shard-size", type=int, default=1000, help="examples per shard (default 1000)")
    make.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    make.set_defaults(func=_make)

    render = sub.add_parser(
        "render", help="render ground-truth images for a suite in GenEval's folder layout"
    )
    render.add_argument(
        "--metadata",
        required=True,
        help="GenEval-format evaluation_metadata.jsonl (GenEval's own: data/geneval/)",
    )
    render.add_argument("--out", required=True, help="output folder (<index>/samples/<k>.png)")
    render.add_argument("--per-prompt", type=int, default=4, help="images per prompt (GenEval uses 4)")
    render.add_argument("--vocab", choices=("shapes", "emoji"), default="shapes")
    render.add_argument("--size", type=int, help=SIZE_HELP)
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    render.add_argument(
        "--strict",
        action="store_true",
        help="refuse a file with lines this world cannot draw (default: render the others and "
        "list those in not_drawn.jsonl)",
    )
    render.set_defaults(func=_render)

    suites = sub.add_parser("suites", help="regenerate the shipped prompt suites (data/suites)")
    suites.add_argument(
        "--out", default=None, help="folder to write to (default: the repository's data/suites)"
    )
    suites.set_defaults(func=_suites)
