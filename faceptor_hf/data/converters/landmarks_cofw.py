"""COFW, 29 points (docs/datasets-and-evaluation.md §4.3): images and annotations inside MATLAB files.

The protocol's files are HRNet's color ``COFW_train_color.mat`` / ``COFW_test_color.mat`` (MATLAB v7.3, i.e. HDF5,
read with h5py): ``IsTr`` / ``IsT`` are cell arrays of uint8 images (H x W or H x W x 3, already RGB), ``phisTr`` /
``phisT`` are N x 87 rows of 29 x values, 29 y values and 29 occlusion flags. Caltech's original grayscale
``COFW_train.mat`` / ``COFW_test.mat`` (same variables) are read when the color files are absent, with scipy for
pre-v7.3 files; their images differ from the protocol's, so scores on them are not the paper's.

Each image is stored as PNG bytes as the release has it (grayscale stays "L"; readers convert). Landmarks keep the
stored values: docs/datasets-and-evaluation.md §4.3 uses them with no offset (they are 1-based MATLAB values, and the
official protocol trains and scores in that frame). The box is HRNet's, from the ground-truth points for train and test
alike: center ((floor(x_min) + ceil(x_max)) / 2, likewise y), side max(ceil(x_max) - floor(x_min), ceil(y_max) -
floor(y_min)).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
from datasets import List, Value

from ...configuration_faceptor import make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

NUM_POINTS = 29
PHIS_COLUMNS = 3 * NUM_POINTS
SPLITS = ("train", "test")
# Color (protocol) file first, then Caltech's grayscale original.
MAT_FILES = {"train": ("COFW_train_color.mat", "COFW_train.mat"), "test": ("COFW_test_color.mat", "COFW_test.mat")}
VARIABLES = {"train": ("IsTr", "phisTr"), "test": ("IsT", "phisT")}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# 0-based point groups whose centroids' distance normalizes NME (docs/datasets-and-evaluation.md §5.1).
NME_NORMALIZERS = {"inter_ocular": ((8,), (9,))}

LAYOUT = "data_dir holds COFW_train_color.mat and COFW_test_color.mat (HRNet's color MATLAB v7.3 files)"
PROTOCOL = (
    "Splits: train 1,345 (COFW_train_color.mat), test 507 (COFW_test_color.mat). landmarks = the stored values (no "
    "offset); face_box = HRNet's square about the ground-truth points (train and test); the reader zooms 0.8. NME "
    "normalizer (0-based points): inter_ocular = |p8 - p9| (HRNet's 29-point convention; outer eye corners), with "
    "FR and AUC at 0.1. Column occluded: the release's 29 occlusion flags (not used by the official loss or metric).")


def _mat_path(data_dir: str, split: str) -> str:
    for name in MAT_FILES[split]:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise DatasetFormatError(f"no {' or '.join(MAT_FILES[split])}; expected {LAYOUT}", data_dir)


def _is_hdf5(path: str) -> bool:
    """Whether ``path`` is HDF5 (MATLAB v7.3): the HDF5 signature sits at byte 0, 512, 1024, 2048, ...; MATLAB
    puts its 128-byte text header in a 512-byte user block before it."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            handle.seek(offset)
            if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _missing_dependency(module: str, error: ImportError) -> ImportError:
    return ImportError(f"reading COFW's .mat files needs {module} (pip install {module}): {error}")


def _records(path: str, image_key: str, phis_key: str):
    """(index, image array as H x W [x 3], phis row of 87) per face; raises for an unusable file."""
    if _is_hdf5(path):
        try:
            import h5py
        except ImportError as error:
            raise _missing_dependency("h5py", error) from error
        with h5py.File(path, "r") as handle:
            missing = [key for key in (image_key, phis_key) if key not in handle]
            if missing:
                raise DatasetFormatError(f"variables {missing} missing (has {sorted(handle.keys())})", path)
            cells = handle[image_key][()].ravel()
            # MATLAB writes column-major arrays: h5py sees every array with its axes reversed.
            phis = _checked_phis(np.asarray(handle[phis_key][()], dtype=np.float64).T, len(cells), path, phis_key)
            for index, reference in enumerate(cells):
                yield index, np.asarray(handle[reference][()]).T, phis[index]
        return
    try:
        import scipy.io
    except ImportError as error:
        raise _missing_dependency("scipy", error) from error
    try:
        contents = scipy.io.loadmat(path, variable_names=[image_key, phis_key])
    except (ValueError, NotImplementedError, OSError) as error:
        raise DatasetFormatError(f"not a readable MATLAB file ({error})", path) from error
    missing = [key for key in (image_key, phis_key) if key not in contents]
    if missing:
        raise DatasetFormatError(f"variables {missing} missing", path)
    cells = contents[image_key].ravel()
    phis = _checked_phis(np.asarray(contents[phis_key], dtype=np.float64), len(cells), path, phis_key)
    for index, image in enumerate(cells):
        yield index, np.asarray(image), phis[index]


def _checked_phis(phis: np.ndarray, count: int, path: str, key: str) -> np.ndarray:
    if phis.shape != (count, PHIS_COLUMNS):
        raise DatasetFormatError(f"{key} has shape {phis.shape}, expected ({count}, {PHIS_COLUMNS}): one row of 29 x, "
                                 "29 y and 29 occlusion values per image", path)
    return phis


def _png_bytes(image: np.ndarray) -> bytes:
    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def cofw_box(points: list[list[float]]) -> list[float]:
    """HRNet's COFW box: the square about the integer-rounded extent of the points (module docstring)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    left, right, top, bottom = math.floor(min(xs)), math.ceil(max(xs)), math.floor(min(ys)), math.ceil(max(ys))
    center_x, center_y = (left + right) / 2.0, (top + bottom) / 2.0
    half = max(right - left, bottom - top) / 2.0
    return [center_x - half, center_y - half, center_x + half, center_y + half]


def iter_cofw_rows(data_dir: str, split: str):
    """Rows of one COFW split in the common schema; images are PNG bytes named ``cofw_<split>_<n>.png``."""
    path = _mat_path(data_dir, split)
    image_key, phis_key = VARIABLES[split]
    for index, image, phis in _records(path, image_key, phis_key):
        record = f"{image_key}{{{index + 1}}}"
        if image.dtype != np.uint8 or image.size == 0 or not (
                image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            yield DatasetFormatError(f"expected a non-empty uint8 H x W or H x W x 3 image, got {image.dtype} "
                                     f"{image.shape}", path, record)
            continue
        if not np.all(np.isfinite(phis[:2 * NUM_POINTS])):
            yield DatasetFormatError("landmark values must be finite", path, f"{phis_key}({index + 1},:)")
            continue
        points = [[float(phis[k]), float(phis[NUM_POINTS + k])] for k in range(NUM_POINTS)]
        yield {"image": {"bytes": _png_bytes(image), "path": f"cofw_{split}_{index + 1:04d}.png"},
               "face_box": cofw_box(points), "face_keypoints": None, "landmarks": points,
               "occluded": [bool(flag != 0) for flag in phis[2 * NUM_POINTS:]]}


def _features():
    return task_features(make_task("align_cofw"), extra={"occluded": List(Value("bool"), length=NUM_POINTS)})


register_native_dataset(NativeDataset(
    name="cofw", task="align_cofw", splits=SPLITS, rows=iter_cofw_rows, features=_features, layout=LAYOUT,
    protocol=PROTOCOL))
