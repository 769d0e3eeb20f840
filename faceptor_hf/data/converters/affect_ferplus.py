"""FERPlus, 7 expressions (docs/datasets-and-evaluation.md §4.11), from FER2013's pixel CSV and FERPlus's vote CSV.

``data_dir`` holds ``fer2013.csv`` (Kaggle's FER2013: emotion, pixels, Usage; also found in ``fer2013/``) and
``fer2013new.csv`` (Microsoft's FERPlus: Usage, Image name, then 10 vote counts: neutral, happiness, surprise,
sadness, anger, disgust, fear, contempt, unknown, NF). Record i of one file is record i of the other, as in
FERPlus's own generation script; a record whose image name is blank is one FERPlus removed and is left out.

Splits (docs/datasets-and-evaluation.md §4.11: train = train.txt + val.txt, test = test.txt, i.e. FERPlus's FER2013Train
+ FER2013Valid and FER2013Test): ``train`` = Usage Training + PublicTest, ``validation`` = PublicTest alone (contained
in ``train``; offered for monitoring), ``test`` = PrivateTest.

Label ("majority" rule of the FERPlus reference code, docs/datasets-and-evaluation.md §4.11): votes of at most 1 are
zeroed (outliers); the label is the emotion with the most remaining votes if it has more than half of the remaining
total (unknown and NF included), else the image is unknown; unknown and NF images are left out, and so is contempt (the
task has no contempt class; docs/datasets-and-evaluation.md §4.11 marks this [inferred]). The same rule filters every
split (whether Faceptor filtered val is a gap (docs/datasets-and-evaluation.md §9)). FERPlus labels are remapped by name
to the task's order: 0->0, 1->1, 2->3, 3->2, 4->6, 5->5, 6->4.

Images: the 48x48 grayscale faces, decoded from the pixel strings and stored as PNG bytes, used as they are (they
are FER2013's aligned crops; no box, no points).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os

import numpy as np
from datasets import List, Value

from ...configuration_faceptor import EXPRESSION_LABELS, make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

TASK = "affect_ferplus"
FER2013_COLUMNS = ["emotion", "pixels", "Usage"]
VOTE_NAMES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
FERPLUS_COLUMNS = ["Usage", "Image name", *VOTE_NAMES]
FERPLUS_TO_TASK_NAME = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
                        "anger": "anger", "disgust": "disgust", "fear": "fear"}
FERPLUS_TO_TASK = {VOTE_NAMES.index(name): EXPRESSION_LABELS.index(task_name)
                   for name, task_name in FERPLUS_TO_TASK_NAME.items()}
SPLIT_USAGES = {"train": ("Training", "PublicTest"), "validation": ("PublicTest",), "test": ("PrivateTest",)}
IMAGE_SIDE = 48
LAYOUT = "data_dir/ holds fer2013.csv (or fer2013/fer2013.csv) and fer2013new.csv"


def majority_label(votes: list[int]) -> int | None:
    """FERPlus label index (0-9, ``VOTE_NAMES`` order) by the reference "majority" rule, or None when unknown.

    Votes <= 1 are outliers and are zeroed; the top emotion wins only with more than half of what remains.
    """
    kept = [count if count > 1 else 0 for count in votes]
    top = max(kept)
    if top == 0 or top <= 0.5 * sum(kept):
        return None
    return kept.index(top)


def png_from_pixels(text: str) -> bytes:
    """PNG bytes of a 48x48 grayscale face from FER2013's space-separated pixel string; ValueError if malformed."""
    values = np.array(text.split(), dtype=np.int64)
    if values.size != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"pixels has {values.size} values, expected {IMAGE_SIDE * IMAGE_SIDE} (48 x 48)")
    if values.min() < 0 or values.max() > 255:
        raise ValueError("pixels holds values outside 0-255")
    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.fromarray(values.astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def _checked_reader(files: contextlib.ExitStack, path: str, columns: list[str]):
    """A csv reader of ``path`` (closed with ``files``) past its header, which must be ``columns``."""
    reader = csv.reader(files.enter_context(open(path, encoding="utf-8-sig", newline="")))
    header = [name.strip() for name in next(reader, [])]
    if header != columns:
        raise DatasetFormatError(f"header is {header}, expected {columns}", path, 1)
    return reader


def iter_ferplus_rows(data_dir: str, split: str):
    """Rows of one split, or DatasetFormatError per unusable record (named by fer2013.csv / fer2013new.csv line)."""
    fer_path = next((path for path in (os.path.join(data_dir, "fer2013.csv"),
                                       os.path.join(data_dir, "fer2013", "fer2013.csv")) if os.path.isfile(path)), None)
    plus_path = os.path.join(data_dir, "fer2013new.csv")
    for path, name in ((fer_path, "fer2013.csv"), (plus_path, "fer2013new.csv")):
        if path is None or not os.path.isfile(path):
            raise DatasetFormatError(f"{name} is missing; expected: {LAYOUT}", data_dir)
    usages = SPLIT_USAGES[split]
    with contextlib.ExitStack() as files:
        fer_reader = _checked_reader(files, fer_path, FER2013_COLUMNS)
        plus_reader = _checked_reader(files, plus_path, FERPLUS_COLUMNS)
        for plus_fields in plus_reader:
            fer_fields = next(fer_reader, None)
            if fer_fields is None:
                raise DatasetFormatError(f"has more records than {fer_path} (which ends at line "
                                         f"{fer_reader.line_num}); the files must pair record by record",
                                         plus_path, plus_reader.line_num)
            fer_line, plus_line = fer_reader.line_num, plus_reader.line_num
            if len(plus_fields) != len(FERPLUS_COLUMNS):
                yield DatasetFormatError(f"expected {len(FERPLUS_COLUMNS)} fields, got {len(plus_fields)}",
                                         plus_path, plus_line)
                continue
            if len(fer_fields) != len(FER2013_COLUMNS):
                yield DatasetFormatError(f"expected {len(FER2013_COLUMNS)} fields, got {len(fer_fields)}",
                                         fer_path, fer_line)
                continue
            usage, image_name = plus_fields[0].strip(), plus_fields[1].strip()
            if usage != fer_fields[2].strip():
                yield DatasetFormatError(f"Usage {usage!r} differs from {fer_fields[2].strip()!r} at "
                                         f"{fer_path}:{fer_line}; the files must pair record by record",
                                         plus_path, plus_line)
                continue
            if usage not in SPLIT_USAGES["train"] + SPLIT_USAGES["test"]:
                yield DatasetFormatError(f"Usage {usage!r} is not Training, PublicTest or PrivateTest",
                                         plus_path, plus_line)
                continue
            if usage not in usages or not image_name:
                continue
            try:
                votes = [int(count) for count in plus_fields[2:]]
            except ValueError:
                yield DatasetFormatError("vote counts must be integers", plus_path, plus_line)
                continue
            if min(votes) < 0:
                yield DatasetFormatError("vote counts must not be negative", plus_path, plus_line)
                continue
            label = majority_label(votes)
            if label not in FERPLUS_TO_TASK:
                continue  # unknown, NF or contempt: left out by the protocol
            try:
                png = png_from_pixels(fer_fields[1])
            except ValueError as error:
                yield DatasetFormatError(f"{error} (image {image_name})", fer_path, fer_line)
                continue
            yield {"image": {"bytes": png, "path": None}, "face_box": None, "face_keypoints": None,
                   "expression": FERPLUS_TO_TASK[label], "image_name": image_name, "usage": usage,
                   "ferplus_label": label, "votes": votes}
        if next(fer_reader, None) is not None:
            raise DatasetFormatError(f"has more records than {plus_path}; the files must pair record by record",
                                     fer_path, fer_reader.line_num)


register_native_dataset(NativeDataset(
    name="ferplus",
    task=TASK,
    splits=tuple(SPLIT_USAGES),
    rows=iter_ferplus_rows,
    features=lambda: task_features(make_task(TASK), extra={
        "image_name": Value("string"), "usage": Value("string"), "ferplus_label": Value("int8"),
        "votes": List(Value("int16"), length=len(VOTE_NAMES))}),
    layout=LAYOUT,
    protocol=("train = FER2013 Usage Training + PublicTest (FERPlus train + val, as docs/datasets-and-evaluation.md "
              "§4.11), validation = PublicTest alone (inside train), test = PrivateTest. Label = FERPlus 'majority' "
              "rule (votes <= 1 zeroed; the top emotion needs > 50% of the rest); unknown, NF and contempt left out "
              "in every split; FERPlus order remapped to the task's (0->0, 1->1, 2->3, 3->2, 4->6, 5->5, 6->4). "
              "Images: the 48x48 grayscale pixels as PNG bytes, used as they are (no box, no points). Extra columns: "
              "image_name, usage, ferplus_label, votes (10, FERPlus order)."),
    # The official loader opens with PIL, without the EXIF orientation (the PNGs written here carry none).
    exif_orientation=False,
))
