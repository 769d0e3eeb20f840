"""Analysis results as a ``datasets.Dataset``: one row per face with typed columns, Parquet shards, a dataset card.

    faceptor-hf analyze photos/ --model M --output-format parquet --output-dir out
    faceptor_hf.load_results("out")              # -> datasets.Dataset, one row per face
    datasets.load_dataset("out")                 # the same rows, through the card's data_files
    datasets.load_dataset("parquet", data_dir="out/data")

Layout of the output folder: ``data/train-<rank>-of-<world>.parquet`` (one shard per process of a run), and
``README.md`` (the dataset card: what made the results, its columns, how to load them), next to what the JSONL
output writes. ``faceptor-hf analyze --push-to-hub REPO`` uploads the card and the shards as a dataset repository.

The Parquet files are made from the JSONL at the end of a run, not written as the run goes: the JSONL stays the one
resume log (a killed run leaves at most one cut line, which is redone), and the table holds exactly the current
record of every input of the run (the last good one of this model and these options), however many reruns it took.
Columns:

* ``source`` (string, the input's name), ``face_index`` (int32, the face's place in its image's record), ``box``
  (float32[4] x1, y1, x2, y2), ``score`` (float32 detector confidence), ``keypoints`` (float32[5][2] XY);
* ``embedding``: float32[D], L2-normalized, of the first recognition task; ``quality``: a struct, when the
  pipeline reports one per face;
* ``<task>.<key>`` per task, as its type's ``table_columns`` (``faceptor_hf.task_types``) say: ``age_morph2.age``,
  ``affect_rafdb.label`` and ``.scores``, ``biattr_celeba.attributes``, ``align_300w.points``,
  ``parsing_celebam.mask`` (a ``datasets.Image``: an 8-bit PNG whose pixel values are class ids). A task whose type
  declares no columns is stored as one JSON string column named after the task.

Package-only code: no file a saved model ships imports this module.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np
import PIL.Image

from .task_decoding import decode_mask
from .task_types import FaceptorTask, TableColumn, get_task_type

DATA_FOLDER = "data"
SPLIT = "train"
SHARD_PATTERN = re.compile(r"^train-(\d{5})-of-(\d{5})\.parquet$")
#: Rows per Parquet row group: small groups when rows carry PNG masks keep reading one row cheap.
ROWS_PER_GROUP = {True: 64, False: 1000}
STATS_KEY = b"faceptor_hf"


class ResultsError(ValueError):
    """Results that cannot be read or written as a dataset (no shards, a bad record); the message names the file."""


def shard_name(rank: int, world_size: int) -> str:
    """``train-00000-of-00002.parquet``: the Hub's naming, so the files form the ``train`` split."""
    return f"{SPLIT}-{rank:05d}-of-{world_size:05d}.parquet"


@dataclass
class ColumnPlan:
    """One per-task column: its ``name`` in the table, the ``task`` it comes from and the registry's ``column``
    (None: the task's whole result as JSON)."""

    name: str
    task: FaceptorTask
    column: TableColumn | None
    face_level: bool = False


def plan_columns(tasks: list[FaceptorTask]) -> list[ColumnPlan]:
    """The per-task columns of a table of ``tasks``, in task order. A column with a ``face_column`` name takes it
    for the first task that has one; the others keep ``<task>.<key>``."""
    plans, taken = [], set()
    for task in tasks:
        declare = get_task_type(task).table_columns
        if declare is None:
            plans.append(ColumnPlan(task.name, task, None))
            continue
        for column in declare(task):
            face_level = bool(column.face_column) and column.face_column not in taken
            name = column.face_column if face_level else f"{task.name}.{column.key}"
            taken.add(name)
            plans.append(ColumnPlan(name, task, column, face_level))
    return plans


def has_mask_column(tasks: list[FaceptorTask]) -> bool:
    """Whether a table of ``tasks`` stores masks."""
    return any(plan.column is not None and plan.column.kind == "mask" for plan in plan_columns(tasks))


def _array_feature(shape: tuple[int, ...]):
    from datasets import List, Value

    feature = Value("float32")
    for size in reversed(shape):
        feature = List(feature, length=size)
    return feature


def column_feature(column: TableColumn | None):
    """The ``datasets`` feature of one registry column (a JSON string without one)."""
    from datasets import Image, Value

    if column is None or column.kind == "string":
        return Value("string")
    if column.kind == "float32":
        return Value("float32")
    if column.kind in ("float32_array", "unit_vector"):
        return _array_feature(column.shape)
    if column.kind == "scores":
        return {name: Value("float32") for name in column.names}
    return Image()  # "mask"


def quality_feature(quality: dict):
    """A struct feature for a face's ``quality`` dict: numbers as float32, flags as bool, anything else a string."""
    from datasets import Value

    def value(item):
        if isinstance(item, bool):
            return Value("bool")
        if item is None or isinstance(item, (int, float)):
            return Value("float32")
        return Value("string")

    return {key: value(item) for key, item in quality.items()}


def result_features(plans: list[ColumnPlan], quality: dict | None = None):
    """``datasets.Features`` of the table: the face columns, ``quality`` when given (an example dict), then the
    planned task columns."""
    from datasets import Features, List, Value

    face = {"source": Value("string"), "face_index": Value("int32"), "box": List(Value("float32"), length=4),
            "score": Value("float32"), "keypoints": _array_feature((5, 2))}
    features = {**face, **{plan.name: column_feature(plan.column) for plan in plans if plan.face_level}}
    if quality is not None:
        features["quality"] = quality_feature(quality)
    features.update({plan.name: column_feature(plan.column) for plan in plans if not plan.face_level})
    return Features(features)


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def column_value(plan: ColumnPlan, result: dict | None, folder: str):
    """One cell: the task's formatted ``result`` (a face's ``tasks[name]`` in a JSONL record) as the column wants
    it. Masks come inline (``mask``, any ``encode_mask`` format) or as the PNG file a record names (``mask_file``,
    relative to ``folder``)."""
    if result is None:
        return None
    column = plan.column
    if column is None:
        return json.dumps(result)
    if column.kind == "mask":
        if result.get("mask") is not None:
            return {"bytes": _png(decode_mask(result["mask"])), "path": None}
        if result.get("mask_file"):
            with open(os.path.join(folder, result["mask_file"]), "rb") as handle:
                return {"bytes": handle.read(), "path": None}
        return None
    value = result.get(column.key)
    if value is None:
        return None
    if column.kind == "unit_vector":
        vector = np.asarray(value, dtype=np.float64)
        return (vector / max(np.linalg.norm(vector), 1e-12)).astype(np.float32)
    if column.kind == "scores":
        return {name: value.get(name) for name in column.names}
    if column.kind == "string":
        return str(value)
    return value


def face_rows(record: dict, plans: list[ColumnPlan], folder: str, with_quality: bool) -> list[dict]:
    """The table rows of one JSONL record (one image): one per face."""
    rows = []
    for index, face in enumerate(record.get("faces") or []):
        row = {"source": record["input"], "face_index": index, "box": face.get("box"), "score": face.get("score"),
               "keypoints": face.get("keypoints")}
        if with_quality:
            row["quality"] = face.get("quality")
        tasks = face.get("tasks", {})
        for plan in plans:
            row[plan.name] = column_value(plan, tasks.get(plan.task.name), folder)
        rows.append(row)
    return rows


@dataclass
class ShardStats:
    """What one process's shard holds: ``images`` with a current record, of which ``failed`` and ``no_face``;
    ``faces`` = rows."""

    images: int = 0
    failed: int = 0
    no_face: int = 0
    faces: int = 0
    tasks: list[str] = field(default_factory=list)


def current_records(jsonl: str, names: list[str], run_key: str) -> tuple[dict[str, int], dict | None]:
    """Byte offsets in ``jsonl`` of the last record of ``run_key`` for each of ``names``, and the first face
    ``quality`` dict seen (None when no face has one)."""
    wanted, offsets, quality = set(names), {}, None
    with open(jsonl, "rb") as handle:
        offset = 0
        for line in handle:
            try:
                record = json.loads(line)
                name = record["input"]
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                record, name = None, None  # a line cut by a killed process
            if record is not None and name in wanted and record.get("run_key") == run_key:
                offsets[name] = offset
                if quality is None:
                    quality = next((face["quality"] for face in record.get("faces") or []
                                    if isinstance(face.get("quality"), dict)), None)
            offset += len(line)
    return offsets, quality


def write_shard(jsonl: str, names: list[str], run_key: str, tasks: list[FaceptorTask], folder: str, rank: int = 0,
                world_size: int = 1) -> tuple[str, ShardStats]:
    """Write this process's Parquet shard ``folder/data/train-<rank>-of-<world>.parquet`` from the current records
    of ``names`` (in that order) in ``jsonl``; files a record names (mask PNGs) are read from ``folder``. The shard
    is written beside and then renamed over the old one, so a reader never sees half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    offsets, quality = current_records(jsonl, names, run_key) if os.path.exists(jsonl) else ({}, None)
    plans = plan_columns(tasks)
    features = result_features(plans, quality)
    stats = ShardStats(tasks=[task.name for task in tasks])
    schema = features.arrow_schema
    group = ROWS_PER_GROUP[has_mask_column(tasks)]
    os.makedirs(os.path.join(folder, DATA_FOLDER), exist_ok=True)
    path = os.path.join(folder, DATA_FOLDER, shard_name(rank, world_size))
    partial = path + ".partial"
    rows: list[dict] = []

    def flush(writer):
        if rows:
            encoded = [features.encode_example(row) for row in rows]
            writer.write_table(pa.Table.from_pylist(encoded, schema=schema), row_group_size=group)
            rows.clear()

    with open(jsonl, "rb") if offsets else open(os.devnull, "rb") as handle, \
            pq.ParquetWriter(partial, schema) as writer:
        for name in names:
            if name not in offsets:
                continue
            handle.seek(offsets[name])
            record = json.loads(handle.readline())
            stats.images += 1
            if "error" in record:
                stats.failed += 1
                continue
            try:
                found = face_rows(record, plans, folder, quality is not None)
            except OSError as error:
                raise ResultsError(f"{jsonl}: record of {name}: {error}") from error
            stats.no_face += not found
            stats.faces += len(found)
            rows.extend(found)
            if len(rows) >= group:
                flush(writer)
        flush(writer)
        writer.add_key_value_metadata({STATS_KEY: json.dumps(stats.__dict__).encode()})
    os.replace(partial, path)
    return path, stats


def shard_paths(folder: str) -> list[str]:
    """The Parquet shards of a results folder, in rank order."""
    found = glob.glob(os.path.join(folder, DATA_FOLDER, "*.parquet"))
    return sorted(path for path in found if SHARD_PATTERN.match(os.path.basename(path)))


def remove_other_shards(folder: str, world_size: int) -> list[str]:
    """Delete the shards a run with another number of processes left in ``folder`` (they would add their rows a
    second time); returns their paths."""
    stale = []
    for path in shard_paths(folder):
        if int(SHARD_PATTERN.match(os.path.basename(path)).group(2)) != world_size:
            os.remove(path)
            stale.append(path)
    return stale


def shard_stats(path: str) -> ShardStats:
    """The ``ShardStats`` a shard carries in its Parquet metadata."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata.metadata or {}
    return ShardStats(**json.loads(metadata.get(STATS_KEY, b"{}")))


def _describe(name: str, feature, plans: dict[str, ColumnPlan]) -> tuple[str, str]:
    """(type, meaning) of a column for the card."""
    fixed = {"source": ("string", "the input: file path, or dataset row name"),
             "face_index": ("int32", "the face's place among its image's faces (highest detector score first)"),
             "box": ("float32[4]", "face box x1, y1, x2, y2 in image pixels"),
             "score": ("float32", "detector confidence"),
             "keypoints": ("float32[5][2]", "eyes, nose tip, mouth corners (XY, image pixels)"),
             "quality": ("struct", "face quality signals: " + ", ".join(feature) if isinstance(feature, dict) else "")}
    if name in fixed:
        return fixed[name]
    plan = plans[name]
    column, task = plan.column, plan.task
    where = f"task `{task.name}` ({task.type})"
    if column is None:
        return "string", f"{where}: its result as JSON"
    if column.kind == "mask":
        classes = ", ".join(f"{index} {label}" for index, label in enumerate(task.labels))
        return "image (PNG)", f"{where}: 8-bit mask, pixel value = class id: {classes}"
    if column.kind == "scores":
        return "struct of float32", f"{where}: {column.key}, one field per label"
    dimensions = "".join(f"[{size}]" for size in column.shape)
    norm = ", L2-normalized" if column.kind == "unit_vector" else ""
    return ("string" if column.kind == "string" else f"float32{dimensions}"), f"{where}: {column.key}{norm}"


def dataset_card(folder: str, tasks: list[FaceptorTask], model: dict, options: dict, untrained: bool = False) -> str:
    """README.md of a results folder: YAML metadata that points ``load_dataset`` at the shards, then what made the
    results, the counts and one line per column."""
    import pyarrow.parquet as pq
    import yaml
    from datasets import Features

    paths = shard_paths(folder)
    totals = ShardStats()
    for path in paths:
        stats = shard_stats(path)
        for name in ("images", "failed", "no_face", "faces"):
            setattr(totals, name, getattr(totals, name) + getattr(stats, name))
    plans = {plan.name: plan for plan in plan_columns(tasks)}
    features = (Features.from_arrow_schema(pq.read_schema(paths[0])) if paths
                else result_features(list(plans.values())))
    metadata = {"configs": [{"config_name": "default",
                             "data_files": [{"split": SPLIT, "path": f"{DATA_FOLDER}/{SPLIT}-*.parquet"}]}],
                "tags": ["faceptor-hf", "face-analysis"]}
    lines = ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", "", "# Face analysis results", ""]
    if untrained:
        lines += ["> **UNTRAINED RANDOM WEIGHTS**: every prediction here is meaningless; the run only exercised the "
                  "code.", ""]
    lines += [f"Made by `faceptor-hf analyze` (the `faceptor-hf` package): one row per detected face, "
              f"{totals.faces} faces from {totals.images} images ({totals.no_face} without a face, {totals.failed} "
              f"failed and left out), in {len(paths)} shard(s).", "",
              f"- model: `{json.dumps(model, sort_keys=True)}`",
              f"- options: `{json.dumps(options, sort_keys=True)}`",
              f"- tasks: {', '.join(f'`{task.name}` ({task.type})' for task in tasks)}", "",
              "## Loading", "", "```python",
              "import faceptor_hf",
              "faces = faceptor_hf.load_results(\"this-folder-or-repo\")   # datasets.Dataset",
              "# or: datasets.load_dataset(\"this-folder-or-repo\", split=\"train\")",
              "```", "", "## Columns", "", "| column | type | meaning |", "|---|---|---|"]
    for name, feature in features.items():
        kind, meaning = _describe(name, feature, plans)
        lines.append(f"| `{name}` | {kind} | {meaning} |")
    return "\n".join(lines) + "\n"


def write_card(folder: str, tasks: list[FaceptorTask], model: dict, options: dict, untrained: bool = False) -> str:
    """Write ``dataset_card(...)`` to ``folder/README.md``; returns its path."""
    path = os.path.join(folder, "README.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(dataset_card(folder, tasks, model, options, untrained))
    return path


def load_results(path: str | os.PathLike, **load_options):
    """The results of ``faceptor-hf analyze --output-format parquet`` as one ``datasets.Dataset`` (one row per
    face, every process's shard): from its output folder, or from a Hub dataset repository it was pushed to.
    ``load_options`` go to ``datasets.load_dataset`` (e.g. ``revision``, ``token``)."""
    import datasets

    path = os.fspath(path)
    if os.path.isdir(path):
        shards = shard_paths(path)
        if not shards:
            raise ResultsError(f"{path}: no results shards ({DATA_FOLDER}/{SPLIT}-*.parquet); write them with "
                               "faceptor-hf analyze --output-format parquet")
        return datasets.load_dataset("parquet", data_files={SPLIT: shards}, split=SPLIT, **load_options)
    if os.path.exists(path):
        raise ResultsError(f"{path}: not a results folder")
    return datasets.load_dataset(path, split=SPLIT, **load_options)


def push_results(folder: str, repo_id: str, *, token=None, private: bool | None = None,
                 revision: str | None = None, commit_message: str | None = None):
    """Upload the card and the shards of a results folder to the dataset repository ``repo_id`` in one commit;
    shards of an earlier push that this one does not have are deleted in the same commit. Returns the
    ``CommitInfo``; raises ``hub.PushError`` (nothing committed) on failure."""
    from huggingface_hub import HfApi

    from .hub import PushError

    if not shard_paths(folder):
        raise ResultsError(f"{folder}: no results shards to push")
    api = HfApi(token=token)
    stage = "creating the repository"
    try:
        repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
        if revision is not None:
            stage = f"creating branch {revision!r}"
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        stage = "uploading"
        return api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder, revision=revision,
                                 allow_patterns=["README.md", f"{DATA_FOLDER}/{SPLIT}-*.parquet"],
                                 delete_patterns=[f"{DATA_FOLDER}/*.parquet"],
                                 commit_message=commit_message or "Upload face analysis results")
    except Exception as error:  # noqa: BLE001 - network/HTTP errors of many types; all mean the push failed
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PushError(f"push to dataset {repo_id!r} failed while {stage}: {reason}. Nothing was committed: the "
                        "repository keeps its previous revision; run the push again.") from error


__all__ = [
    "ColumnPlan",
    "ResultsError",
    "ShardStats",
    "dataset_card",
    "load_results",
    "plan_columns",
    "push_results",
    "remove_other_shards",
    "result_features",
    "shard_paths",
    "write_card",
    "write_shard",
]
