"""``faceptor-hf evaluate``: score a model on a dataset's test split(s) with the paper's protocol.

It prints the paper's table row(s) with the paper's figures beside ours, and writes ``metrics.json`` (every
metric of every split, the paper's figures, the model and the protocol) and ``predictions-<split>.parquet`` (one
row per sample: ``index`` = row number, then the task type's fields) to ``--output-dir``.

Under ``accelerate launch --num_processes N`` (or ``torchrun``) the processes split each split's batches, the main
process gathers them, and the files are those of one process, row for row (``evaluation.distributed``); the main
process prints and writes them.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import CommandError
from .formatting import HelpFormatter
from .model_options import add_model_arguments, model_source, parse_device
from .options import parse_key_values


def register(subparsers) -> None:
    """Add the ``evaluate`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "evaluate", help="score a model on a dataset's test split(s) with the paper's protocol",
        description="Run a model over a dataset's test split(s) with the paper's test-time protocol for that "
                    "dataset (crop, inverse mapping, flip-sum for verification), print the paper's table row with "
                    "its reported figure beside ours, and write metrics.json and predictions-<split>.parquet.",
        formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=None,
                      help="native dataset whose protocol applies, e.g. 300w, lapa, lfw (an unknown name lists them)")
    data.add_argument("--data-dir", default=None, help="the dataset's native release (read with its converter)")
    data.add_argument("--prepared", default=None,
                      help="a `faceptor-hf prepare-data` output (or any save_to_disk / parquet folder in the common "
                           "schema) instead of --data-dir")
    data.add_argument("--split", nargs="+", default=None, metavar="SPLIT",
                      help="split(s) to score; when not given, the protocol's test splits")
    data.add_argument("--task", default=None,
                      help="the model task to evaluate: when the model names the protocol's task differently, or, "
                           "without --dataset, the task whose default protocol scores --prepared")
    data.add_argument("--limit", type=int, default=None, help="score only the first LIMIT rows of each split")
    data.add_argument("--skip-bad", action="store_true",
                      help="with --data-dir: skip and count bad samples of the release instead of stopping")
    data.add_argument("--option", nargs="+", default=[], metavar="KEY=VALUE",
                      help="with --data-dir: converter option(s) (see `faceptor-hf prepare-data NAME --layout`)")

    model = add_model_arguments(parser)
    model.add_argument("--batch-size", type=int, default=32, help="rows per model call")
    model.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding and warping rows")

    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", default=None,
                        help="folder of metrics.json and predictions-<split>.parquet; when not given, "
                             "evaluation/<dataset or task>")
    output.add_argument("--progress", action="store_true", help="show the progress bar even without a terminal")
    parser.set_defaults(run=run)


def open_prepared(path: str):
    """A Dataset or DatasetDict from a save_to_disk folder, a folder of parquet files, or a folder of split folders
    of either (what ``prepare-data`` writes)."""
    from ..data.reading import open_prepared as read_prepared

    if not os.path.isdir(path):
        raise CommandError(f"--prepared {path}: no such folder")
    prepared = read_prepared(path)
    if prepared is None:
        raise CommandError(f"--prepared {path}: neither a save_to_disk folder nor parquet files (directly or in split "
                           "folders)")
    return prepared


def datasets_to_score(args: argparse.Namespace, protocol, main_process: bool = True
                      ) -> list[tuple[str | None, object]]:
    """[(split name, Dataset)] of the run: read with the converter (``--data-dir``) or from ``--prepared``."""
    if args.data_dir:
        from ..data import BadSampleReport, DatasetFormatError, load_native

        splits = args.split or list(protocol.splits)
        if not splits:
            raise CommandError(f"the protocol of {protocol.name} names no test split; choose one with --split")
        report, loaded = BadSampleReport(), []
        for split in splits:
            try:
                loaded.append((split, load_native(protocol.name, args.data_dir, split, skip_bad=args.skip_bad,
                                                  report=report, **parse_key_values(args.option))))
            except (DatasetFormatError, FileNotFoundError, KeyError, ValueError) as error:
                message = error.args[0] if isinstance(error, KeyError) else str(error)
                raise CommandError(message.splitlines()[0]) from error
        if args.skip_bad and main_process:
            print(report.summary(), file=sys.stderr)
        return loaded
    prepared = open_prepared(args.prepared)
    if isinstance(prepared, dict):
        splits = args.split or [split for split in protocol.splits if split in prepared] or list(prepared)
        missing = [split for split in splits if split not in prepared]
        if missing:
            raise CommandError(f"--prepared {args.prepared} has no split(s) {missing}; it has {list(prepared)}")
        return [(split, prepared[split]) for split in splits]
    if args.split and len(args.split) > 1:
        raise CommandError(f"--prepared {args.prepared} holds one split; give at most one --split (its name)")
    split = args.split[0] if args.split else (protocol.splits[0] if len(protocol.splits) == 1 else None)
    return [(split, prepared)]


def run(args: argparse.Namespace) -> int:
    """Evaluate each split, print the table, write the files; 0 on success."""
    from ..analysis import distributed_shard
    from ..evaluation import evaluate, get_protocol
    from ..evaluation.evaluate import resolve_protocol
    from ..evaluation.report import format_table, write_metrics, write_predictions
    from ..loading import load_model

    if bool(args.data_dir) == bool(args.prepared):
        raise CommandError("give exactly one of --data-dir (a native release) and --prepared (a prepared copy)")
    if args.data_dir and not args.dataset:
        raise CommandError("--data-dir needs --dataset NAME (which converter reads it)")
    if not args.dataset and not args.task:
        raise CommandError("--prepared needs --dataset NAME (its protocol) or --task TASK (that task's default "
                           "protocol)")
    if args.dataset:
        try:
            protocol = get_protocol(args.dataset)
        except KeyError as error:
            raise CommandError(error.args[0]) from error
    device = parse_device(args.device)
    # Several processes (accelerate launch / torchrun): each runs on its own device and scores its share.
    rank, world, shard_device = distributed_shard()
    if shard_device is not None and args.device in ("cpu", "cuda"):
        device = shard_device
    source = model_source(args)
    model, processor = load_model(source, dtype=args.dtype, device=device)
    if not args.dataset:
        try:
            protocol = resolve_protocol(args.task, list(model.config.task_names))
        except KeyError as error:
            raise CommandError(error.args[0]) from error
    scored = datasets_to_score(args, protocol, main_process=rank == 0)
    output_dir = args.output_dir or os.path.join("evaluation", protocol.name)
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
    progress = (args.progress or sys.stderr.isatty()) and rank == 0
    results = []
    for split, dataset in scored:
        try:
            result = evaluate(model, dataset, protocol.name, task=args.task, split=split, processor=processor,
                              batch_size=args.batch_size, limit=args.limit, num_workers=args.num_workers,
                              progress=progress)
        except (KeyError, ValueError) as error:
            message = error.args[0] if isinstance(error, KeyError) else str(error)
            raise CommandError(str(message).splitlines()[0]) from error
        results.append(result)
        if rank == 0:
            write_predictions(os.path.join(output_dir, f"predictions-{split or 'all'}.parquet"), result)
    if world > 1:
        import torch.distributed

        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    print(format_table(results))
    write_metrics(os.path.join(output_dir, "metrics.json"), results,
                  {"model": "random-weights" if source.random_weights else source.model, "protocol": protocol.name,
                   "crop": protocol.crop, "notes": protocol.notes, "dtype": args.dtype})
    print(f"metrics and per-sample predictions in {output_dir}")
    return 0
