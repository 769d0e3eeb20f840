"""Command line: ``faceptor-hf convert ...``."""

from __future__ import annotations

import argparse

from . import convert_faceptor_original_to_hf


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="faceptor-hf", description="Faceptor face analysis for Hugging Face")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert an official Faceptor checkpoint to a faceptor-hf folder")
    convert_faceptor_original_to_hf.add_arguments(convert)
    convert.set_defaults(run=convert_faceptor_original_to_hf.run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
