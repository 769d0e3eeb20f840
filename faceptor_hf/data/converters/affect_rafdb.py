"""RAF-DB basic, 7 expressions (docs/datasets-and-evaluation.md §4.10), from the native ``basic/`` release or Faceptor's
layout.

Two layouts of ``data_dir`` (the ``basic/`` folder or the folder holding it; the native one wins where both are
present):

* native: ``EmoLabel/list_patition_label.txt`` (sic; lines ``train_00001.jpg 5``) and the 100x100 aligned crops
  ``Image/aligned/<stem>_aligned.jpg``;
* Faceptor's: ``label.txt`` (the same list) and ``data/<name exactly as listed>``.

Split: the name's prefix before the first ``_`` (``train`` 12,271, ``test`` 3,068). Native codes 1-7 (surprise,
fear, disgust, happy, sad, anger, neutral) are remapped by name to the task's label order (``EXPRESSION_LABELS``),
i.e. 1->3, 2->4, 3->5, 4->1, 5->2, 6->6, 7->0 as docs/datasets-and-evaluation.md §4.10 gives it.

Alignment (a documented gap, docs/datasets-and-evaluation.md §3 and §9): the release's aligned square crops are the
likeliest inputs and are used as they are (no box, no points; the reader resizes them to 112).
"""

from __future__ import annotations

import os

from datasets import Value

from ...configuration_faceptor import EXPRESSION_LABELS, make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

TASK = "affect_rafdb"
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}
NATIVE_TO_TASK = {code: EXPRESSION_LABELS.index(name) for code, name in RAFDB_CODES.items()}
NATIVE_LIST = os.path.join("EmoLabel", "list_patition_label.txt")
ALIGNED_DIR = os.path.join("Image", "aligned")
LAYOUT = ("data_dir/ (RAF-DB's basic/ folder, or the folder holding basic/) holds either the native "
          "EmoLabel/list_patition_label.txt and Image/aligned/<stem>_aligned.jpg, or Faceptor's label.txt and "
          "data/<name as listed>")


def _find_release(data_dir: str):
    """(list file, image path of a listed name) for the layout found in ``data_dir``."""
    for root in (data_dir, os.path.join(data_dir, "basic")):
        if os.path.isfile(os.path.join(root, NATIVE_LIST)):
            aligned = os.path.join(root, ALIGNED_DIR)
            return (os.path.join(root, NATIVE_LIST),
                    lambda name: os.path.join(aligned, f"{os.path.splitext(name)[0]}_aligned.jpg"))
    for root in (data_dir, os.path.join(data_dir, "basic")):
        if os.path.isfile(os.path.join(root, "label.txt")):
            return os.path.join(root, "label.txt"), lambda name: os.path.join(root, "data", name)
    raise DatasetFormatError(f"no {NATIVE_LIST} or label.txt found; expected: {LAYOUT}", data_dir)


def iter_rafdb_rows(data_dir: str, split: str):
    """Rows of one split (``train`` or ``test``), or DatasetFormatError per unusable sample."""
    list_path, image_of = _find_release(data_dir)
    with open(list_path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            fields = text.rsplit(maxsplit=1)
            if len(fields) != 2:
                yield DatasetFormatError(f"expected '<name> <code>', got {text.strip()!r}", list_path, line)
                continue
            name, code_text = fields[0].strip(), fields[1]
            prefix = name.split("_", 1)[0]
            if prefix not in ("train", "test"):
                yield DatasetFormatError(f"name {name!r} starts with neither 'train_' nor 'test_'", list_path, line)
                continue
            if prefix != split:
                continue
            try:
                code = int(code_text)
            except ValueError:
                code = None
            if code not in NATIVE_TO_TASK:
                yield DatasetFormatError(f"expression code {code_text!r} is not one of RAF-DB's codes 1-7",
                                         list_path, line)
                continue
            image = image_of(name)
            if not os.path.isfile(image):
                yield DatasetFormatError(f"image {image!r} does not exist", list_path, line)
                continue
            yield {"image": image, "face_box": None, "face_keypoints": None, "expression": NATIVE_TO_TASK[code],
                   "image_name": name, "native_code": code}


register_native_dataset(NativeDataset(
    name="rafdb",
    task=TASK,
    splits=("train", "test"),
    rows=iter_rafdb_rows,
    features=lambda: task_features(make_task(TASK), extra={"image_name": Value("string"),
                                                           "native_code": Value("int8")}),
    layout=LAYOUT,
    protocol=("Split by the name prefix train_/test_. Native codes 1-7 remapped to the task's order: 1->3 surprise, "
              "2->4 fear, 3->5 disgust, 4->1 happy, 5->2 sad, 6->6 anger, 7->0 neutral. Images: the release's 100x100 "
              "aligned crops used as they are (the 112-px alignment is a gap (docs/datasets-and-evaluation.md §9); no "
              "box, no points). Extra columns: image_name, native_code."),
    # The official loader opens the crops with PIL, without the EXIF orientation.
    exif_orientation=False,
))
