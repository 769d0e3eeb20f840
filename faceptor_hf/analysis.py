"""Analyzing many images into files: every face of image files, folders, glob patterns or a dataset's rows -> one
JSON record per image, overlays, parsing-mask PNGs and a JSONL file that a rerun resumes from.

    from transformers import pipeline
    from faceptor_hf.analysis import analyze_inputs
    pipe = pipeline("face-analysis", model="your-org/faceptor-base")
    summary = analyze_inputs(pipe, ["photos/", "more/*.jpg"], output_dir="outputs", tasks=["age_morph2"])
    summary.written, summary.failed, summary.jsonl

Per image it writes ``<stem>.json`` (the record below), ``<stem>.png`` (overlay) and one 8-bit PNG per parsing mask
(``<stem>.<face index>.<task name>.png``, pixel value = class id), then appends the record to ``results.jsonl``
(``results.rankK.jsonl`` per process of a multi-process run) and flushes it. ``faceptor-hf analyze`` is this
module on the command line.

Every record carries ``run_key`` (a hash of the model and of the options that change results) and ``input_key``
(a hash of a file's path, size and modification time, or of a dataset row's id). A rerun skips an input only when
an earlier record has the same input name, ``input_key`` and ``run_key`` and no ``error``; everything else is
analyzed again and appended, so the last record of an input is the current one.

``output_format="parquet"`` also writes the results as a dataset, one row per face (``faceptor_hf.results_dataset``):
at the end of the run each process turns the current records of its inputs in its JSONL into its Parquet shard
``data/train-<rank>-of-<world>.parquet``, and the first process writes the dataset card ``README.md`` once every
shard is there. The JSONL stays the resume log, so a killed or repeated run resumes exactly as without Parquet.

Several processes (``accelerate launch`` / ``torchrun``) split the inputs: files by taking every world-th path, a
saved dataset (``Dataset``) and a streamed one (``IterableDataset``) with ``datasets.distributed.split_dataset_by_node``
(contiguous blocks of rows, and every world-th row of the stream). Each process names every input the same way,
so names and file stems do not depend on the number of processes.

Package-only code: no file a saved model ships imports this module.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .image_loading import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .image_processing_faceptor import decode_mask
from .visualization import draw_overlay

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
UNTRAINED_NOTE = ("UNTRAINED: --random-weights was used; every prediction below is meaningless and only exercises "
                  "the pipeline")
MASK_FORMATS = ("png", "rle")
OUTPUT_FORMATS = ("jsonl", "parquet")


class AnalysisInputError(ValueError):
    """The inputs cannot be analyzed as given (no images found, a dataset without the split or column asked for)."""


class DatasetOptionError(AnalysisInputError):
    """A dataset option does not fit the dataset: ``option`` (the keyword, e.g. ``"split"``) had ``value``;
    ``reason`` says why and what would fit."""

    def __init__(self, option: str, value, reason: str):
        super().__init__(f"{option}: {reason}" if value is None else f"{option}={value!r}: {reason}")
        self.option, self.value, self.reason = option, value, reason


class AnalysisInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``analyze_inputs``: the records written so far are complete and flushed (``summary`` counts
    them); the same call again resumes."""

    def __init__(self, summary: "AnalysisSummary"):
        super().__init__()
        self.summary = summary


# ---- inputs -----------------------------------------------------------------------------------------------------
@dataclass
class InputShard:
    """One process's share of the inputs: ``items`` yields ``(name, image, input_key, stem)``; ``total`` is their
    number when known in advance."""

    items: Iterator[tuple[str, object, str, str]]
    total: int | None


class StemNamer:
    """File stems (``<stem>.json``, ``<stem>.png``) from input names: the base name without its suffix, characters
    other than letters, digits, ``-`` and ``_`` replaced by ``_``, and ``_2``, ``_3``... for repeats. Names given in
    the same order get the same stems, in every process and in every run."""

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


def expand_inputs(patterns: Sequence[str | os.PathLike]) -> list[str]:
    """Files, folders (recursive, image suffixes) and glob patterns -> sorted unique paths; unknown -> kept so the
    run reports them as failures."""
    found = []
    for pattern in map(str, patterns):
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


class ImageFiles:
    """Inputs from image files, folders (searched recursively) and glob patterns, in sorted order."""

    def __init__(self, patterns: Sequence[str | os.PathLike]):
        self.paths = expand_inputs(patterns)
        if not self.paths:
            raise AnalysisInputError(f"no input images found in {' '.join(map(str, patterns))}")

    def shard(self, rank: int = 0, world_size: int = 1) -> InputShard:
        """Process ``rank`` of ``world_size`` takes every world-th path."""
        namer = StemNamer()
        stems = [namer(path) for path in self.paths]
        mine = range(rank, len(self.paths), world_size)
        items = ((self.paths[i], self.paths[i], file_input_key(self.paths[i]), stems[i]) for i in mine)
        return InputShard(items, len(mine))


def _columns(dataset) -> list[str]:
    """The dataset's column names; a streamed dataset without declared features shows them in its first row."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)
    return list(first) if first is not None else []


class DatasetRows:
    """Inputs from the rows of a ``datasets.Dataset`` or ``IterableDataset``: the image of ``image_column``, named
    by ``id_column`` or, without one, ``<name>/<split>/<row number>`` (``<name>/<row number>`` without a split)."""

    def __init__(self, dataset, name: str, split: str | None = None, image_column: str = "image",
                 id_column: str | None = None):
        columns = _columns(dataset)
        for option, column in (("image_column", image_column), ("id_column", id_column)):
            if column is not None and column not in columns:
                raise DatasetOptionError(option, column, f"dataset {name} has no such column; its columns are: "
                                                         f"{', '.join(columns)}")
        self.dataset, self.name, self.split = dataset, name, split
        self.image_column, self.id_column = image_column, id_column
        self._namer = StemNamer()

    def _identify(self, index: int, row_id=None) -> tuple[str, str, str]:
        """(input name, input_key, stem) of row ``index``; stems need every row named in order."""
        if self.id_column is None:
            name = f"{self.name}/{index}" if self.split is None else f"{self.name}/{self.split}/{index}"
            return name, short_hash(["row", self.name, self.split, index]), self._namer(name, strip_suffix=False)
        return (str(row_id), short_hash(["row", self.name, self.split, str(row_id)]), self._namer(str(row_id)))

    def shard(self, rank: int = 0, world_size: int = 1) -> InputShard:
        """This process's rows, split with ``split_dataset_by_node``: a contiguous block of a ``Dataset``, every
        world-th row of an ``IterableDataset``."""
        import datasets
        from datasets.distributed import split_dataset_by_node

        self._namer = StemNamer()
        dataset = self.dataset
        if isinstance(dataset, datasets.Dataset):
            # Names come from the id column alone, so other processes' images are never decoded.
            ids = (dataset.select_columns([self.id_column])[self.id_column] if self.id_column
                   else range(len(dataset)))
            named = [self._identify(index, row_id) for index, row_id in enumerate(ids)]
            rows, images = range(len(dataset)), dataset.select_columns([self.image_column])
            if world_size > 1:
                # The same split of a table of row numbers says which rows this process's block holds.
                numbers = datasets.Dataset.from_dict({"row": list(rows)})
                rows = split_dataset_by_node(numbers, rank=rank, world_size=world_size)["row"]
                images = split_dataset_by_node(images, rank=rank, world_size=world_size)

            def saved_rows():
                for row, image in zip(rows, images):
                    name, key, stem = named[row]
                    yield name, image[self.image_column], key, stem

            return InputShard(saved_rows(), len(rows))

        # "examples": process rank gets rows rank, rank + world, ... With file shards ("auto") a process could not
        # number the other processes' rows, and rows are named by number.
        mine = (dataset if world_size == 1 else
                split_dataset_by_node(dataset, rank=rank, world_size=world_size, strategy="examples"))
        # Stems of ids depend on the ids before them, so with several processes every id is read first (without
        # decoding images); row numbers are unique stems by themselves.
        ids = ([row[self.id_column] for row in dataset.select_columns([self.id_column])]
               if self.id_column and world_size > 1 else None)

        def streamed_rows():
            named = None if ids is None else [self._identify(index, row_id) for index, row_id in enumerate(ids)]
            for local, row in enumerate(mine):
                index = local * world_size + rank
                if named is not None:
                    name, key, stem = named[index]
                else:
                    name, key, stem = self._identify(index, row[self.id_column] if self.id_column else None)
                yield name, row[self.image_column], key, stem

        return InputShard(streamed_rows(), None)


def open_dataset(path: str, split: str | None = None, image_column: str = "image",
                 id_column: str | None = None) -> DatasetRows:
    """The rows of a ``Dataset.save_to_disk`` folder, or of a Hub name or data folder (streamed). ``split`` when
    not given: 'train', or the only split there is; a single saved split has none. Checks split and columns."""
    import datasets

    from .data.reading import is_saved_dataset

    if is_saved_dataset(path):
        loaded = datasets.load_from_disk(path)
    else:
        loaded = datasets.load_dataset(path, streaming=True)
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(loaded)
        chosen = split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
        if chosen is None:
            raise DatasetOptionError("split", None, f"dataset {path} has several splits ({', '.join(splits)}); "
                                                    "choose one")
        if chosen not in splits:
            raise DatasetOptionError("split", chosen, f"dataset {path} has no such split; available splits: "
                                                      f"{', '.join(splits)}")
        dataset = loaded[chosen]
    else:
        if split is not None:
            raise DatasetOptionError("split", split, f"{path} is a single saved split (Dataset.save_to_disk) without "
                                                     "split names; leave the split out")
        dataset, chosen = loaded, None
    return DatasetRows(dataset, path, chosen, image_column, id_column)


def distributed_shard() -> tuple[int, int, str | None]:
    """(rank, world size, this process's device) under ``accelerate launch`` / ``torchrun``; (0, 1, None)
    otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    from accelerate import PartialState

    # Without GPUs (or with ACCELERATE_USE_CPU) the processes still form one group, over gloo on the CPU.
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes, str(state.device)


# ---- results ----------------------------------------------------------------------------------------------------
@dataclass
class ResumeState:
    """What an existing JSONL says: ``done`` maps an input name to the ``input_key``s it was analyzed with (same
    ``run_key``, no error); ``records`` counts readable lines and ``other_runs`` those of another ``run_key``."""

    done: dict[str, set[str]] = field(default_factory=dict)
    records: int = 0
    other_runs: int = 0

    def is_done(self, name: str, input_key: str) -> bool:
        """Whether input ``name`` as it is now (``input_key``) already has a good record of this run."""
        return input_key in self.done.get(name, ())


def read_resume(path: str, run_key: str) -> ResumeState:
    """The resume state of the JSONL at ``path`` for a run with ``run_key``."""
    resume = ResumeState()
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
class AnalysisSummary:
    """What one ``analyze_inputs`` call did: images ``written`` (records appended, failures included), ``faces``
    found, inputs ``failed`` and ``skipped`` (done by an earlier run), ``rows`` (input name, face count or
    "FAILED", error) per analyzed input, ``earlier_records`` and ``other_runs`` of the JSONL when it started, its
    path ``jsonl``, ``seconds`` taken and whether the model was ``untrained``; with Parquet output this process's
    ``shard`` and, on the first process, the dataset ``card``."""

    jsonl: str
    written: int = 0
    faces: int = 0
    failed: int = 0
    skipped: int = 0
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    earlier_records: int = 0
    other_runs: int = 0
    seconds: float = 0.0
    untrained: bool = False
    shard: str | None = None
    card: str | None = None


def is_untrained(model) -> bool:
    """Whether ``model`` runs random weights (its config says so)."""
    return bool(getattr(model.config, "untrained", False))


def describe_model(model) -> dict:
    """A model's identity for ``run_key`` when the caller gives none: the folder it was loaded from and that
    folder's fingerprint, else its Hub id (or class, for a model built in memory). A Hub id does not say which
    commit, nor a class which weights: pass ``model_identity`` (``faceptor_hf.loading.model_identity`` of a pinned
    source) to tell those apart."""
    from .loading import folder_fingerprint

    source = getattr(model.config, "_name_or_path", "") or ""
    if source and os.path.isdir(source):
        return {"model": os.path.realpath(source), "fingerprint": folder_fingerprint(source)}
    return {"model": source or f"in-memory {type(model).__name__}", "untrained": is_untrained(model)}


def select_tasks(config, tasks: Sequence[str] | None) -> list[str]:
    """Task names checked against the model's (comma-separated names allowed); all of the model's when None."""
    if not tasks:
        return list(config.task_names)
    return list(config.named_tasks(tasks))


def analyze_inputs(pipe, inputs, output_dir: str | os.PathLike = "outputs", *, tasks: Sequence[str] | None = None,
                   resume: bool = True, overwrite: bool = False, mask_format: str = "png", write_files: bool = True,
                   overlay: bool = True, min_face_size: float = 0.0, max_faces: int | None = None,
                   score_threshold: float | None = None, flip_recognition: bool = False, batch_size: int = 32,
                   chunk_size: int = 16, num_workers: int = 4, model_identity: dict | None = None,
                   rank: int | None = None, world_size: int | None = None, progress: bool | None = None,
                   output_format: str = "jsonl") -> AnalysisSummary:
    """Analyze ``inputs`` with the face-analysis ``pipe`` and write the results to ``output_dir``.

    ``inputs``: image paths, folders and glob patterns (a list of them or ``ImageFiles``), a ``datasets.Dataset``
    or ``IterableDataset`` with an ``image`` column, or ``DatasetRows`` / ``open_dataset(...)`` for other columns.
    ``tasks``: names of the model's tasks to run (all when None). ``resume``: skip inputs whose current version
    already has a good record of this model and these options; ``overwrite``: delete this process's JSONL first.
    ``mask_format``: parsing masks as PNG files referenced by ``mask_file`` ("png") or run-length encoded inline
    ("rle"). ``write_files=False`` writes only the JSONL; ``overlay=False`` no overlay PNGs. The face options are the
    pipeline's; ``chunk_size`` images are decoded (``num_workers`` threads) and analyzed together.
    ``model_identity`` (JSON-serializable) names the weights in ``run_key``; by default ``describe_model``.
    ``rank`` / ``world_size``: this process's share, by default from ``accelerate launch`` / ``torchrun``.
    ``progress``: show a progress bar (default: when stderr is a terminal).
    ``output_format="parquet"``: also the per-face dataset (module docstring; ``load_results`` reads it). Its masks
    are PNGs in the table; without files (``write_files=False``) the JSONL then carries them run-length encoded.

    Failed inputs get a record with ``error`` and are logged (logger ``faceptor_hf.analysis``). Ctrl-C raises
    ``AnalysisInterrupted`` after the last complete record.
    """
    import datasets

    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    if rank is None or world_size is None:
        rank, world_size, _ = distributed_shard()
    if isinstance(inputs, (datasets.Dataset, datasets.IterableDataset)):
        inputs = DatasetRows(inputs, getattr(inputs.info, "dataset_name", None) or "dataset", inputs.split and
                             str(inputs.split))
    elif not isinstance(inputs, (ImageFiles, DatasetRows)):
        inputs = ImageFiles([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    model = pipe.model
    tasks = select_tasks(model.config, tasks)
    untrained = is_untrained(model)
    output_dir = str(output_dir)
    if output_format == "parquet" and not write_files and mask_format == "png":
        from .results_dataset import has_mask_column

        if has_mask_column([model.config.get_task(name) for name in tasks]):
            mask_format = "rle"  # no PNG files: the table's masks come from the records themselves
    options = {"tasks": sorted(tasks), "dtype": str(model.dtype).replace("torch.", ""),
               "min_face_size": min_face_size, "max_faces": max_faces, "score_threshold": score_threshold,
               "flip_recognition": flip_recognition, "mask_format": mask_format, "files": write_files}
    identity = describe_model(model) if model_identity is None else model_identity
    run_key = short_hash([identity, options])
    shard = inputs.shard(rank, world_size)
    os.makedirs(output_dir, exist_ok=True)

    jsonl = os.path.join(output_dir, "results.jsonl" if world_size == 1 else f"results.rank{rank}.jsonl")
    if overwrite and os.path.exists(jsonl):
        os.remove(jsonl)
    state = read_resume(jsonl, run_key) if resume else ResumeState()
    if resume and state.other_runs:
        logger.warning(f"ignoring {state.other_runs} earlier records in {jsonl} made with another model or other "
                       "options (their inputs are analyzed again; --overwrite starts a clean file)")
    summary = AnalysisSummary(jsonl, earlier_records=state.records, other_runs=state.other_runs, untrained=untrained)
    writer = _RecordWriter(pipe, output_dir, tasks, run_key, untrained, mask_format, write_files, overlay,
                           {"batch_size": batch_size, "tasks": tasks, "min_face_size": min_face_size,
                            "max_faces": max_faces, "score_threshold": score_threshold,
                            "mask_format": "rle" if mask_format == "rle" else "numpy", "num_workers": num_workers,
                            "on_error": "return", "flip_recognition": flip_recognition}, num_workers, summary)
    started = time.perf_counter()
    show = progress if progress is not None else sys.stderr.isatty()
    names = []  # this process's inputs in order: the rows of its Parquet shard
    with open_jsonl(jsonl) as handle:
        try:
            pending = []
            with tqdm(total=shard.total, desc="analyze", unit="img", disable=not show) as bar:
                for item in shard.items:
                    name, _, input_key, _ = item
                    names.append(name)
                    if state.is_done(name, input_key):
                        summary.skipped += 1
                        bar.update(1)
                        continue
                    pending.append(item)
                    if len(pending) >= chunk_size:
                        writer.analyze_chunk(pending, handle)
                        bar.update(len(pending))
                        pending = []
                if pending:
                    writer.analyze_chunk(pending, handle)
                    bar.update(len(pending))
        except KeyboardInterrupt as interrupt:
            handle.flush()
            summary.seconds = time.perf_counter() - started
            raise AnalysisInterrupted(summary) from interrupt
    if output_format == "parquet":
        write_results_dataset(summary, output_dir, names, run_key, [model.config.get_task(name) for name in tasks],
                              identity, options, rank, world_size)
    summary.seconds = time.perf_counter() - started
    return summary


def wait_for_other_processes(world_size: int) -> None:
    """A barrier across the processes of a launch (none without a process group, e.g. a caller's own rank)."""
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def write_results_dataset(summary: AnalysisSummary, output_dir: str, names: list[str], run_key: str, tasks: list,
                          identity, options: dict, rank: int, world_size: int) -> None:
    """This process's Parquet shard from its JSONL; then, once every process has written its own, the first one
    removes shards of runs with another number of processes and writes the dataset card."""
    from .results_dataset import remove_other_shards, write_card, write_shard

    summary.shard, _ = write_shard(summary.jsonl, names, run_key, tasks, output_dir, rank, world_size)
    wait_for_other_processes(world_size)
    if rank == 0:
        for path in remove_other_shards(output_dir, world_size):
            logger.warning(f"removed {path}: a shard of a run with another number of processes")
        summary.card = write_card(output_dir, tasks, identity, options, summary.untrained)
    wait_for_other_processes(world_size)


class _RecordWriter:
    """Analyzes chunks of inputs and writes, per image in turn, its files and then its JSONL record."""

    def __init__(self, pipe, output_dir: str, tasks: list[str], run_key: str, untrained: bool, mask_format: str,
                 write_files: bool, overlay: bool, call_options: dict, num_workers: int, summary: AnalysisSummary):
        self.pipe, self.output_dir, self.tasks, self.run_key = pipe, output_dir, tasks, run_key
        self.untrained, self.mask_format, self.write_files, self.overlay = untrained, mask_format, write_files, overlay
        self.call_options, self.num_workers, self.summary = call_options, num_workers, summary
        processor = getattr(pipe, "image_processor", None)
        self.max_pixels = getattr(processor, "max_pixels", DEFAULT_MAX_PIXELS)

    def decode(self, images: list) -> list:
        """Pixels (3, H, W) in [0, 1] per image, or the image as given where it cannot be decoded (the pipeline then
        reports it under its own name)."""
        def load(item):
            index, image = item
            try:
                return load_image(image, index, self.max_pixels)
            except ImageLoadError:
                return image

        if len(images) == 1 or self.num_workers <= 1:
            return [load(item) for item in enumerate(images)]
        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            return list(pool.map(load, enumerate(images)))

    def analyze_chunk(self, chunk: list, handle) -> None:
        # Decode once here and hand the pixels to the pipeline and to the overlay.
        images = self.decode([image for _, image, _, _ in chunk])
        results = self.pipe(images, **self.call_options)
        summary = self.summary
        for (name, _, input_key, stem), pixels, faces in zip(chunk, images, results):
            record = {"input": name, "input_key": input_key, "run_key": self.run_key}
            if isinstance(faces, dict):
                record["error"] = faces["error"]
                summary.failed += 1
                summary.rows.append((name, "FAILED", faces["error"]))
                logger.warning(f"failed: {faces['error']}")
            else:
                summary.faces += len(faces)
                summary.rows.append((name, str(len(faces)), ""))
                if self.write_files and self.overlay and isinstance(pixels, torch.Tensor):
                    picture = PIL.Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8"))
                    draw_overlay(picture, faces, untrained=self.untrained).save(
                        os.path.join(self.output_dir, stem + ".png"))
                if self.mask_format == "png":
                    faces = store_masks(faces, stem, self.output_dir if self.write_files else None)
                record["faces"] = faces
            if self.untrained:
                record["untrained"] = True
                record["warning"] = UNTRAINED_NOTE
            line = json.dumps(record)
            if "faces" in record and self.write_files:
                with open(os.path.join(self.output_dir, stem + ".json"), "w", encoding="utf-8") as out:
                    out.write(line)
            # The record goes last: once it is in the JSONL, every file of this image is complete.
            handle.write(line + "\n")
            handle.flush()
            summary.written += 1


__all__ = [
    "OUTPUT_FORMATS",
    "AnalysisInputError",
    "AnalysisInterrupted",
    "AnalysisSummary",
    "DatasetOptionError",
    "DatasetRows",
    "ImageFiles",
    "StemNamer",
    "analyze_inputs",
    "distributed_shard",
    "open_dataset",
]
