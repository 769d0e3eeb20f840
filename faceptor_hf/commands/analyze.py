"""``faceptor-hf analyze``: every face of files, folders, glob patterns or a dataset -> JSON, overlays and JSONL.

Per image it writes ``<stem>.json`` (the record below), ``<stem>.png`` (overlay) and one 8-bit PNG per parsing mask
(``<stem>.<face index>.<task name>.png``, pixel value = class id), then appends the record to
``results.jsonl`` (``results.rankK.jsonl`` per process under ``accelerate launch`` / ``torchrun``) and flushes it.

Every record carries ``run_key`` (a hash of the model and of the options that change results) and ``input_key``
(a hash of a file's path, size and modification time, or of a dataset row's id). A rerun skips an input only when
an earlier record has the same input name, ``input_key`` and ``run_key`` and no ``error``; everything else is
analysed again and appended, so the last record of an input is the current one.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm
from transformers import AutoModel

from ..configuration_faceptor import OFFICIAL_TASKS, FaceptorConfig
from ..image_processing_faceptor import FaceptorImageProcessor, decode_mask
from ..modeling_faceptor import FaceptorModel
from ..pipeline_face_analysis import FaceAnalysisPipeline
from ..visualization import draw_overlay
from .errors import CommandError
from .formatting import HelpFormatter

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
UNTRAINED_NOTE = ("UNTRAINED: --random-weights was used; every prediction below is meaningless and only exercises "
                  "the pipeline")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx")
# Files of a model folder whose content changes what the model computes (besides the weights themselves).
CONFIG_FILES = ("config.json", "preprocessor_config.json")


def register(subparsers) -> None:
    """Add the ``analyze`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "analyze", help="analyse every face in images, folders, globs or a dataset",
        description="Detect every face and run the model's tasks on it. Writes <stem>.json, an overlay <stem>.png "
                    "and one PNG per parsing mask per image, and appends one record per image to results.jsonl. "
                    "A rerun resumes: inputs already analysed by the same model with the same options are skipped; "
                    "failed, changed or new inputs are analysed. Ctrl-C stops after the records written so far.",
        formatter_class=HelpFormatter)
    source = parser.add_argument_group("inputs")
    source.add_argument("inputs", nargs="*", help="image files, folders (searched recursively) or glob patterns")
    source.add_argument("--dataset", default=None,
                        help="Hugging Face dataset instead of files: a Hub name or data folder (streamed) or a "
                             "Dataset.save_to_disk folder")
    source.add_argument("--split", default=None,
                        help="dataset split to read; when not given: 'train', or the only split there is")
    source.add_argument("--image-column", default="image", help="dataset column holding the images")
    source.add_argument("--id-column", default=None,
                        help="dataset column whose value names each row's outputs and record; when not given, rows are "
                             "named <dataset>/<split>/<row number>")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None, help="faceptor-hf folder or Hub id (see `faceptor-hf convert`)")
    model.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model")
    model.add_argument("--local-files-only", action="store_true", help="never contact the Hub; use the cache")
    model.add_argument("--random-weights", action="store_true",
                       help="untrained Faceptor-Base instead of --model, to exercise the pipeline")
    model.add_argument("--seed", type=int, default=0, help="random seed of the --random-weights initialisation")
    model.add_argument("--list-tasks", action="store_true",
                       help="print the model's tasks (name, type, number of outputs) and exit")
    model.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or N (a CUDA device index)")
    model.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="model weights and activations")

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
    analysis.add_argument("--chunk-size", type=int, default=16, help="images decoded and analysed together")
    analysis.add_argument("--num-workers", type=int, default=4, help="image decoding threads")

    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", default="outputs", help="folder of the JSON, PNG and JSONL files")
    output.add_argument("--mask-format", default="png", choices=["png", "rle"],
                        help="parsing masks as PNG files referenced by 'mask_file' (png) or inline run-length "
                             "encoded in the JSON and JSONL (rle)")
    output.add_argument("--no-overlay", action="store_true", help="do not draw the overlay PNGs")
    output.add_argument("--no-files", action="store_true",
                        help="write only the JSONL: no JSON, overlay or mask files ('mask_file' is null)")
    output.add_argument("--overwrite", action="store_true", help="delete this process's JSONL and start again")
    output.add_argument("--progress", action="store_true", help="show the progress bar even without a terminal")
    parser.set_defaults(run=run)


# ---- inputs -----------------------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """This process's share of the inputs: ``items`` yields ``(name, image, input_key, stem)``; ``total`` is their
    number when known in advance."""

    items: Iterator[tuple[str, object, str, str]]
    total: int | None


class StemNamer:
    """File stems (``<stem>.json``, ``<stem>.png``) from input names: the base name without its suffix, characters
    other than letters, digits, ``-`` and ``_`` replaced by ``_``, and ``_2``, ``_3``... for repeats. Every process
    names every input in the same order, so stems are the same in every process and in every run."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, name: str, strip_suffix: bool = True) -> str:
        base = os.path.basename(name.rstrip("/\\")) or name
        if strip_suffix:
            base = os.path.splitext(base)[0]
        # No dots, so that "<stem>.<face>.<task>.png" mask files never collide with another image's stem.
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in base) or "image"
        candidate, repeat = stem, 1
        while candidate in self.used:
            repeat += 1
            candidate = f"{stem}_{repeat}"
        self.used.add(candidate)
        return candidate


def short_hash(value) -> str:
    """16 hex digits of the SHA-256 of ``value`` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files, folders (recursive, image suffixes) and glob patterns -> sorted unique paths; unknown -> kept so the
    run reports them as failures."""
    found = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            for root, folders, files in os.walk(pattern):
                folders.sort()
                found += [os.path.join(root, name) for name in sorted(files)
                          if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]
        elif any(ch in pattern for ch in "*?["):
            found += sorted(glob.glob(pattern, recursive=True))
        else:
            found.append(pattern)
    return list(dict.fromkeys(found))


def file_input_key(path: str) -> str:
    """Changes when the file at ``path`` is replaced or edited (path, size, modification time)."""
    try:
        info = os.stat(path)
    except OSError:
        return short_hash(["missing", os.path.abspath(path)])
    return short_hash([os.path.realpath(path), info.st_size, info.st_mtime_ns])


def file_inputs(patterns: list[str], rank: int, world: int) -> Inputs:
    """Inputs from files, folders and globs; process ``rank`` of ``world`` takes every world-th path."""
    paths = expand_inputs(patterns)
    if not paths:
        raise CommandError(f"no input images found in {' '.join(patterns)}")
    namer = StemNamer()
    stems = [namer(path) for path in paths]

    def items():
        for index in range(rank, len(paths), world):
            yield paths[index], paths[index], file_input_key(paths[index]), stems[index]

    return Inputs(items(), len(range(rank, len(paths), world)))


def _columns(dataset) -> list[str]:
    """The dataset's column names; a streamed dataset without declared features shows them in its first row."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)
    return list(first) if first is not None else []


def open_dataset(path: str, split: str | None, image_column: str, id_column: str | None):
    """(dataset, split name or None for a single saved split); checks the split and the columns."""
    import datasets

    from ..data.reading import is_saved_dataset

    if is_saved_dataset(path):
        loaded = datasets.load_from_disk(path)
    else:
        loaded = datasets.load_dataset(path, streaming=True)
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(loaded)
        chosen = split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
        if chosen is None:
            raise CommandError(f"dataset {path} has several splits: choose one with --split ({', '.join(splits)})")
        if chosen not in splits:
            raise CommandError(f"--split {chosen}: dataset {path} has no such split; available splits: "
                               f"{', '.join(splits)}")
        dataset = loaded[chosen]
    else:
        if split is not None:
            raise CommandError(f"--split {split}: {path} is a single saved split (Dataset.save_to_disk) without "
                               "split names; leave --split out")
        dataset, chosen = loaded, None
    columns = _columns(dataset)
    for option, column in (("--image-column", image_column), ("--id-column", id_column)):
        if column is not None and column not in columns:
            raise CommandError(f"{option} {column}: dataset {path} has no such column; its columns are: "
                               f"{', '.join(columns)}")
    return dataset, chosen


def dataset_inputs(args: argparse.Namespace, rank: int, world: int) -> Inputs:
    """Rows of ``--dataset``; process ``rank`` of ``world`` takes every world-th row."""
    import datasets

    dataset, split = open_dataset(args.dataset, args.split, args.image_column, args.id_column)
    prefix = args.dataset if split is None else f"{args.dataset}/{split}"
    namer = StemNamer()

    def identify(index: int, row_id) -> tuple[str, str, str]:
        """(input name, input_key, stem) of row ``index``; every process names every row, in order."""
        if args.id_column is None:
            name = f"{prefix}/{index}"
            return name, short_hash(["row", args.dataset, split, index]), namer(name, strip_suffix=False)
        return str(row_id), short_hash(["row", args.dataset, split, str(row_id)]), namer(str(row_id))

    if isinstance(dataset, datasets.Dataset):
        # Row ids come from the id column alone, so other processes' rows are never decoded.
        ids = (list(dataset.select_columns([args.id_column])[args.id_column]) if args.id_column
               else list(range(len(dataset))))

        def items():
            for index, row_id in enumerate(ids):
                name, key, stem = identify(index, row_id)
                if index % world == rank:
                    yield name, dataset[index][args.image_column], key, stem

        return Inputs(items(), len(range(rank, len(ids), world)))

    def streamed():
        for index, row in enumerate(dataset):
            name, key, stem = identify(index, row[args.id_column] if args.id_column else index)
            if index % world == rank:
                yield name, row[args.image_column], key, stem

    return Inputs(streamed(), None)


# ---- model --------------------------------------------------------------------------------------------------------
def parse_device(text: str):
    """``--device`` -> the pipeline's ``device`` (a CUDA index as int); CUDA asked for but absent is an error."""
    if (text.isdigit() or text.split(":", 1)[0] == "cuda") and not torch.cuda.is_available():
        raise CommandError(f"`--device {text}` was requested but CUDA is not available on this machine; use "
                           "--device cpu")
    if text.isdigit():
        return int(text)
    try:
        torch.device(text)
    except RuntimeError as error:
        raise CommandError(f"--device {text}: {str(error).splitlines()[0]}") from error
    return text


def shard() -> tuple[int, int, str | None]:
    """(rank, world size, device or None) under ``accelerate launch`` / ``torchrun``; (0, 1, None) otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    from accelerate import PartialState

    # Without GPUs (or with ACCELERATE_USE_CPU) the processes still form one group, over gloo on the CPU.
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes, str(state.device)


def build_pipeline(args: argparse.Namespace, device):
    """The face-analysis pipeline of ``--model`` or ``--random-weights`` on ``device``."""
    dtype = getattr(torch, args.dtype)
    if args.random_weights:
        torch.manual_seed(args.seed)
        config = FaceptorConfig.faceptor_base()
        config.untrained = True
        model = FaceptorModel(config).to(dtype)
        processor = FaceptorImageProcessor()
    elif args.model:
        hub = {"revision": args.revision, "local_files_only": args.local_files_only or None}
        hub = {k: v for k, v in hub.items() if v is not None}
        try:
            # AutoModel also resolves `faceptor-hf export onnx` folders to the ONNX Runtime model.
            model = AutoModel.from_pretrained(args.model, dtype=dtype, **hub)
        except (OSError, ValueError) as error:
            offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or args.local_files_only
            hint = ""
            if offline and not os.path.isdir(args.model):
                hint = (" Offline mode is on (HF_HUB_OFFLINE / --local-files-only) and it is not in the local cache: "
                        "download it once while online, or pass a local folder.")
            raise CommandError(f"cannot load model {args.model!r}: {str(error).splitlines()[0]}{hint}") from error
        try:
            processor = FaceptorImageProcessor.from_pretrained(args.model, **hub)
        except OSError:
            processor = FaceptorImageProcessor()
    else:
        raise CommandError(
            "no model given: pass --model DIR_OR_HUB_ID (a folder written by `faceptor-hf convert` from the official "
            "checkpoints, see README) or --random-weights to exercise the pipeline without trained weights")
    return FaceAnalysisPipeline(model=model.eval(), image_processor=processor, device=device, dtype=dtype)


def folder_fingerprint(folder: str) -> str:
    """Changes when a weight file of ``folder`` is replaced or its configuration edited."""
    parts = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(WEIGHT_SUFFIXES) and os.path.isfile(path):
            info = os.stat(path)
            parts.append([name, info.st_size, info.st_mtime_ns])
        elif name in CONFIG_FILES:
            with open(path, "rb") as handle:
                parts.append([name, hashlib.sha256(handle.read()).hexdigest()])
    return short_hash(parts)


def cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit of ``repo_id`` at ``revision`` that the Hub cache holds (what was just loaded), if known."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:
        return None
    # Cached files live in .../snapshots/<commit>/<file>.
    return os.path.basename(os.path.dirname(path)) if isinstance(path, str) else None


def model_identity(args: argparse.Namespace) -> dict:
    """What identifies the weights of this run, for ``run_key``."""
    if args.random_weights:
        return {"model": "random-weights", "seed": args.seed}
    if os.path.isdir(args.model):
        return {"model": os.path.realpath(args.model), "fingerprint": folder_fingerprint(args.model)}
    return {"model": args.model, "revision": args.revision, "commit": cached_commit(args.model, args.revision)}


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


# ---- results ----------------------------------------------------------------------------------------------------
@dataclass
class Resume:
    """What an existing JSONL says: ``done`` maps an input name to the ``input_key``s it was analysed with (same
    ``run_key``, no error); ``records`` counts readable lines and ``other_runs`` those of another ``run_key``."""

    done: dict[str, set[str]] = field(default_factory=dict)
    records: int = 0
    other_runs: int = 0

    def is_done(self, name: str, input_key: str) -> bool:
        """Whether input ``name`` as it is now (``input_key``) already has a good record of this run."""
        return input_key in self.done.get(name, ())


def read_resume(path: str, run_key: str) -> Resume:
    """The resume state of the JSONL at ``path`` for a run with ``run_key``."""
    resume = Resume()
    if not os.path.exists(path):
        return resume
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                name = record["input"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a killed process: its input is redone
            resume.records += 1
            if record.get("run_key") != run_key:
                resume.other_runs += 1
            elif "error" not in record and "input_key" in record:
                resume.done.setdefault(name, set()).add(record["input_key"])
    return resume


def open_jsonl(path: str):
    """``path`` opened for appending, after ending a last line cut short by a killed process so that the next
    record starts on its own line."""
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            cut = handle.read(1) != b"\n"
        if cut:
            with open(path, "ab") as handle:
                handle.write(b"\n")
    return open(path, "a", encoding="utf-8")


def store_masks(faces: list[dict], stem: str, folder: str | None) -> list[dict]:
    """Faces with each parsing ``mask`` replaced by ``mask_file``: the name of an 8-bit PNG written to ``folder``
    (pixel value = class id), or None when ``folder`` is None (nothing written)."""
    stored = []
    for index, face in enumerate(faces):
        tasks = {}
        for task_name, result in face["tasks"].items():
            if "mask" in result:
                file_name = None
                if folder is not None:
                    safe_task = "".join(c if c.isalnum() or c in "-_" else "_" for c in task_name)
                    file_name = f"{stem}.{index}.{safe_task}.png"
                    mask = np.ascontiguousarray(decode_mask(result["mask"]), dtype=np.uint8)
                    PIL.Image.fromarray(mask).save(os.path.join(folder, file_name))
                result = {("mask_file" if key == "mask" else key): (file_name if key == "mask" else value)
                          for key, value in result.items()}
            tasks[task_name] = result
        stored.append({**face, "tasks": tasks})
    return stored


@dataclass
class Tally:
    """Counts and the per-input table of one run."""

    written: int = 0
    faces: int = 0
    failed: int = 0
    skipped: int = 0
    rows: list[tuple[str, str, str]] = field(default_factory=list)


def first_line(error: Exception) -> str:
    """The first line of an exception's message (a KeyError's without the quotes ``str`` adds)."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return message.strip().splitlines()[0] if message.strip() else repr(error)


def run(args: argparse.Namespace) -> int:
    """Analyse the inputs and write the results; 0 when every input was analysed, 1 when some failed, 130 when
    interrupted."""
    if not args.inputs and not args.dataset and not args.list_tasks:
        raise CommandError("analyze needs image files, folders or glob patterns, or --dataset (see --help)")
    if args.id_column and not args.dataset:
        raise CommandError("--id-column names dataset rows; it needs --dataset")
    device = parse_device(args.device)
    rank, world, shard_device = shard()
    if shard_device is not None and args.device in ("cpu", "cuda"):
        device = shard_device
    try:
        pipe = build_pipeline(args, device)
        config = pipe.model.config
        if args.list_tasks:
            print_tasks(config)
            return 0
        tasks = select_tasks(config, args.tasks)
        inputs = dataset_inputs(args, rank, world) if args.dataset else file_inputs(args.inputs, rank, world)
        options = {"tasks": sorted(tasks), "dtype": args.dtype, "min_face_size": args.min_face_size,
                   "max_faces": args.max_faces, "score_threshold": args.score_threshold,
                   "flip_recognition": args.flip_recognition, "mask_format": args.mask_format,
                   "files": not args.no_files}
        run_key = short_hash([model_identity(args), options])
        os.makedirs(args.output_dir, exist_ok=True)
    except (ValueError, KeyError, OSError) as error:
        # Known user mistakes (a wrong path, name or value) surface from the libraries as these.
        raise CommandError(first_line(error)) from error

    untrained = bool(getattr(config, "untrained", False))
    if untrained:
        print(f"WARNING: {UNTRAINED_NOTE}", file=sys.stderr)
    jsonl = os.path.join(args.output_dir, "results.jsonl" if world == 1 else f"results.rank{rank}.jsonl")
    if args.overwrite and os.path.exists(jsonl):
        os.remove(jsonl)
    resume = read_resume(jsonl, run_key)
    if resume.other_runs:
        print(f"ignoring {resume.other_runs} earlier records in {jsonl} made with another model or other options "
              "(their inputs are analysed again; --overwrite starts a clean file)", file=sys.stderr)
    tally = Tally()
    started = time.perf_counter()
    with open_jsonl(jsonl) as handle:
        try:
            analyse_all(pipe, args, tasks, inputs, resume, run_key, untrained, handle, tally)
        except KeyboardInterrupt:
            handle.flush()
            print(f"interrupted: {tally.written} images written to {jsonl}; run the same command again to resume",
                  file=sys.stderr)
            return 130
    elapsed = time.perf_counter() - started
    print(f"\n{'input':60s} faces")
    for name, faces, error in tally.rows:
        print(f"{name[-60:]:60s} {faces} {error[:80]}")
    print(f"\n{tally.written} images ({tally.failed} failed, {tally.skipped} already done of {resume.records} in "
          f"{os.path.basename(jsonl)}), {tally.faces} faces, {elapsed:.1f} s "
          f"({tally.faces / max(elapsed, 1e-9):.2f} faces/s); results in {args.output_dir}")
    if untrained:
        print(f"WARNING: {UNTRAINED_NOTE}")
    return 1 if tally.failed else 0


def analyse_all(pipe, args, tasks, inputs: Inputs, resume: Resume, run_key: str, untrained: bool, handle,
                tally: Tally) -> None:
    """Analyse the inputs not done yet in chunks of ``--chunk-size`` images, writing each record as it is ready."""
    pending = []
    with tqdm(total=inputs.total, desc="analyse", unit="img",
              disable=not sys.stderr.isatty() and not args.progress) as bar:
        for item in inputs.items:
            name, _, input_key, _ = item
            if resume.is_done(name, input_key):
                tally.skipped += 1
                bar.update(1)
                continue
            pending.append(item)
            if len(pending) >= args.chunk_size:
                analyse_chunk(pipe, args, tasks, pending, run_key, untrained, handle, tally)
                bar.update(len(pending))
                pending = []
        if pending:
            analyse_chunk(pipe, args, tasks, pending, run_key, untrained, handle, tally)
            bar.update(len(pending))


def analyse_chunk(pipe, args, tasks, chunk, run_key: str, untrained: bool, handle, tally: Tally) -> None:
    """Analyse one chunk of images and write, per image in turn, its files and then its JSONL record."""
    # Decode once here (background threads) and hand the pixels to the pipeline and to the overlay; an image that
    # fails to decode goes in as given, so the pipeline reports it under its own name.
    decoded = pipe.load_images([image for _, image, _, _ in chunk], args.num_workers)
    images = [image if isinstance(pixels, Exception) else pixels for (_, image, _, _), pixels in zip(chunk, decoded)]
    results = pipe(images, batch_size=args.batch_size, tasks=tasks, min_face_size=args.min_face_size,
                   max_faces=args.max_faces, score_threshold=args.score_threshold,
                   mask_format="rle" if args.mask_format == "rle" else "numpy", num_workers=args.num_workers,
                   on_error="return", flip_recognition=args.flip_recognition)
    for (name, _, input_key, stem), pixels, faces in zip(chunk, decoded, results):
        record = {"input": name, "input_key": input_key, "run_key": run_key}
        if isinstance(faces, dict):
            record["error"] = faces["error"]
            tally.failed += 1
            tally.rows.append((name, "FAILED", faces["error"]))
            print(f"failed: {faces['error']}", file=sys.stderr)
        else:
            tally.faces += len(faces)
            tally.rows.append((name, str(len(faces)), ""))
            if not args.no_files and not args.no_overlay:
                picture = PIL.Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8"))
                draw_overlay(picture, faces, untrained=untrained).save(os.path.join(args.output_dir, stem + ".png"))
            if args.mask_format == "png":
                faces = store_masks(faces, stem, None if args.no_files else args.output_dir)
            record["faces"] = faces
        if untrained:
            record["untrained"] = True
            record["warning"] = UNTRAINED_NOTE
        line = json.dumps(record)
        if "faces" in record and not args.no_files:
            with open(os.path.join(args.output_dir, stem + ".json"), "w", encoding="utf-8") as out:
                out.write(line)
        # The record goes last: once it is in the JSONL, every file of this image is complete.
        handle.write(line + "\n")
        handle.flush()
        tally.written += 1
