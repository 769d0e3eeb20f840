"""Registry of native-release converters and ``load_native``.

A converter module describes one dataset release with a ``NativeDataset`` and registers it:

    register_native_dataset(NativeDataset(name="300w", task="align_300w", splits=("train", "test_common", ...),
                                          rows=iter_300w_rows, features=lambda: task_features(make_task("align_300w")),
                                          layout="data_dir/ holds ibug_300W/, ...", protocol="..."))

``rows(data_dir, split, **options)`` yields one dict per sample in the common schema (``schema.py``) — images as
file paths (decoded lazily) or ``{"bytes": ..., "path": ...}`` — or a ``DatasetFormatError`` for a sample it cannot
use (missing file, malformed line, wrong landmark count), naming the file and the line or record. ``load_native``
decides what a problem means: stop with that report (default) or skip and count it (``skip_bad=True``).

A large release can split its work: ``shards(data_dir, split, **options)`` returns a list of small work items
(e.g. byte ranges of an index file); ``load_native`` hands the list to ``Dataset.from_generator`` in
``gen_kwargs``, so ``num_proc`` worker processes each take a contiguous run of items, and calls
``rows(data_dir, split, shard=item, **options)`` for each item. Rows come out in item order whatever ``num_proc``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import PIL.Image

from .errors import BadSampleReport, DatasetFormatError
from .exif import raw_pixel_frame

IMAGE_COLUMNS = ("image", "mask", "image_a", "image_b")


@dataclass(frozen=True)
class NativeDataset:
    """One dataset as its authors release it.

    Attributes:
        name: registry key, e.g. ``"300w"`` (lower case, as typed on the command line).
        task: the official model task it trains and evaluates (``"align_300w"``); None for verification sets.
        splits: split names ``load_native`` accepts (``train``, ``test`` and the protocol subsets).
        rows: ``(data_dir, split, **options) -> iterator of row dicts or DatasetFormatError``.
        features: ``() -> datasets.Features`` of the rows.
        layout: what ``data_dir`` must contain (files and folders of the native release).
        protocol: split, alignment and label choices, including where the spec leaves a gap.
        options: names of converter-specific keyword options ``rows`` accepts (e.g. ``detect_keypoints``).
        shards: optional ``(data_dir, split, **options) -> list`` of picklable work items; when given, ``rows`` is
            called once per item with ``shard=item`` and ``num_proc`` processes share the items.
        exif_orientation: whether the release's annotations and official loader see the images with their EXIF
            orientation applied (OpenCV ``imread`` does; ``PIL.Image.open`` does not). False: ``load_native``
            stores every image whose tag would turn it in its raw pixel frame (``exif.raw_pixel_frame``), so
            readers, which apply the tag, see the raw pixels the annotations refer to.
    """

    name: str
    task: str | None
    splits: tuple[str, ...]
    rows: Callable[..., Iterator]
    features: Callable
    layout: str
    protocol: str = ""
    options: tuple[str, ...] = field(default_factory=tuple)
    shards: Callable[..., list] | None = None
    exif_orientation: bool = True


NATIVE_DATASETS: dict[str, NativeDataset] = {}


def register_native_dataset(spec: NativeDataset) -> NativeDataset:
    if spec.name in NATIVE_DATASETS:
        raise ValueError(f"native dataset {spec.name!r} is already registered")
    NATIVE_DATASETS[spec.name] = spec
    return spec


def get_native_dataset(name: str) -> NativeDataset:
    key = name.lower()
    if key not in NATIVE_DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(NATIVE_DATASETS))}")
    return NATIVE_DATASETS[key]


def _check_image(row: dict):
    """Open every image column far enough to know it decodes (header + PIL verify), without a full decode."""
    for column in IMAGE_COLUMNS:
        value = row.get(column)
        if value is None:
            continue
        path = value if isinstance(value, str) else value.get("path")
        data = None if isinstance(value, str) else value.get("bytes")
        try:
            if data is not None:
                with PIL.Image.open(io.BytesIO(data)) as image:
                    image.verify()
            else:
                with PIL.Image.open(path) as image:
                    image.verify()
        except Exception as error:  # noqa: BLE001 - PIL raises many types for unreadable files; all mean the same
            raise DatasetFormatError(f"{column} cannot be read as an image ({type(error).__name__}: {error})",
                                     path or "<bytes>") from error


def _converter_rows(spec: NativeDataset, data_dir: str, split: str, options: dict, shards: list | None):
    if shards is None:
        yield from spec.rows(data_dir, split, **options)
        return
    for shard in shards:
        yield from spec.rows(data_dir, split, shard=shard, **options)


def _generate_rows(name: str, data_dir: str, split: str, skip_bad: bool, verify_images: bool, problems_path: str,
                   options: dict, run_id: int, shards: list | None = None):
    """Generator for ``Dataset.from_generator``: converter rows, with problems raised or logged to a file (a file,
    so that counts survive worker processes). ``shards`` (the converter's work items, when it has any) is the
    one list in ``gen_kwargs``, which is what ``datasets`` splits across ``num_proc`` processes."""
    del run_id  # only part of the cache fingerprint: each load re-reads the release
    spec = get_native_dataset(name)
    for item in _converter_rows(spec, data_dir, split, options, shards):
        if not isinstance(item, Exception) and not spec.exif_orientation:
            item = {**item, **{column: raw_pixel_frame(item[column]) for column in IMAGE_COLUMNS
                               if isinstance(item.get(column), (str, dict))}}
        if not isinstance(item, Exception) and verify_images:
            try:
                _check_image(item)
            except DatasetFormatError as error:
                item = error
        if isinstance(item, Exception):
            if not skip_bad:
                item.skippable = True  # one bad sample (not a broken release): --skip-bad would get past it
                raise item
            with open(problems_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(str(item)) + "\n")
            continue
        yield item


def load_native(name: str, data_dir: str, split: str = "train", *, skip_bad: bool = False,
                verify_images: bool = True, num_proc: int | None = None, report: BadSampleReport | None = None,
                **options):
    """Read one split of a dataset's native release into a ``datasets.Dataset`` in the common schema.

    Args:
        name: a key of ``NATIVE_DATASETS`` (case-insensitive).
        data_dir: the folder of the release (see the dataset's ``layout``).
        split: one of the dataset's ``splits``.
        skip_bad: skip samples with problems and count them in ``report`` instead of stopping at the first.
        verify_images: open every image far enough to know it decodes (slower; catches truncated files).
        num_proc: worker processes for converters that shard (large releases; those with ``shards``).
        options: converter-specific options (the dataset's ``options``).

    Raises ``DatasetFormatError`` naming the file and line/record of the first problem (without ``skip_bad``),
    ``KeyError`` for an unknown name, ``ValueError`` for an unknown split or option, ``FileNotFoundError`` for a
    missing ``data_dir``. Each call re-reads the release; save the result (``faceptor-hf prepare-data``) to reuse it.
    """
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    spec = get_native_dataset(name)
    if split not in spec.splits:
        raise ValueError(f"{spec.name}: unknown split {split!r}; splits: {', '.join(spec.splits)}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"{spec.name}: unknown option(s) {unknown}; this converter takes "
                         f"{list(spec.options) or 'none'}")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{spec.name}: data folder {data_dir!r} does not exist; expected: {spec.layout}")
    with tempfile.TemporaryDirectory() as scratch:
        problems_path = os.path.join(scratch, "problems.jsonl")
        open(problems_path, "w").close()
        kwargs = {"name": spec.name, "data_dir": os.path.abspath(data_dir), "split": split, "skip_bad": skip_bad,
                  "verify_images": verify_images, "problems_path": problems_path, "options": options,
                  "run_id": time.time_ns()}
        if spec.shards is not None:
            kwargs["shards"] = list(spec.shards(kwargs["data_dir"], split, **options))
        try:
            dataset = Dataset.from_generator(_generate_rows, features=spec.features(), gen_kwargs=kwargs,
                                             num_proc=num_proc, split=split)
        except DatasetGenerationError as error:
            cause = error.__cause__ or error.__context__
            while cause is not None and not isinstance(cause, DatasetFormatError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                hint = (" (use skip_bad / --skip-bad to skip and count such samples)"
                        if getattr(cause, "skippable", False) else "")
                raise DatasetFormatError(f"{spec.name} {split}: {cause}{hint}") from error
            raise
        except ValueError as error:
            if "corresponds to no data" not in str(error):
                raise
            dataset = None  # datasets refuses an empty generator; reported below with the skipped count
        with open(problems_path, encoding="utf-8") as handle:
            problems = [json.loads(line) for line in handle if line.strip()]
    if report is not None:
        report.problems.extend(problems)
    if dataset is None or len(dataset) == 0:
        raise DatasetFormatError(f"{spec.name} {split}: no usable samples in {data_dir!r}"
                                 + (f" ({len(problems)} skipped as bad)" if problems else "")
                                 + f"; expected: {spec.layout}")
    return dataset


__all__ = ["NATIVE_DATASETS", "NativeDataset", "get_native_dataset", "load_native", "register_native_dataset"]
