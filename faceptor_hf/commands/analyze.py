"""``faceptor-hf analyze``: every face of files, folders, glob patterns or a dataset -> JSON, overlays and JSONL,
and with ``--output-format parquet`` a dataset of one row per face (``--push-to-hub`` publishes it). Video files
(``faceptor_hf.video.analyze_video``) -> frames.jsonl, tracks.json and with ``--render`` the overlay video.

The work, its output files and its resume rules are ``faceptor_hf.analysis.analyze_inputs``; this command parses
the options, loads the model (``model_options``), prints the per-input table and the totals, and maps the exit
status: 0 when every input was analyzed, 1 when some failed, 2 for a user's mistake, 3 when the push to the Hub
failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import contextmanager

import torch

from ..analysis import (
    IMAGE_SUFFIXES,
    MASK_FORMATS,
    OUTPUT_FORMATS,
    UNTRAINED_NOTE,
    AnalysisInterrupted,
    DatasetOptionError,
    ImageFiles,
    analyze_inputs,
    distributed_shard,
    open_dataset,
)
from ..configuration_faceptor import OFFICIAL_TASKS
from ..face_tracking import DEFAULT_MAX_GAP
from ..loading import load_model, model_identity
from ..pipeline_face_analysis import FaceAnalysisPipeline
from ..video_frames import VideoReadError, is_video_path
from .errors import CommandError
from .formatting import HelpFormatter
from .model_options import add_model_arguments, model_source, parse_device


def register(subparsers) -> None:
    """Add the ``analyze`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "analyze", help="analyze every face in images, folders, globs or a dataset",
        description="Detect every face and run the model's tasks on it. Writes <stem>.json, an overlay <stem>.png "
                    "and one PNG per parsing mask per image, and appends one record per image to results.jsonl. "
                    "A rerun resumes: inputs already analyzed by the same model with the same options are skipped; "
                    "failed, changed or new inputs are analyzed. Ctrl-C stops after the records written so far.",
        formatter_class=HelpFormatter)
    source = parser.add_argument_group("inputs")
    source.add_argument("inputs", nargs="*",
                        help="image files, folders (searched recursively) or glob patterns; or video files (any "
                             "container PyAV opens, pip install \"faceptor-hf[video]\")")
    source.add_argument("--dataset", default=None,
                        help="Hugging Face dataset instead of files: a Hub name or data folder (streamed) or a "
                             "Dataset.save_to_disk folder")
    source.add_argument("--split", default=None,
                        help="dataset split to read; when not given: 'train', or the only split there is")
    source.add_argument("--image-column", default="image", help="dataset column holding the images")
    source.add_argument("--id-column", default=None,
                        help="dataset column whose value names each row's outputs and record; when not given, rows are "
                             "named <dataset>/<split>/<row number>")

    model = add_model_arguments(parser)
    model.add_argument("--list-tasks", action="store_true",
                       help="print the model's tasks (name, type, number of outputs) and exit")

    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                          help="task names to run, space- or comma-separated; when not given, all of the model's "
                               "tasks. Names are the model's own (--list-tasks); the official ones are: "
                               + ", ".join(OFFICIAL_TASKS))
    analysis.add_argument("--min-face-size", type=float, default=0.0,
                          help="skip faces whose shorter box side is smaller (pixels)")
    analysis.add_argument("--max-faces", type=int, default=None,
                          help="at most this many faces per image, highest detection scores first; when not given, all")
    analysis.add_argument("--score-threshold", type=float, default=None,
                          help="detector confidence threshold; when not given, the detector's own")
    analysis.add_argument("--flip-recognition", action="store_true",
                          help="face embedding = embedding(face) + embedding(mirrored face), the official "
                               "verification protocol")
    analysis.add_argument("--batch-size", type=int, default=32, help="faces per model call")
    analysis.add_argument("--chunk-size", type=int, default=16, help="images decoded and analyzed together")
    analysis.add_argument("--num-workers", type=int, default=4, help="image decoding threads")

    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", default="outputs", help="folder of the JSON, PNG and JSONL files")
    output.add_argument("--mask-format", default="png", choices=MASK_FORMATS,
                        help="parsing masks as PNG files referenced by 'mask_file' (png) or inline run-length "
                             "encoded in the JSON and JSONL (rle)")
    output.add_argument("--no-overlay", action="store_true", help="do not draw the overlay PNGs")
    output.add_argument("--no-files", action="store_true",
                        help="write only the JSONL: no JSON, overlay or mask files ('mask_file' is null)")
    output.add_argument("--output-format", default="jsonl", choices=OUTPUT_FORMATS,
                        help="jsonl: the records above; parquet: also a dataset of one row per face with typed "
                             "columns (data/train-*.parquet, one shard per process, and a dataset card README.md), "
                             "read by faceptor_hf.load_results or datasets.load_dataset. The JSONL stays the resume "
                             "log; the Parquet files are made from it at the end of each run")
    output.add_argument("--push-to-hub", default=None, metavar="REPO",
                        help="after the run, upload the Parquet dataset and its card to this Hub dataset repository "
                             "(needs --output-format parquet)")
    output.add_argument("--private", action="store_true", help="create the --push-to-hub repository as private")
    output.add_argument("--token", default=None, help="Hub token for --push-to-hub (default: the logged-in one)")
    output.add_argument("--overwrite", action="store_true", help="delete this process's JSONL and start again")
    output.add_argument("--progress", action="store_true", help="show the progress bar even without a terminal")

    video = parser.add_argument_group("video")
    video.add_argument("--every", type=int, default=None, metavar="N",
                       help="analyze every N-th frame of a video (frames 0, N, 2N, ...); when not given, every frame")
    video.add_argument("--max-gap", type=int, default=None, metavar="N",
                       help="a face track unseen for more than N analyzed frames ends; when not given, "
                            f"{DEFAULT_MAX_GAP}")
    video.add_argument("--render", default=None, metavar="OUT.mp4",
                       help="also write the video with faces, captions and track ids drawn on it (one video only)")
    parser.set_defaults(run=run)


def select_tasks(config, requested: list[str] | None) -> list[str]:
    """``--tasks`` (space- or comma-separated) checked against the model's task names; default all of them."""
    if not requested:
        return list(config.task_names)
    try:
        names = config.named_tasks(requested)
    except KeyError as error:
        raise CommandError(error.args[0]) from error
    if not names:
        raise CommandError("--tasks needs at least one task name; leave it out to run all of the model's tasks")
    return names


def task_field(task, name: str):
    """A field of a config task, whether the config holds task dicts or task objects."""
    return task[name] if isinstance(task, dict) else getattr(task, name)


def print_tasks(config) -> None:
    """One line per task of the model: name, type, number of outputs."""
    width = max(len("task"), *(len(name) for name in config.task_names))
    print(f"{'task':{width}s}  {'type':8s}  outputs")
    for task in config.tasks:
        if task_field(task, "readout") == "embedding":
            outputs = f"{task_field(task, 'embedding_size')} (embedding)"
        else:
            outputs = str(task_field(task, "num_queries"))
        print(f"{task_field(task, 'name'):{width}s}  {task_field(task, 'type'):8s}  {outputs}")


def first_line(error: Exception) -> str:
    """The first line of an exception's message (a KeyError's without the quotes ``str`` adds)."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return message.strip().splitlines()[0] if message.strip() else repr(error)


def open_inputs(args: argparse.Namespace):
    """``ImageFiles`` of the positional inputs or ``DatasetRows`` of ``--dataset``."""
    if not args.dataset:
        return ImageFiles(args.inputs)
    try:
        return open_dataset(args.dataset, args.split, args.image_column, args.id_column)
    except DatasetOptionError as error:
        option = f"--{error.option.replace('_', '-')}"
        raise CommandError(f"{option}: {error.reason}" if error.value is None else
                           f"{option} {error.value}: {error.reason}") from error


@contextmanager
def analysis_messages():
    """The analysis library's warnings (failed inputs, ignored records) as bare lines on stderr."""
    library = logging.getLogger("faceptor_hf.analysis")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    library.addHandler(handler)
    propagate, library.propagate = library.propagate, False
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.propagate = propagate


def run(args: argparse.Namespace) -> int:
    """Analyze the inputs and write the results; 0 when every input was analyzed, 1 when some failed, 130 when
    interrupted."""
    if not args.inputs and not args.dataset and not args.list_tasks:
        raise CommandError("analyze needs image files, folders or glob patterns, or --dataset (see --help)")
    if args.id_column and not args.dataset:
        raise CommandError("--id-column names dataset rows; it needs --dataset")
    if args.push_to_hub and args.output_format != "parquet":
        raise CommandError("--push-to-hub publishes the per-face dataset; add --output-format parquet")
    device = parse_device(args.device)
    rank, world, shard_device = distributed_shard()
    if shard_device is not None and args.device in ("cpu", "cuda"):
        device = shard_device
    source = model_source(args)
    try:
        # AutoModel also resolves `faceptor-hf export onnx` folders to the ONNX Runtime model.
        model, processor = load_model(source, dtype=args.dtype, allow_onnx=True)
        pipe = FaceAnalysisPipeline(model=model, image_processor=processor, device=device,
                                    dtype=getattr(torch, args.dtype))
        if args.list_tasks:
            print_tasks(model.config)
            return 0
        tasks = select_tasks(model.config, args.tasks)
        videos = video_inputs(args)
        inputs = None if videos else open_inputs(args)
        identity = model_identity(source)
        os.makedirs(args.output_dir, exist_ok=True)
    except (ValueError, KeyError, OSError) as error:
        # Known user mistakes (a wrong path, name or value) surface from the libraries as these.
        raise CommandError(first_line(error)) from error

    untrained = bool(getattr(model.config, "untrained", False))
    if untrained:
        print(f"WARNING: {UNTRAINED_NOTE}", file=sys.stderr)
    if videos:
        return run_videos(args, pipe, videos, tasks, identity, untrained)
    try:
        with analysis_messages():
            summary = analyze_inputs(
                pipe, inputs, args.output_dir, tasks=tasks, overwrite=args.overwrite, mask_format=args.mask_format,
                write_files=not args.no_files, overlay=not args.no_overlay, min_face_size=args.min_face_size,
                max_faces=args.max_faces, score_threshold=args.score_threshold,
                flip_recognition=args.flip_recognition, batch_size=args.batch_size, chunk_size=args.chunk_size,
                num_workers=args.num_workers, model_identity=identity, rank=rank, world_size=world,
                progress=True if args.progress else None, output_format=args.output_format)
    except AnalysisInterrupted as interrupted:
        print(f"interrupted: {interrupted.summary.written} images written to {interrupted.summary.jsonl}; run the "
              "same command again to resume", file=sys.stderr)
        return 130
    print(f"\n{'input':60s} faces")
    for name, faces, error in summary.rows:
        print(f"{name[-60:]:60s} {faces} {error[:80]}")
    seconds = summary.seconds
    print(f"\n{summary.written} images ({summary.failed} failed, {summary.skipped} already done of "
          f"{summary.earlier_records} in {os.path.basename(summary.jsonl)}), {summary.faces} faces, {seconds:.1f} s "
          f"({summary.faces / max(seconds, 1e-9):.2f} faces/s); results in {args.output_dir}")
    if summary.card:
        print(f"dataset: {os.path.join(args.output_dir, 'data')} ({world} shard(s)) and its card {summary.card}; "
              "faceptor_hf.load_results reads it")
    if untrained:
        print(f"WARNING: {UNTRAINED_NOTE}")
    if args.push_to_hub and rank == 0:
        from ..hub import PushError
        from ..results_dataset import push_results

        try:
            print(f"pushing the dataset to {args.push_to_hub} ...", flush=True)
            commit = push_results(args.output_dir, args.push_to_hub, token=args.token,
                                  private=args.private or None)
            print(f"  {commit.commit_url}", flush=True)
        except PushError as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
    return 1 if summary.failed else 0


def video_inputs(args: argparse.Namespace) -> list[str]:
    """The positional inputs when they are videos (none otherwise); videos mixed with photos, or video options
    without a video, are a ``CommandError``."""
    # Photo suffixes are never probed: PyAV also opens images, and an animated GIF stays a photo as before.
    videos = [] if args.dataset else [path for path in args.inputs if os.path.splitext(path)[1].lower()
                                      not in IMAGE_SUFFIXES and is_video_path(path)]
    video_options = [name for name in ("every", "max_gap", "render") if getattr(args, name) is not None]
    if not videos:
        if video_options:
            raise CommandError(f"--{video_options[0].replace('_', '-')} is a video option, but no input is a video")
        return []
    if len(videos) != len(args.inputs):
        raise CommandError("analyze videos and photos in separate runs (videos: "
                           f"{', '.join(videos)}; photos: {', '.join(set(args.inputs) - set(videos))})")
    if args.render and len(videos) > 1:
        raise CommandError("--render writes one video: give one input video")
    if args.output_format != "jsonl":
        raise CommandError("--output-format parquet is for photos; a video writes frames.jsonl and tracks.json")
    for name in ("every", "max_gap"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "every" else 0):
            raise CommandError(f"--{name.replace('_', '-')} must be at least {1 if name == 'every' else 0}, "
                               f"got {value}")
    return videos


def run_videos(args: argparse.Namespace, pipe, videos: list[str], tasks: list[str], identity: dict,
               untrained: bool) -> int:
    """Analyze each video into ``--output-dir`` (into ``<output-dir>/<video stem>/`` with several videos); 0 when
    done, 130 when interrupted."""
    from ..video import VideoAnalysisInterrupted, analyze_video

    show = True if args.progress else sys.stderr.isatty()
    stems = [os.path.splitext(os.path.basename(path))[0] for path in videos]
    for path, stem in zip(videos, stems):
        output_dir = args.output_dir if len(videos) == 1 else os.path.join(args.output_dir, stem)
        try:
            result = analyze_video(
                pipe, path, output_dir, every=args.every or 1, render=args.render, tasks=tasks,
                resume=not args.overwrite, progress=show, max_gap=DEFAULT_MAX_GAP if args.max_gap is None
                else args.max_gap, batch_size=args.batch_size, chunk_size=args.chunk_size,
                model_identity=identity, min_face_size=args.min_face_size, max_faces=args.max_faces,
                score_threshold=args.score_threshold, flip_recognition=args.flip_recognition,
                num_workers=args.num_workers)
        except VideoReadError as error:
            raise CommandError(first_line(error)) from error
        except VideoAnalysisInterrupted as interrupted:
            print(f"interrupted: {interrupted.analysis.num_frames} frames written to "
                  f"{interrupted.analysis.frames_path}; run the same command again to resume", file=sys.stderr)
            return 130
        analyzed = result.num_frames - result.resumed_frames
        print(f"\n{path}: {result.num_frames} frames analyzed ({result.resumed_frames} already done), "
              f"{len(result.tracks)} face tracks, {result.seconds:.1f} s ({analyzed / max(result.seconds, 1e-9):.2f} "
              "frames/s)")
        print(f"{'track':>6s} {'frames':>7s} {'first':>9s} {'last':>9s} {'best':>9s}")
        for track in result.tracks:
            print(f"{track['track_id']:6d} {track['num_frames']:7d} {track['first_time']:8.2f}s "
                  f"{track['last_time']:8.2f}s {track['best_time']:8.2f}s")
        print(f"results: {result.frames_path}, {result.tracks_path}"
              + (f", {result.render_path}" if result.render_path else ""))
    if untrained:
        print(f"WARNING: {UNTRAINED_NOTE}")
    return 0
