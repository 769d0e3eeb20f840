"""``faceptor-hf prepare-data``: a dataset's native release -> a self-contained copy in the common schema.

One split (``--split``) is written as that split's dataset; several (the default: every split of the dataset) as a
dataset dictionary: ``<output>/<split>/`` each (arrow: ``load_from_disk`` reads the whole folder; parquet:
``data-*.parquet`` per split folder). Images are embedded, so the copy does not depend on the release folder.
Everything is written under ``<output>.partial`` and renamed at the end: an interrupted run leaves no output that
looks complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from .errors import CommandError
from .formatting import HelpFormatter
from .options import parse_key_values


def register(subparsers) -> None:
    """Add the ``prepare-data`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "prepare-data", help="convert a dataset's native release to the common schema (self-contained copy)",
        description="Read a dataset as its authors release it and write it in the common schema with images "
                    "embedded. Bad samples (missing files, malformed lines, unreadable images) stop the run with "
                    "their file and line, or are skipped and counted with --skip-bad.",
        formatter_class=HelpFormatter)
    parser.add_argument("name", metavar="NAME",
                        help="the dataset (case-insensitive), e.g. 300w, lapa, celeba; an unknown name lists them")
    parser.add_argument("--data-dir", default=None, help="folder of the native release (required; see --layout)")
    parser.add_argument("--output", default=None,
                        help="folder to write; when not given, --push-to-hub alone (nothing written locally)")
    parser.add_argument("--split", nargs="+", default=None, metavar="SPLIT",
                        help="split(s) to convert; when not given, every split of the dataset")
    parser.add_argument("--format", default="arrow", choices=["arrow", "parquet"],
                        help="arrow: a save_to_disk folder (datasets.load_from_disk); parquet: data-*.parquet shards")
    parser.add_argument("--shard-size", type=int, default=None, metavar="N",
                        help="rows per shard (parquet: files of N rows, the last one smaller; arrow: ceil(rows / N) "
                             "files); shards stream well and split over processes (see docs/training.md, Streaming). "
                             "Default: parquet files of about 500 MB, arrow as datasets saves it")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip samples with problems and print how many and which, instead of stopping")
    parser.add_argument("--no-verify-images", action="store_true",
                        help="do not open every image while converting (faster; unreadable files then fail later)")
    parser.add_argument("--option", nargs="+", default=[], metavar="KEY=VALUE",
                        help="converter option(s), values parsed as JSON where they can be (e.g. annotations=native, "
                             "detect_keypoints=true); see --layout for a dataset's options")
    parser.add_argument("--detect-keypoints", action="store_true",
                        help="run the package's face detector for the 5 points where the protocol needs them and the "
                             "release lacks them (converters with the detect_keypoints option, e.g. morph2)")
    parser.add_argument("--num-proc", type=int, default=None, help="worker processes for conversion and writing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO",
                        help="also upload to this Hub dataset repository (one config, one split per converted split)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    parser.add_argument("--token", default=None, help="with --push-to-hub: Hub token (default: the logged-in one)")
    parser.add_argument("--layout", action="store_true",
                        help="print what --data-dir must hold, the splits, options and protocol notes, and exit")
    parser.set_defaults(run=run)


def _describe(spec) -> str:
    options = ", ".join(spec.options) or "none"
    return (f"{spec.name}: task {spec.task or '(verification pairs)'}\n  data dir: {spec.layout}\n  splits: "
            f"{', '.join(spec.splits)}\n  options: {options}\n  protocol: {spec.protocol}")


def run(args: argparse.Namespace) -> int:
    """Convert and write (and push); 0 on success. Problems of the release raise ``CommandError`` with the
    converter's file and line; with ``--skip-bad`` their summary is printed."""
    from ..data import BadSampleReport, DatasetFormatError, get_native_dataset, load_native

    try:
        spec = get_native_dataset(args.name)
    except KeyError as error:
        raise CommandError(error.args[0]) from error
    if args.layout:
        print(_describe(spec))
        return 0
    if args.data_dir is None:
        raise CommandError("give --data-dir, the folder of the native release (see --layout for what it holds)")
    if args.output is None and args.push_to_hub is None:
        raise CommandError("give --output FOLDER and/or --push-to-hub REPO")
    if args.shard_size is not None and args.shard_size < 1:
        raise CommandError(f"--shard-size must be at least 1 row, got {args.shard_size}")
    splits = list(dict.fromkeys(args.split or spec.splits))
    unknown = [split for split in splits if split not in spec.splits]
    if unknown:
        raise CommandError(f"{spec.name}: unknown split(s) {unknown}; splits: {', '.join(spec.splits)}")
    output = os.path.abspath(args.output) if args.output else None
    if output and os.path.exists(output) and not args.overwrite:
        raise CommandError(f"{output} exists; choose another --output or pass --overwrite")
    options = parse_key_values(args.option)
    if args.detect_keypoints:
        if "detect_keypoints" not in spec.options:
            raise CommandError(f"{spec.name}: --detect-keypoints does not apply: the release annotates what its "
                               f"protocol needs (converter options: {', '.join(spec.options) or 'none'})")
        options["detect_keypoints"] = True

    report = BadSampleReport()
    converted = {}
    for split in splits:
        try:
            converted[split] = load_native(spec.name, args.data_dir, split, skip_bad=args.skip_bad,
                                           verify_images=not args.no_verify_images, num_proc=args.num_proc,
                                           report=report, **options)
        except (DatasetFormatError, FileNotFoundError, ValueError) as error:
            raise CommandError(str(error).splitlines()[0]) from error
        print(f"{spec.name} {split}: {len(converted[split])} samples", file=sys.stderr)
    if args.skip_bad:
        print(report.summary(), file=sys.stderr)

    if output:
        write(converted, output, args.format, args.num_proc, single=args.split is not None and len(splits) == 1,
              shard_size=args.shard_size)
        print(f"wrote {', '.join(f'{split} ({len(data)})' for split, data in converted.items())} to {output} "
              f"({args.format})")
    if args.push_to_hub:
        from datasets import DatasetDict

        DatasetDict(converted).push_to_hub(args.push_to_hub, private=args.private, token=args.token)
        print(f"pushed {', '.join(converted)} to {args.push_to_hub}")
    return 0


def write(converted: dict, output: str, file_format: str, num_proc: int | None, single: bool,
          shard_size: int | None = None) -> str:
    """One split -> ``output`` is that split; several -> ``output/<split>`` each (plus ``dataset_dict.json`` for
    arrow, so ``load_from_disk`` returns the whole dictionary), in shards of ``shard_size`` rows when given. All
    under ``<output>.partial`` until complete."""
    from ..data import save_prepared

    if single:
        (dataset,) = converted.values()
        return save_prepared(dataset, output, file_format, overwrite=True, num_proc=num_proc, shard_size=shard_size)
    partial = output + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for split, dataset in converted.items():
        save_prepared(dataset, os.path.join(partial, split), file_format, num_proc=num_proc, shard_size=shard_size)
    if file_format == "arrow":
        with open(os.path.join(partial, "dataset_dict.json"), "w", encoding="utf-8") as handle:
            json.dump({"splits": list(converted)}, handle)
    if os.path.exists(output):
        shutil.rmtree(output)
    os.replace(partial, output)
    return output
