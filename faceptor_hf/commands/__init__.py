"""The ``faceptor-hf`` command line: one subcommand per module of this package.

A subcommand lives in ``faceptor_hf/commands/<name>.py`` (dashes in the name become underscores) and exposes
``register(subparsers)``, which adds its parser and sets ``run`` as its default, and ``run(args) -> int``, the exit
status; its parser uses ``formatting.HelpFormatter`` (every option with a help text, shown with its default) and
its user mistakes raise ``errors.CommandError`` (or a library error that ``errors.USER_ERRORS`` names). Library
work (loading a model, analyzing inputs, training) lives outside this package; a command parses, calls it and
prints. Listing the name in ``SUBCOMMANDS`` adds it to ``faceptor-hf``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from .errors import CommandError, is_user_error, report_user_error
from .formatting import HelpFormatter

SUBCOMMANDS = ("analyze", "convert", "export", "train", "prepare-data", "evaluate", "index", "demo", "serve")


def build_parser() -> argparse.ArgumentParser:
    """The ``faceptor-hf`` parser with every subcommand of ``SUBCOMMANDS`` registered, in that order."""
    parser = argparse.ArgumentParser(prog="faceptor-hf", description="Faceptor face analysis for Hugging Face",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"faceptor-hf {__version__}",
                        help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``faceptor-hf`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    A user's mistake (``errors.is_user_error``) becomes one ``error: <message>`` line on stderr (rank 0 only under a
    multi-process launch) and status 2; Ctrl-C that a subcommand does not handle itself becomes ``interrupted`` and
    status 130. Anything else propagates with its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as error:
        if not is_user_error(error):
            raise
        return report_user_error(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["CommandError", "HelpFormatter", "SUBCOMMANDS", "build_parser", "main"]
