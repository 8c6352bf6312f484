"""The ``lens`` command line: one entry point whose subcommands live next to the code they drive.

Each area of the package registers its own subcommands through ``register(subparsers)`` in its
``cli.py``; this module only assembles them, so ``lens --help`` lists everything that is installed.

Bad input is answered the same way by every subcommand: one line on stderr naming the problem and the fix,
exit status 2, and nothing written or loaded first (each command checks its arguments before it works).
Usage errors (an unknown option, a malformed number) are one line too. Errors that only a bug or a broken
machine can cause keep their traceback; ``lens --debug ...`` (``--debug`` may stand anywhere) shows the
traceback of expected errors as well. ``KEY=VALUE`` overrides (``lens train``, ``lens experiment captions``)
may stand before, between or after the options.

Every chapter's commands run through :func:`main`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import yaml

from lenslib import __version__

__all__ = [
    "main",
    "build_parser",
    "add_documented",
    "fail",
    "options",
    "EXIT_USAGE",
    "EXPECTED_ERRORS",
    "debugging",
]

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

EXIT_USAGE = 2  # bad input: nothing was done


def _expected_errors() -> tuple[type[BaseException], ...]:
    # ValueError covers ConfigError, JSONDecodeError and UnicodeDecodeError; the OSErrors are those a wrong
    # path causes.
    return (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        yaml.YAMLError,
    )


#: The exception types a command may raise for bad input; :func:`main` turns them into one line and exit 2.
EXPECTED_ERRORS = _expected_errors()

_DEBUG = False


def debugging() -> bool:
    """True under ``lens --debug``: commands re-raise expected errors instead of reducing them to one line."""
    return _DEBUG


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(command: str, err: BaseException | str, code: int = EXIT_USAGE) -> int:
    """Report a refused input as ``lens COMMAND: error: MESSAGE`` (one line on stderr) and return ``code``.

    Call it inside the ``except`` block that caught ``err``: under ``--debug`` it re-raises ``err`` with its
    traceback instead. Every subcommand reports bad input through it (or through :func:`main`'s net).
    """
    if _DEBUG and isinstance(err, BaseException):
        raise err
    message = _one_line(err if isinstance(err, str) else (str(err) or type(err).__name__))
    print(f"lens {command}: error: {message}", file=sys.stderr, flush=True)
    return code


def options(args: argparse.Namespace, *names: str) -> dict:
    """``{name: args.name}`` for the options a command passes on by keyword."""
    return {name: getattr(args, name) for name in names}


def add_documented(subparsers, name: str, help: str, doc: str) -> argparse.ArgumentParser:
    """Add ``lens NAME``, whose ``--help`` shows ``doc`` (its module's docstring) with the docstring's
    line breaks."""
    return subparsers.add_parser(
        name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``PROG: error: MESSAGE (see PROG --help)``),
    exit 2.

    Subparsers inherit the class, so every ``lens`` subcommand answers an unknown option or a malformed
    value this way.
    """

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lens",
        description="The Lens companion: model, data, training and evaluation of the Lens text-to-image "
        "recipe.",
        epilog="Bad input is reported as one line on stderr with exit status 2; --debug (anywhere on the "
        "line) shows the traceback instead.",
    )
    parser.add_argument("--version", action="version", version=f"lenslib {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
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


def _command_name(args) -> str:
    parts = [args.command]
    for attr in ("world_command", "data_command", "experiment"):
        if getattr(args, attr, None):
            parts.append(getattr(args, attr))
    return " ".join(p for p in parts if p)


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` wherever it stands (before a ``--``), so it works before and after the
    subcommand."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    return [a for i, a in enumerate(argv) if not (i < end and a == "--debug")], debug


def main(argv: list[str] | None = None) -> int:
    """Run ``lens ARGV``; returns the exit status (usage errors and ``--help`` raise ``SystemExit`` as
    argparse does)."""
    global _DEBUG
    argv, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        name = _command_name(args) if getattr(args, "command", None) else None
        prog = f"lens {name}" if name else "lens"
        # KEY=VALUE overrides after an option are left over by argparse: the command's overrides
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in a and not a.startswith("-") for a in extra
        ):
            args.overrides.extend(extra)
        else:
            parser.exit(
                EXIT_USAGE, f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see {prog} --help)\n"
            )
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    _DEBUG = debug or args.debug
    try:
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as err:
        return fail(_command_name(args), err)
    finally:
        _DEBUG = False


if __name__ == "__main__":
    sys.exit(main())
