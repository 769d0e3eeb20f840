"""MS1MV3 (recognition training, docs/datasets-and-evaluation.md §4.13): insightface's ``ms1m-retinaface-t1`` RecordIO
release.

Layout: ``train.rec`` + ``train.idx`` (MXNet RecordIO, read by ``faceptor_hf.data.recordio`` without MXNet) and,
optionally, ``property`` (text ``<identities>,<height>,<width>``, ``93431,112,112`` for MS1MV3).

Which records are images (as insightface's ``MXFaceDataset`` reads them):
- The ``.idx`` line with key 0 locates the header record. When its IRHeader flag is > 0, its first label is
  (number of images + 1): the image records are keys 1 … label[0] − 1. The records after them (one per identity,
  whose labels give that identity's key range) are not images and are not read.
- When the header's flag is 0 the file has no header, and every indexed record is an image (MXFaceDataset's
  fallback, for ``.rec`` files written without one).

Rows: ``image`` = the record's JPEG bytes (already ArcFace-aligned 112x112; no ``face_box`` or
``face_keypoints``: readers resize, schema rule 3), ``identity`` = the record's first float label as an integer
(docs/datasets-and-evaluation.md §S.4; the IRHeader's ``id``/``id2`` fields are record ids, not labels), ``record_key``
= the RecordIO key. The image's ``path`` is ``<train.rec>:<key>``, naming the record (it is not a file). With a
``property`` file, an identity outside 0 … identities − 1 is a bad sample.

Scale: 5,179,510 images, so rows stream. ``ms1mv3_shards`` reads ``train.idx`` once, line by line, and cuts it into
up to ``SHARD_COUNT`` byte ranges of whole lines; ``load_native(..., num_proc=N)`` shares those ranges between N
processes, and each reads its lines and seeks to each record, holding one record at a time. The same pass marks
which image keys the index lists (one byte per image): an image key with no ``.idx`` line is a bad sample
(reported by a last work item), a key listed twice makes the index ambiguous and stops the conversion.

Bad samples (yielded, so ``skip_bad`` can skip and count them): a malformed ``.idx`` line (``train.idx:<line>``), a
record cut short or an offset beyond the end of ``train.rec``, a wrong magic number or continuation flag, a
payload too short for its IRHeader (all named ``train.rec:record <key> at byte <offset>``), a label that is not a
non-negative integer, an identity beyond the ``property`` count. Unusable release (raised): ``train.rec`` or
``train.idx`` missing, no key-0 line, an unreadable header record, a key listed twice, a malformed ``property``.
"""

from __future__ import annotations

import math
import os
from typing import Iterator, NamedTuple

import numpy as np
from datasets import Value

from ...configuration_faceptor import make_task
from ..errors import DatasetFormatError
from ..recordio import parse_index_line, read_record, record_location, unpack_ir_record
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

SHARD_COUNT = 64
_READ_BUFFER = 1 << 20
LAYOUT = ("data_dir/ holds train.rec and train.idx (insightface ms1m-retinaface-t1, MXNet RecordIO) and optionally "
          "property ('<identities>,112,112', used to check the identity range)")


class IndexSpan(NamedTuple):
    """Lines of ``train.idx`` in bytes [start, stop), the first being line ``first_line`` (1-based). ``image_end``
    is the header's label[0] (image keys are 1 … image_end − 1), or None when every key is an image."""

    first_line: int
    start: int
    stop: int
    image_end: int | None


class MissingRecords(NamedTuple):
    """Image keys, as [start, stop) ranges, that the header announces but ``train.idx`` has no line for."""

    key_ranges: tuple[tuple[int, int], ...]
    image_end: int


def _release_paths(data_dir: str) -> tuple[str, str, str]:
    paths = tuple(os.path.join(data_dir, name) for name in ("train.rec", "train.idx", "property"))
    for path in paths[:2]:
        if not os.path.isfile(path):
            raise DatasetFormatError(f"missing {os.path.basename(path)}; expected: {LAYOUT}", path)
    return paths


def _identity_count(property_path: str) -> int | None:
    """Number of identities from the ``property`` file, or None without one."""
    if not os.path.isfile(property_path):
        return None
    with open(property_path, encoding="ascii", errors="replace") as handle:
        text = handle.readline().strip()
    try:
        count = int(text.split(",")[0])
    except ValueError:
        count = 0
    if count <= 0:
        raise DatasetFormatError(f"expected '<identities>,<height>,<width>' (e.g. 93431,112,112), got {text!r}",
                                 property_path, 1)
    return count


def _image_key_end(rec_path: str, idx_path: str) -> int | None:
    """label[0] of the header record (image keys are 1 … label[0] − 1), or None when record 0 has flag 0."""
    header_offset = None
    with open(idx_path, "rb") as index:
        for line in index:
            try:
                key, offset = parse_index_line(line)
            except ValueError:
                continue  # reported with its line number when the rows are read
            if key == 0:
                header_offset = offset
                break
    if header_offset is None:
        raise DatasetFormatError("no line for key 0, the header record whose label gives the range of image "
                                 f"records; expected: {LAYOUT}", idx_path)
    with open(rec_path, "rb") as records:
        size = os.fstat(records.fileno()).st_size
        header = unpack_ir_record(read_record(records, header_offset, size, rec_path, 0), rec_path, 0, header_offset)
    if header.flag == 0:
        return None
    end = header.labels[0]
    if not (math.isfinite(end) and end == int(end) and end >= 1):
        raise DatasetFormatError(f"the header record's first label {end} is not (number of images + 1)", rec_path,
                                 record_location(0, header_offset))
    return int(end)


def _missing_key_ranges(listed: bytearray) -> tuple[tuple[int, int], ...]:
    """[start, stop) runs of image keys (key = position + 1) whose flag in ``listed`` is 0."""
    missing = np.flatnonzero(np.frombuffer(listed, dtype=np.uint8) == 0) + 1
    if missing.size == 0:
        return ()
    runs = np.split(missing, np.flatnonzero(np.diff(missing) != 1) + 1)
    return tuple((int(run[0]), int(run[-1]) + 1) for run in runs)


def ms1mv3_shards(data_dir: str, split: str) -> list:
    """Work items: ``IndexSpan`` byte ranges of ``train.idx`` (whole lines, up to ``SHARD_COUNT``), then a
    ``MissingRecords`` item when the header announces image keys that the index does not list."""
    rec_path, idx_path, property_path = _release_paths(data_dir)
    _identity_count(property_path)  # a malformed property file stops here, before any worker starts
    image_end = _image_key_end(rec_path, idx_path)
    size = os.path.getsize(idx_path)
    listed = bytearray(image_end - 1) if image_end is not None else None
    spans: list = []
    span_start, span_line, position, line_number = 0, 1, 0, 0
    with open(idx_path, "rb", buffering=_READ_BUFFER) as index:
        for line_number, line in enumerate(index, 1):
            position += len(line)
            if listed is not None and line.strip():
                try:
                    key, _ = parse_index_line(line)
                except ValueError:
                    key = None  # reported with its line number when the rows are read
                if key is not None and 1 <= key < image_end:
                    if listed[key - 1]:
                        raise DatasetFormatError(f"image record {key} is listed a second time; the index is ambiguous",
                                                 idx_path, line_number)
                    listed[key - 1] = 1
            if position * SHARD_COUNT >= size * (len(spans) + 1):
                spans.append(IndexSpan(span_line, span_start, position, image_end))
                span_start, span_line = position, line_number + 1
    if span_start < position:
        spans.append(IndexSpan(span_line, span_start, position, image_end))
    if listed is not None:
        missing = _missing_key_ranges(listed)
        if missing:
            spans.append(MissingRecords(missing, image_end))
    return spans


def _span_rows(span: IndexSpan, rec_path: str, idx_path: str, identity_count: int | None) -> Iterator:
    with open(idx_path, "rb") as index, open(rec_path, "rb", buffering=_READ_BUFFER) as records:
        size = os.fstat(records.fileno()).st_size
        index.seek(span.start)
        position, line_number = span.start, span.first_line
        while position < span.stop:
            line = index.readline()
            if not line:
                yield DatasetFormatError(f"the file ended at byte {position}, before byte {span.stop} that it had "
                                         "when the conversion started (changed while reading?)", idx_path, line_number)
                return
            if line.strip():
                yield from _line_rows(line, line_number, span.image_end, records, size, rec_path, idx_path,
                                      identity_count)
            position += len(line)
            line_number += 1


def _line_rows(line: bytes, line_number: int, image_end: int | None, records, size: int, rec_path: str,
               idx_path: str, identity_count: int | None) -> Iterator:
    try:
        key, offset = parse_index_line(line)
    except ValueError as error:
        yield DatasetFormatError(str(error), idx_path, line_number)
        return
    if image_end is not None and not 1 <= key < image_end:
        return  # the header record and the per-identity range records are not images
    try:
        record = unpack_ir_record(read_record(records, offset, size, rec_path, key), rec_path, key, offset)
    except DatasetFormatError as error:
        yield error
        return
    label = record.labels[0]
    if not (math.isfinite(label) and label == int(label) and label >= 0):
        yield DatasetFormatError(f"identity label {label} is not a non-negative integer", rec_path,
                                 record_location(key, offset))
        return
    identity = int(label)
    if identity_count is not None and identity >= identity_count:
        yield DatasetFormatError(f"identity {identity} is outside 0 … {identity_count - 1} (the property file "
                                 f"gives {identity_count} identities)", rec_path, record_location(key, offset))
        return
    yield {"image": {"bytes": record.data, "path": f"{rec_path}:{key}"}, "face_box": None, "face_keypoints": None,
           "identity": identity, "record_key": key}


def ms1mv3_rows(data_dir: str, split: str, shard: IndexSpan | MissingRecords | None = None) -> Iterator:
    """Rows of one work item of ``ms1mv3_shards`` (all of them when ``shard`` is None)."""
    rec_path, idx_path, property_path = _release_paths(data_dir)
    if shard is None:
        for item in ms1mv3_shards(data_dir, split):
            yield from ms1mv3_rows(data_dir, split, shard=item)
        return
    if isinstance(shard, MissingRecords):
        for start, stop in shard.key_ranges:
            for key in range(start, stop):
                yield DatasetFormatError(f"no line for image record {key} (the header record gives image keys 1 … "
                                         f"{shard.image_end - 1})", idx_path)
        return
    yield from _span_rows(shard, rec_path, idx_path, _identity_count(property_path))


MS1MV3 = register_native_dataset(NativeDataset(
    name="ms1mv3",
    task="recog_ms1mv3",
    splits=("train",),
    rows=ms1mv3_rows,
    shards=ms1mv3_shards,
    features=lambda: task_features(make_task("recog_ms1mv3"), extra={"record_key": Value("int64")}),
    layout=LAYOUT,
    protocol=("train = every image record: keys 1 … label[0] − 1 of header record 0 (5,179,510 images, 93,431 "
              "identities); the per-identity range records after them are skipped. identity = the record's first "
              "float label; the IRHeader id is not a label. Images are the release's ArcFace-aligned 112x112 crops "
              "(no face_box or face_keypoints). No validation split: verification uses the lfw, cfp_fp, agedb_30, "
              "calfw and cplfw .bin sets. Shards across num_proc processes by byte ranges of train.idx."),
))
