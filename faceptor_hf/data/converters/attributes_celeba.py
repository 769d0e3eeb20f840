"""CelebA, 40 binary attributes (docs/datasets-and-evaluation.md §4.12), from the native release.

``data_dir`` holds, flat or in the release's ``Anno/``, ``Eval/`` and ``Img/`` folders:
``list_attr_celeba.txt`` (an image count, a header of the 40 attribute names, then ``<image> <40 values of +1/-1>``
per line), ``list_eval_partition.txt`` (``<image> <0 train | 1 val | 2 test>``), ``img_align_celeba/*.jpg``
(178x218) and ``list_landmarks_align_celeba.txt`` (count, header, ``<image>`` then lefteye, righteye, nose,
leftmouth, rightmouth as x y). The three lists name the same images in the same order and are read side by side.

Splits: ``train`` (0), ``validation`` (1), ``test`` (2) and ``trainval`` (0 and 1: the 182,637 images Faceptor
trains on). ``attributes`` are int8 in ``CELEBA_ATTRIBUTES`` order (+1 -> 1, -1 -> 0); the header must name the
attributes in exactly that order.

Alignment (a documented gap, docs/datasets-and-evaluation.md §3, §4.12 and §9): square aligned crops are asked for,
not the 178x218 images squashed to 112, and recommends the 5-point ArcFace alignment; the release annotates those 5
points, so ``face_keypoints`` are the release's aligned-image landmarks (taken as pixel-index coordinates, as released)
and the reader aligns them to the 112-px ArcFace template. ``align_with_landmarks=False`` leaves ``face_keypoints`` None
(the landmark file is then not needed) and the 178x218 images are used as they are.
"""

from __future__ import annotations

import contextlib
import os

from datasets import Value

from ...configuration_faceptor import CELEBA_ATTRIBUTES, make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

TASK = "biattr_celeba"
SPLIT_PARTITIONS = {"train": (0,), "validation": (1,), "test": (2,), "trainval": (0, 1)}
LANDMARK_COLUMNS = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y", "leftmouth_x",
                    "leftmouth_y", "rightmouth_x", "rightmouth_y"]
ATTRIBUTE_VALUES = {"1": 1, "-1": 0}
LAYOUT = ("data_dir/ holds list_attr_celeba.txt, list_landmarks_align_celeba.txt (in data_dir/ or data_dir/Anno/), "
          "list_eval_partition.txt (data_dir/ or data_dir/Eval/) and img_align_celeba/ (data_dir/ or data_dir/Img/)")


def _locate(data_dir: str, name: str, folder: str, is_dir: bool = False) -> str:
    """``data_dir/name`` or ``data_dir/folder/name``; DatasetFormatError naming both when neither exists."""
    exists = os.path.isdir if is_dir else os.path.isfile
    for path in (os.path.join(data_dir, name), os.path.join(data_dir, folder, name)):
        if exists(path):
            return path
    raise DatasetFormatError(f"{name} is missing (looked in data_dir/ and data_dir/{folder}/); expected: {LAYOUT}",
                             data_dir)


class _ListFile:
    """A CelebA list read line by line: numbered, blank lines skipped, each line split on whitespace."""

    def __init__(self, path: str, files: contextlib.ExitStack):
        self.path = path
        self.handle = files.enter_context(open(path, encoding="utf-8"))
        self.line = 0

    def next_fields(self) -> list[str] | None:
        for text in self.handle:
            self.line += 1
            if text.strip():
                return text.split()
        return None

    def read_header(self, expected: list[str], what: str) -> int:
        """Check the count line and the header line (which must be ``expected``); returns the count."""
        count = self.next_fields()
        if count is None or len(count) != 1 or not count[0].isdigit():
            raise DatasetFormatError(f"the first line must be the image count, got {count}", self.path, self.line)
        header = self.next_fields() or []
        if header != expected:
            column = next((i for i, (got, want) in enumerate(zip(header, expected)) if got != want),
                          min(len(header), len(expected)))
            found = repr(header[column]) if column < len(header) else "no name"
            wanted = repr(expected[column]) if column < len(expected) else "no name"
            raise DatasetFormatError(f"{what} header does not match: column {column + 1} has {found}, expected "
                                     f"{wanted} ({len(header)} names; expected these {len(expected)} in this order: "
                                     f"{' '.join(expected)})", self.path, self.line)
        return int(count[0])


def _paired(fields: list[str] | None, name: str, listing: _ListFile, attribute_file: _ListFile):
    if fields is None:
        raise DatasetFormatError(f"ends before {name} (listed at {attribute_file.path}:{attribute_file.line}); "
                                 "the lists must name the same images in the same order", listing.path, listing.line)
    if fields[0] != name:
        raise DatasetFormatError(f"lists {fields[0]!r} where {attribute_file.path}:{attribute_file.line} lists "
                                 f"{name!r}; the lists must name the same images in the same order",
                                 listing.path, listing.line)
    return fields


def _partition(fields: list[str], listing: _ListFile):
    if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
        return DatasetFormatError(f"expected '<image> <0|1|2>', got {' '.join(fields)!r}", listing.path, listing.line)
    return int(fields[1])


def _keypoints(fields: list[str], listing: _ListFile):
    try:
        values = [float(value) for value in fields[1:]]
    except ValueError:
        values = []
    if len(values) != len(LANDMARK_COLUMNS):
        return DatasetFormatError(f"expected '<image>' and {len(LANDMARK_COLUMNS)} numbers, got "
                                  f"{' '.join(fields)!r}", listing.path, listing.line)
    return [values[i:i + 2] for i in range(0, len(values), 2)]


def _attributes(fields: list[str], listing: _ListFile):
    if len(fields) - 1 != len(CELEBA_ATTRIBUTES):
        return DatasetFormatError(f"{fields[0]} has {len(fields) - 1} attribute values, expected "
                                  f"{len(CELEBA_ATTRIBUTES)}", listing.path, listing.line)
    values = [ATTRIBUTE_VALUES.get(value) for value in fields[1:]]
    if None in values:
        column = values.index(None)
        return DatasetFormatError(f"{fields[0]}: value {fields[column + 1]!r} of {CELEBA_ATTRIBUTES[column]} is not "
                                  "1 or -1", listing.path, listing.line)
    return values


def iter_celeba_rows(data_dir: str, split: str, align_with_landmarks: bool = True):
    """Rows of one split, or DatasetFormatError per unusable line."""
    attribute_path = _locate(data_dir, "list_attr_celeba.txt", "Anno")
    partition_path = _locate(data_dir, "list_eval_partition.txt", "Eval")
    images_dir = _locate(data_dir, "img_align_celeba", "Img", is_dir=True)
    landmark_path = _locate(data_dir, "list_landmarks_align_celeba.txt", "Anno") if align_with_landmarks else None
    wanted = SPLIT_PARTITIONS[split]
    with contextlib.ExitStack() as files:
        attribute_file = _ListFile(attribute_path, files)
        partition_file = _ListFile(partition_path, files)
        landmark_file = _ListFile(landmark_path, files) if landmark_path else None
        count = attribute_file.read_header(CELEBA_ATTRIBUTES, "attribute")
        if landmark_file is not None:
            landmark_file.read_header(LANDMARK_COLUMNS, "landmark")
        listed = 0
        while (fields := attribute_file.next_fields()) is not None:
            listed += 1
            name = fields[0]
            partition = _partition(_paired(partition_file.next_fields(), name, partition_file, attribute_file),
                                   partition_file)
            keypoints = None
            if landmark_file is not None:
                keypoints = _keypoints(_paired(landmark_file.next_fields(), name, landmark_file, attribute_file),
                                       landmark_file)
            if isinstance(partition, Exception):
                yield partition
                continue
            if partition not in wanted:
                continue
            attributes = _attributes(fields, attribute_file)
            problem = next((item for item in (attributes, keypoints) if isinstance(item, Exception)), None)
            if problem is not None:
                yield problem
                continue
            image = os.path.join(images_dir, name)
            if not os.path.isfile(image):
                yield DatasetFormatError(f"image {image!r} does not exist", attribute_path, attribute_file.line)
                continue
            yield {"image": image, "face_box": None, "face_keypoints": keypoints, "attributes": attributes,
                   "image_name": name, "partition": partition}
        if listed != count:
            raise DatasetFormatError(f"the count line says {count} images but the file lists {listed}",
                                     attribute_path, 1)
        for listing in (partition_file, landmark_file):
            if listing is not None and (extra := listing.next_fields()) is not None:
                raise DatasetFormatError(f"lists {extra[0]!r} after the last image of {attribute_path}; the lists "
                                         "must name the same images in the same order", listing.path, listing.line)


register_native_dataset(NativeDataset(
    name="celeba",
    task=TASK,
    splits=tuple(SPLIT_PARTITIONS),
    rows=iter_celeba_rows,
    features=lambda: task_features(make_task(TASK), extra={"image_name": Value("string"),
                                                           "partition": Value("int8")}),
    layout=LAYOUT,
    protocol=("Splits from list_eval_partition.txt: train 0, validation 1, test 2, trainval 0+1 (Faceptor trains on "
              "trainval). attributes: +1 -> 1, -1 -> 0 in CELEBA_ATTRIBUTES order (the header is checked). Alignment "
              "(a gap, docs/datasets-and-evaluation.md §9): face_keypoints = the release's 5 aligned-image landmarks "
              "as pixel-index coordinates, for the square ArcFace 112 alignment docs/datasets-and-evaluation.md §3 "
              "recommends instead of squashing 178x218; align_with_landmarks=False keeps the images as they are (no "
              "points). Extra columns: image_name, partition."),
    options=("align_with_landmarks",),
    # The official loader opens the images with PIL, without the EXIF orientation; the landmarks refer to them.
    exif_orientation=False,
))
