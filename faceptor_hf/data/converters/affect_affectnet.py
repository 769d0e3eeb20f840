"""AffectNet, 7 basic expressions (docs/datasets-and-evaluation.md §4.9), from the native release or from Faceptor's
label lists.

Two layouts of ``data_dir`` are read (the native one wins where both are present):

* native: ``Manually_Annotated_Images/<subdir>/<file>`` and ``training.csv`` / ``validation.csv`` (in ``data_dir``
  or in ``Manually_Annotated_file_lists/``), columns subDirectory_filePath, face_x, face_y, face_width,
  face_height, facial_landmarks (68 ``x;y`` pairs joined by ``;``), expression, valence, arousal; the header line
  is optional.
* Faceptor's: ``data/<name>`` and ``label/train.txt`` / ``label/test.txt``, lines ``<name> <expression code>``.

Splits: ``train`` = training.csv / train.txt; ``test`` = the official validation set (validation.csv /
test.txt), as in the paper. Only codes 0-6 are kept; contempt (7), none (8), uncertain (9) and no-face (10) are
left out by the protocol, not reported as bad. Codes 0-6 already are the task's label order (``EXPRESSION_LABELS``
is AffectNet's order).

Alignment (a documented gap, docs/datasets-and-evaluation.md §3 and §9): the native images are face photos with margin,
not aligned crops, so ``face_keypoints`` are the 5 points of the release's 68-point annotation (eye centers = means of
points 36-41 and 42-47, nose tip 30, mouth corners 48 and 54, 0-based iBUG numbering; image-left first) and the reader
aligns them to the 112-px ArcFace template, the alignment docs/datasets-and-evaluation.md §3 recommends; ``face_box`` is
the annotated face rectangle. Faceptor's ``data/`` copies are its own preprocessed crops and are used as they are (no
box, no points).
"""

from __future__ import annotations

import csv
import os

from datasets import Array2D, Value

from ...configuration_faceptor import EXPRESSION_LABELS, make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

TASK = "affect_affectnet"
# Native expression codes 0-10; the first seven are the basic expressions in the task's label order.
AFFECTNET_CODES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt", "none",
                   "uncertain", "no-face")
BASIC_CODE_COUNT = len(EXPRESSION_LABELS)
CSV_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
               "expression", "valence", "arousal")
NATIVE_LISTS = {"train": "training.csv", "test": "validation.csv"}
FACEPTOR_LISTS = {"train": "train.txt", "test": "test.txt"}
LAYOUT = ("data_dir/ holds either the native release — Manually_Annotated_Images/<subdir>/<file> and "
          "training.csv, validation.csv (in data_dir/ or data_dir/Manually_Annotated_file_lists/) — or Faceptor's "
          "layout — data/<name> and label/train.txt, label/test.txt ('<name> <code>' lines)")


def keypoints_from_68(points: list[list[float]]) -> list[list[float]]:
    """Five alignment points (5, 2) from a 68-point iBUG markup (68, 2): eye centers, nose tip, mouth corners."""
    def mean(indices):
        return [sum(points[i][axis] for i in indices) / len(indices) for axis in (0, 1)]

    return [mean(range(36, 42)), mean(range(42, 48)), list(points[30]), list(points[48]), list(points[54])]


def _expression_code(text: str, path: str, line: int):
    """The native code as an int, or a DatasetFormatError for a non-integer or a code outside 0-10."""
    try:
        code = int(text)
    except ValueError:
        return DatasetFormatError(f"expression code {text!r} is not an integer", path, line)
    if not 0 <= code < len(AFFECTNET_CODES):
        return DatasetFormatError(f"expression code {code} is outside the native codes 0-{len(AFFECTNET_CODES) - 1}",
                                  path, line)
    return code


def _native_row(fields: list[str], images_dir: str, path: str, line: int):
    """One training/validation.csv record -> schema row, None (a non-basic expression) or DatasetFormatError."""
    if len(fields) != len(CSV_COLUMNS):
        return DatasetFormatError(f"expected {len(CSV_COLUMNS)} comma-separated fields ({', '.join(CSV_COLUMNS)}), "
                                  f"got {len(fields)}", path, line)
    name, x, y, width, height, landmarks, expression, valence, arousal = (field.strip() for field in fields)
    code = _expression_code(expression, path, line)
    if isinstance(code, Exception):
        return code
    if code >= BASIC_CODE_COUNT:
        return None
    try:
        x, y, width, height, valence, arousal = map(float, (x, y, width, height, valence, arousal))
    except ValueError:
        return DatasetFormatError("face_x, face_y, face_width, face_height, valence and arousal must be numbers",
                                  path, line)
    if width <= 0 or height <= 0:
        return DatasetFormatError(f"face box has a non-positive size {width} x {height}", path, line)
    try:
        values = [float(value) for value in landmarks.split(";")]
    except ValueError:
        return DatasetFormatError("facial_landmarks must be numbers joined by ';'", path, line)
    if len(values) != 136:
        return DatasetFormatError(f"facial_landmarks has {len(values)} values, expected 136 (68 x;y pairs)",
                                  path, line)
    image = os.path.join(images_dir, name)
    if not os.path.isfile(image):
        return DatasetFormatError(f"image {image!r} does not exist", path, line)
    points = [values[i:i + 2] for i in range(0, 136, 2)]
    return {"image": image, "face_box": [x, y, x + width, y + height], "face_keypoints": keypoints_from_68(points),
            "expression": code, "image_name": name, "native_code": code, "valence": valence, "arousal": arousal,
            "landmarks68": points}


def _native_rows(list_path: str, images_dir: str):
    with open(list_path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        for fields in reader:
            line = reader.line_num
            if not fields or not "".join(fields).strip():
                continue
            if line == 1 and fields[0].strip() == CSV_COLUMNS[0]:
                continue  # the optional header
            row = _native_row(fields, images_dir, list_path, line)
            if row is not None:
                yield row


def _faceptor_rows(list_path: str, images_dir: str):
    with open(list_path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            fields = text.rsplit(maxsplit=1)  # names may hold spaces; the code is the last field
            if len(fields) != 2:
                yield DatasetFormatError(f"expected '<name> <expression code>', got {text.strip()!r}", list_path, line)
                continue
            name, expression = fields[0].strip(), fields[1]
            code = _expression_code(expression, list_path, line)
            if isinstance(code, Exception):
                yield code
                continue
            if code >= BASIC_CODE_COUNT:
                continue
            image = os.path.join(images_dir, name)
            if not os.path.isfile(image):
                yield DatasetFormatError(f"image {image!r} does not exist", list_path, line)
                continue
            yield {"image": image, "face_box": None, "face_keypoints": None, "expression": code, "image_name": name,
                   "native_code": code, "valence": None, "arousal": None, "landmarks68": None}


def _first_file(*candidates: str) -> str | None:
    return next((path for path in candidates if os.path.isfile(path)), None)


def iter_affectnet_rows(data_dir: str, split: str):
    """Rows of one split (``train`` or ``test``), or DatasetFormatError per unusable sample."""
    native_list = _first_file(os.path.join(data_dir, NATIVE_LISTS[split]),
                              os.path.join(data_dir, "Manually_Annotated_file_lists", NATIVE_LISTS[split]))
    native_images = os.path.join(data_dir, "Manually_Annotated_Images")
    if native_list is not None and os.path.isdir(native_images):
        yield from _native_rows(native_list, native_images)
        return
    faceptor_list = os.path.join(data_dir, "label", FACEPTOR_LISTS[split])
    if os.path.isfile(faceptor_list):
        yield from _faceptor_rows(faceptor_list, os.path.join(data_dir, "data"))
        return
    raise DatasetFormatError(f"neither {NATIVE_LISTS[split]} with Manually_Annotated_Images/ nor "
                             f"label/{FACEPTOR_LISTS[split]} was found; expected: {LAYOUT}", data_dir)


def affectnet_features():
    return task_features(make_task(TASK), extra={
        "image_name": Value("string"), "native_code": Value("int8"), "valence": Value("float32"),
        "arousal": Value("float32"), "landmarks68": Array2D((68, 2), "float32")})


register_native_dataset(NativeDataset(
    name="affectnet",
    task=TASK,
    splits=("train", "test"),
    rows=iter_affectnet_rows,
    features=affectnet_features,
    layout=LAYOUT,
    protocol=("train = training.csv (or label/train.txt); test = the official validation set (validation.csv or "
              "label/test.txt). Codes 0-6 kept (already the task's label order); contempt, none, uncertain and "
              "no-face (7-10) left out. Native images: face_keypoints = 5 points from the 68-point annotation (eye "
              "centers of 36-41/42-47, nose 30, mouth 48/54) for the ArcFace 112 alignment "
              "docs/datasets-and-evaluation.md §3 recommends (its 112-px alignment is a gap), face_box = the "
              "annotated face rectangle. Faceptor's data/ copies: used as they are. Extra columns: image_name, "
              "native_code, valence, arousal, landmarks68 (native only)."),
    # The CSV's landmarks and face rectangles refer to the raw pixels; the official loader opens with PIL.
    exif_orientation=False,
))
