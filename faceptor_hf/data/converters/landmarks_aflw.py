"""AFLW-19, 19 points (docs/datasets-and-evaluation.md §4.4): CUHK's ``AFLWinfo_release.mat`` over the AFLW ``flickr``
images.

The .mat file (MATLAB v5, read with scipy) holds, per face: ``bbox`` (left, right, top, bottom), ``data`` (x1..x19
then y1..y19), ``mask_new`` (19 visibility flags), ``nameList`` (image path relative to ``flickr/``) and ``ra``, a
1-based random permutation of all faces. Splits follow it: train = the first 20,000 faces of ``ra``, test = the rest
(the "full" test set, 4,386 faces, in ``ra`` order), test_frontal = the test faces whose 19 points are all visible.

The box is the stored one, reordered to (left, top, right, bottom) and used as is: no squaring or padding, so the
crop stretches a non-square box (docs/datasets-and-evaluation.md §2.1). Landmarks are the stored values (no offset, as
the official loader); visibility is kept as a column though neither loss nor metric uses it.
"""

from __future__ import annotations

import os

import numpy as np
from datasets import List, Value

from ...configuration_faceptor import make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

NUM_POINTS = 19
MAT_FILE = "AFLWinfo_release.mat"
TRAIN_FACES = 20000
SPLITS = ("train", "test", "test_frontal")
IMAGE_FOLDERS = ("data/flickr", "flickr")
# 0-based point groups whose centroids' distance normalizes NME (docs/datasets-and-evaluation.md §5.1); AFLW's reported
# normalizer is the box diagonal instead (PROTOCOL).
NME_NORMALIZERS = {"inter_ocular": ((6,), (11,)), "inter_pupil": ((7,), (10,))}

LAYOUT = ("data_dir holds AFLWinfo_release.mat and the AFLW images as data/flickr/{0,2,3}/imageXXXXX.jpg (or "
          "flickr/{0,2,3}/... directly in data_dir)")
PROTOCOL = (
    "Splits: train = ra[:20000] (0-based ra), test = ra[20000:] (full, 4,386), test_frontal = test faces with all "
    "19 mask_new flags set. face_box = the stored bbox (left, top, right, bottom), not squared; the reader zooms "
    "1.0. landmarks = stored values (no offset). NME normalizers: diag = sqrt(w^2 + h^2) of face_box (reported by "
    "the paper, on test), box = sqrt(w * h) of face_box (AUC and FR at 0.07 use it), and (0-based points) "
    "inter_ocular = |p6 - p11|, inter_pupil = |p7 - p10|. All 19 points are scored whatever their visibility. "
    "Columns: visible (mask_new), aflw_index (0-based row in the .mat).")


def _read_info(path: str) -> dict:
    """The .mat variables as numpy arrays, shape-checked; raises ``DatasetFormatError`` for an unusable file."""
    if not os.path.isfile(path):
        raise DatasetFormatError(f"{MAT_FILE} not found; expected {LAYOUT}", path)
    try:
        import scipy.io
    except ImportError as error:
        raise ImportError(f"reading {MAT_FILE} needs scipy (pip install scipy): {error}") from error
    names = ("bbox", "data", "mask_new", "nameList", "ra")
    try:
        contents = scipy.io.loadmat(path, variable_names=list(names))
    except (ValueError, NotImplementedError, OSError) as error:
        raise DatasetFormatError(f"not a readable MATLAB v5 file ({error})", path) from error
    missing = [name for name in names if name not in contents]
    if missing:
        raise DatasetFormatError(f"variables {missing} missing", path)
    count = contents["bbox"].shape[0]
    expected = {"bbox": (count, 4), "data": (count, 2 * NUM_POINTS), "mask_new": (count, NUM_POINTS)}
    for name, shape in expected.items():
        if contents[name].shape != shape:
            raise DatasetFormatError(f"{name} has shape {contents[name].shape}, expected {shape}", path)
    names_list, ra = contents["nameList"].ravel(), contents["ra"].ravel()
    if len(names_list) != count:
        raise DatasetFormatError(f"nameList has {len(names_list)} entries for {count} faces", path)
    order = ra.astype(np.int64) - 1
    if len(order) != count or not np.array_equal(np.sort(order), np.arange(count)):
        raise DatasetFormatError(f"ra must be a 1-based permutation of the {count} faces", path)
    return {"bbox": contents["bbox"].astype(np.float64), "data": contents["data"].astype(np.float64),
            "visible": contents["mask_new"] == 1, "names": names_list, "order": order}


def _name(entry) -> str | None:
    """A nameList cell (a char array, possibly nested in object arrays) as a string, or None if it is not one."""
    while isinstance(entry, np.ndarray) and entry.size == 1 and entry.dtype == object:
        entry = entry.item()
    if isinstance(entry, np.ndarray) and entry.dtype.kind == "U" and entry.size == 1:
        entry = entry.item()
    return entry if isinstance(entry, str) and entry else None


def iter_aflw_rows(data_dir: str, split: str):
    """Rows of one AFLW-19 split in the common schema, in ``ra`` order."""
    path = os.path.join(data_dir, MAT_FILE)
    info = _read_info(path)
    image_root = next((os.path.join(data_dir, folder) for folder in IMAGE_FOLDERS
                       if os.path.isdir(os.path.join(data_dir, folder))), None)
    if image_root is None:
        raise DatasetFormatError(f"no image folder data/flickr/ or flickr/; expected {LAYOUT}", data_dir)
    order = info["order"][:TRAIN_FACES] if split == "train" else info["order"][TRAIN_FACES:]
    for index in order:
        if split == "test_frontal" and not info["visible"][index].all():
            continue
        record = f"face {index + 1} (row {index + 1} of bbox/data/nameList)"
        name = _name(info["names"][index])
        if name is None:
            yield DatasetFormatError(f"nameList entry is not a file name: {info['names'][index]!r}", path, record)
            continue
        image = os.path.join(image_root, name)
        if not os.path.isfile(image):
            yield DatasetFormatError(f"image {image!r} named here does not exist", path, record)
            continue
        left, right, top, bottom = info["bbox"][index]
        coordinates = info["data"][index]
        if not (np.all(np.isfinite(coordinates)) and right > left and bottom > top):
            yield DatasetFormatError(f"box (left, right, top, bottom) = {[left, right, top, bottom]} must have area "
                                     "and every value must be finite", path, record)
            continue
        yield {"image": image, "face_box": [float(left), float(top), float(right), float(bottom)],
               "face_keypoints": None,
               "landmarks": [[float(coordinates[k]), float(coordinates[NUM_POINTS + k])] for k in range(NUM_POINTS)],
               "visible": [bool(flag) for flag in info["visible"][index]], "aflw_index": int(index)}


def _features():
    return task_features(make_task("align_aflw"),
                         extra={"visible": List(Value("bool"), length=NUM_POINTS), "aflw_index": Value("int64")})


register_native_dataset(NativeDataset(
    name="aflw", task="align_aflw", splits=SPLITS, rows=iter_aflw_rows, features=_features, layout=LAYOUT,
    protocol=PROTOCOL))
