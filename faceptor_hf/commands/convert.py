"""``faceptor-hf convert``: an official Faceptor checkpoint -> a faceptor-hf folder (optionally pushed to the Hub).

The options and the work are those of ``faceptor_hf.convert_faceptor_original_to_hf``.
"""

from __future__ import annotations

import argparse

from .. import convert_faceptor_original_to_hf
from .formatting import HelpFormatter


def register(subparsers) -> None:
    """Add the ``convert`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "convert", help="convert an official Faceptor checkpoint to a faceptor-hf folder",
        description="Convert an official Faceptor checkpoint (checkpoint_rank0_iter_*.pth.tar) to a faceptor-hf "
                    "folder: config.json, model.safetensors, preprocessor_config.json and the model code.",
        formatter_class=HelpFormatter)
    convert_faceptor_original_to_hf.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Convert (and push) as the options say; the exit status of the converter."""
    return convert_faceptor_original_to_hf.run(args)
