"""The ``lens`` command line: one entry point whose subcommands live next to the code they drive.

Each area of the package registers its own subcommands through ``register(subparsers)`` in its
``cli.py``; this module only assembles them, so ``lens --help`` lists everything that is installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lenslib import __version__

# Areas that add subcommands, in the order the book introduces them.
COMMAND_MODULES = (
    "lenslib.world.cli",
    "lenslib.eval.cli",
    "lenslib.data.cli",
    "lenslib.model.cli",
    "lenslib.train.cli",
    "lenslib.cluster.cli",
    "lenslib.experiments.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lens",
        description="The Lens companion: model, data, training and evaluation of the Lens text-to-image recipe.",
    )
    parser.add_argument("--version", action="version", version=f"lenslib {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that area is not part of this installation
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
