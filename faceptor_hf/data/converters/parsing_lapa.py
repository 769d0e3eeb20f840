"""LaPa (11-class face parsing, task ``parsing_lapa``) from its native release (docs/datasets-and-evaluation.md §4.6).

Layout of ``data_dir`` (the extracted ``LaPa.tar.gz``, or a folder holding it as ``LaPa/``):

    {train, val, test}/images/<name>.jpg      photos of varying size
    {train, val, test}/labels/<name>.png      single-channel class ids 0 ... 10, the size of the photo
    {train, val, test}/landmarks/<name>.txt   "106" on the first line, then 106 lines "x y"

Splits: ``train``, ``validation`` (the ``val`` folder), ``test``, and ``trainval`` = train + val, the set Faceptor
trains on. Every name found in any of the three folders of a split is one sample; a name that lacks its photo,
label or landmark file is reported (a label without a photo is how a missing photo shows).

Rows: ``image`` and ``mask`` are the release's files (the native ids 0 ... 10 are ``LAPA_LABELS`` order, kept
unchanged); ``face_keypoints`` = the 106 landmarks [104, 105, 54, 84, 90] as released (eye centers, nose tip, mouth
corners: the FaRL 5-point alignment of docs/datasets-and-evaluation.md §2.2, used for train and test alike);
``landmarks_106`` (106, 2) is the whole landmark file. ``face_box`` is None.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import PIL.Image

from ...configuration_faceptor import make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

POINT_COUNT = 106
# Indices into the 106 points, in face_keypoints order: left eye, right eye, nose tip, left/right mouth corner.
KEYPOINT_INDICES = (104, 105, 54, 84, 90)
FOLDERS = {"train": ("train",), "validation": ("val",), "test": ("test",), "trainval": ("train", "val")}
PARTS = (("images", ".jpg"), ("labels", ".png"), ("landmarks", ".txt"))

LAYOUT = ("data_dir/ (or data_dir/LaPa/) holds {train,val,test}/images/<name>.jpg, labels/<name>.png (class ids "
          "0-10) and landmarks/<name>.txt (106, then 106 'x y' lines)")


def release_root(data_dir: str) -> str:
    """The folder holding ``train/``, ``val/``, ``test/``: ``data_dir`` itself or its ``LaPa/`` subfolder."""
    nested = os.path.join(data_dir, "LaPa")
    if not os.path.isdir(os.path.join(data_dir, "train")) and os.path.isdir(os.path.join(nested, "train")):
        return nested
    return data_dir


def read_landmarks(path: str) -> list[list[float]] | DatasetFormatError:
    """A LaPa landmark file -> 106 [x, y] pairs, or the error naming the file and line."""
    points = []
    with open(path, encoding="utf-8") as handle:
        lines = [(number, line.split()) for number, line in enumerate(handle, 1)]
    lines = [(number, fields) for number, fields in lines if fields]
    if not lines:
        return DatasetFormatError("empty landmark file", path)
    number, fields = lines[0]
    if len(fields) != 1 or not fields[0].isdigit():
        return DatasetFormatError(f"first line should be the point count {POINT_COUNT}, got {' '.join(fields)!r}",
                                  path, number)
    if int(fields[0]) != POINT_COUNT:
        return DatasetFormatError(f"declares {fields[0]} points; LaPa landmarks have {POINT_COUNT}", path, number)
    for number, fields in lines[1:]:
        try:
            x, y = (float(value) for value in fields)
        except ValueError:
            return DatasetFormatError(f"expected 'x y', got {' '.join(fields)!r}", path, number)
        if not (math.isfinite(x) and math.isfinite(y)):
            return DatasetFormatError(f"non-finite point {' '.join(fields)!r}", path, number)
        points.append([x, y])
    if len(points) != POINT_COUNT:
        return DatasetFormatError(f"has {len(points)} points after its count line; expected {POINT_COUNT}", path)
    return points


def _names(folder: str) -> set[str]:
    """Sample names in one split folder: stems of the photos, labels and landmark files."""
    names = set()
    for part, extension in PARTS:
        directory = os.path.join(folder, part)
        if os.path.isdir(directory):
            names.update(entry.name[:-len(extension)] for entry in os.scandir(directory)
                         if entry.name.endswith(extension))
    return names


def _check_label(label_path: str, image_path: str) -> DatasetFormatError | None:
    """The label must be 8-bit single-channel and the photo's size (file headers only, no decoding)."""
    try:
        with PIL.Image.open(image_path) as image:
            image_size = image.size
    except (OSError, SyntaxError, ValueError) as error:
        return DatasetFormatError(f"image cannot be read ({type(error).__name__}: {error})", image_path)
    try:
        with PIL.Image.open(label_path) as label:
            label_mode, label_size = label.mode, label.size
    except (OSError, SyntaxError, ValueError) as error:
        return DatasetFormatError(f"label cannot be read ({type(error).__name__}: {error})", label_path)
    if label_mode != "L":
        return DatasetFormatError(f"label is mode {label_mode!r}; expected single-channel 8-bit class ids ('L')",
                                  label_path)
    if label_size != image_size:
        return DatasetFormatError(f"label is {label_size[0]}x{label_size[1]} but its image is "
                                  f"{image_size[0]}x{image_size[1]}", label_path)
    return None


def lapa_rows(data_dir: str, split: str) -> Iterator[dict | DatasetFormatError]:
    """Rows of one split, folder by folder, names in sorted order."""
    root = release_root(data_dir)
    for folder_name in FOLDERS[split]:
        folder = os.path.join(root, folder_name)
        for part, _ in PARTS:
            if not os.path.isdir(os.path.join(folder, part)):
                raise DatasetFormatError(f"missing; expected {LAYOUT}", os.path.join(folder, part))
        for name in sorted(_names(folder)):
            image_path, label_path, landmark_path = (os.path.join(folder, part, name + extension)
                                                     for part, extension in PARTS)
            missing = [path for path in (image_path, label_path, landmark_path) if not os.path.exists(path)]
            if missing:
                present = [path for path in (image_path, label_path, landmark_path) if path not in missing]
                yield DatasetFormatError(f"missing (sample {name!r} has {', '.join(present)})", missing[0])
                continue
            points = read_landmarks(landmark_path)
            if isinstance(points, DatasetFormatError):
                yield points
                continue
            problem = _check_label(label_path, image_path)
            if problem is not None:
                yield problem
                continue
            yield {"image": image_path, "face_box": None,
                   "face_keypoints": [points[index] for index in KEYPOINT_INDICES],
                   "mask": label_path, "landmarks_106": points}


def lapa_features():
    from datasets import Array2D

    return task_features(make_task("parsing_lapa"), extra={"landmarks_106": Array2D((POINT_COUNT, 2), "float32")})


register_native_dataset(NativeDataset(
    name="lapa",
    task="parsing_lapa",
    splits=tuple(FOLDERS),
    rows=lapa_rows,
    features=lapa_features,
    layout=LAYOUT,
    protocol=("Splits are the release's folders (val -> validation); trainval = train + val, Faceptor's training "
              "set; the paper tests on test at each photo's own size. Masks keep the native ids 0-10 (LAPA_LABELS "
              "order). face_keypoints = landmarks [104, 105, 54, 84, 90] as released: the ground-truth 5-point "
              "alignment of FaRL's protocol, for train and test alike."),
))
