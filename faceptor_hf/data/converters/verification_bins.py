"""Face-verification sets LFW, CFP-FP, AgeDB-30, CALFW, CPLFW (docs/datasets-and-evaluation.md §4.14): insightface
``<name>.bin`` files.

Each file is a pickle of the 2-tuple ``(bins, issame_list)``: ``bins`` a list of 2N encoded images (JPEG bytes,
ArcFace-aligned 112x112), ``issame_list`` N bools; pair i is images 2i and 2i+1. insightface wrote them from
Python 2 (images as ``str``), so they are read with ``encoding="bytes"`` — and, because a pickle can run code, by
``faceptor_hf.data.safe_pickle``, which accepts only bytes, lists, tuples and bools and refuses anything else
(a global, a call, a str) before building it.

Rows (``verification_features()``): ``image_a``, ``image_b`` (the pair's JPEG bytes; ``path`` ``<file>:<index>``
names the image in the file, it is not a file), ``is_same``, ``fold`` = i // (N / 10), computed exactly as
10·i // N: the 10 contiguous folds of the official protocol (docs/datasets-and-evaluation.md §5.4; sklearn ``KFold(10)``
gives the same blocks when N is a multiple of 10, as it is for all five sets). One dataset per file, split ``test``.

The whole file is one pickle, so it is loaded at once (the largest, CFP-FP's 14,000 images, is about 100 MB).
A file that is not such a tuple, or whose image and pair counts disagree, stops the conversion; an image that
does not decode is a bad sample (found by ``load_native``'s image check, named ``<file>:<index>``).
"""

from __future__ import annotations

import functools
import os
from typing import Iterator

from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..safe_pickle import load_data_pickle
from ..schema import verification_features

FOLDS = 10
# name -> (file name in insightface's release, dataset, pair count of the official file)
VERIFICATION_SETS = {
    "lfw": ("lfw.bin", "LFW", 6000),
    "cfp_fp": ("cfp_fp.bin", "CFP-FP (frontal-profile)", 7000),
    "agedb_30": ("agedb_30.bin", "AgeDB-30", 6000),
    "calfw": ("calfw.bin", "CALFW", 6000),
    "cplfw": ("cplfw.bin", "CPLFW", 6000),
}


def read_verification_bin(path: str) -> tuple[list, list]:
    """``(images, is_same)`` from an insightface ``.bin`` file, checked: ``DatasetFormatError`` naming the file and
    what was found otherwise."""
    content = load_data_pickle(path)
    if not (isinstance(content, tuple) and len(content) == 2 and all(isinstance(part, list) for part in content)):
        found = (f"a tuple of {len(content)} items" if isinstance(content, tuple) else f"a {type(content).__name__}")
        raise DatasetFormatError(f"expected a pickled tuple (list of image bytes, list of is-same bools), found "
                                 f"{found}", path)
    images, is_same = content
    for index, image in enumerate(images):
        if not isinstance(image, bytes):
            raise DatasetFormatError(f"image {index} of the image list is a {type(image).__name__}, expected "
                                     "encoded image bytes", path)
    for index, flag in enumerate(is_same):
        if not isinstance(flag, bool):
            raise DatasetFormatError(f"pair {index} of the is-same list is a {type(flag).__name__}, expected a bool",
                                     path)
    if not is_same or len(images) != 2 * len(is_same):
        raise DatasetFormatError(f"{len(images)} images for {len(is_same)} pairs; expected 2 images per pair and at "
                                 "least one pair", path)
    return images, is_same


def verification_rows(name: str, data_dir: str, split: str) -> Iterator[dict]:
    file_name = VERIFICATION_SETS[name][0]
    path = os.path.join(data_dir, file_name)
    if not os.path.isfile(path):
        raise DatasetFormatError(f"missing {file_name}; expected: {_layout(name)}", path)
    images, is_same = read_verification_bin(path)
    pairs = len(is_same)
    for pair in range(pairs):
        first, second = 2 * pair, 2 * pair + 1
        yield {"image_a": {"bytes": images[first], "path": f"{path}:{first}"},
               "image_b": {"bytes": images[second], "path": f"{path}:{second}"},
               "is_same": is_same[pair], "fold": FOLDS * pair // pairs}


def _layout(name: str) -> str:
    return (f"data_dir/ holds {VERIFICATION_SETS[name][0]} (insightface's verification pickle, as shipped beside "
            "train.rec in ms1m-retinaface-t1)")


for _name, (_file, _title, _pairs) in VERIFICATION_SETS.items():
    register_native_dataset(NativeDataset(
        name=_name,
        task=None,
        splits=("test",),
        rows=functools.partial(verification_rows, _name),
        features=verification_features,
        layout=_layout(_name),
        protocol=(f"{_title}: the official {_pairs:,} pairs in file order (pair i = images 2i, 2i+1), fold = "
                  "i // (pairs / 10) (10 contiguous folds); images are the file's ArcFace-aligned 112x112 JPEGs. "
                  "Scored by 10-fold verification accuracy with flip-sum embeddings "
                  "(docs/datasets-and-evaluation.md §5.4)."),
    ))
