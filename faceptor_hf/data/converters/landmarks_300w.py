"""300W, 68 points (docs/datasets-and-evaluation.md §4.1): HRNet's protocol CSVs over the iBUG images, or the iBUG
``.pts`` files alone.

``annotations="hrnet_csv"`` (default, the official protocol): ``face_landmarks_300w_{train, valid_common,
valid_challenge, valid}.csv`` give membership, landmarks and the crop box. As FaRL and Faceptor do
(docs/datasets-and-evaluation.md §S.4), every landmark value and the box center lose 2.0; the box is the square of side
200 * scale about that center (the 0.8 test zoom belongs to the reader, not the box). ``ibug/image_092_01.jpg`` is
read from ``ibug/image_092 _01.jpg`` when only the native name (with its space) exists.

``annotations="native"``: the ``.pts`` files next to the images, with the usual folder partition (train = afw +
helen/trainset + lfpw/trainset, common = helen/testset + lfpw/testset, challenge = ibug). The 1-based ``.pts``
values lose 1.0 (pixel-index coordinates, docs/datasets-and-evaluation.md §1.3) and the box is the square HRNet derives
from the landmark extent. [gap] docs/datasets-and-evaluation.md §4.1 leaves open how the HRNet CSV values relate to the
``.pts`` values (the reason for the official -2.0); if the CSVs store the ``.pts`` values unchanged the two modes differ
by one pixel, so train and evaluate with the same mode.
"""

from __future__ import annotations

import os

from datasets import Value

from ...configuration_faceptor import make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features
from ._landmarks_common import (
    first_existing_folder,
    hrnet_box,
    iter_hrnet_csv,
    landmark_extent_box,
    read_pts,
    shifted,
)

NUM_POINTS = 68
SPLITS = ("train", "test_common", "test_challenge", "test_full")
CSV_FILES = {
    "train": "face_landmarks_300w_train.csv",
    "test_common": "face_landmarks_300w_valid_common.csv",
    "test_challenge": "face_landmarks_300w_valid_challenge.csv",
    "test_full": "face_landmarks_300w_valid.csv",
}
# FaRL's offset on the HRNet CSV values (landmarks and center); docs/datasets-and-evaluation.md §4.1 "Offset quirk".
CSV_OFFSET = 2.0
PTS_OFFSET = 1.0
# The CSVs name this image without the space its native file name has.
NATIVE_IMAGE_NAMES = {"ibug/image_092_01.jpg": "ibug/image_092 _01.jpg"}
NATIVE_PARTS = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "test_common": ("helen/testset", "lfpw/testset"),
    "test_challenge": ("ibug",),
    "test_full": ("helen/testset", "lfpw/testset", "ibug"),
}
IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
# 0-based point groups whose centroids' distance normalizes NME (docs/datasets-and-evaluation.md §5.1); the first is the
# reported one.
NME_NORMALIZERS = {"inter_ocular": ((36,), (45,)), "inter_pupil": (tuple(range(36, 42)), tuple(range(42, 48)))}
ANNOTATION_SOURCES = ("hrnet_csv", "native")

LAYOUT = ("data_dir holds HRNet's face_landmarks_300w_{train,valid_common,valid_challenge,valid}.csv and the iBUG "
          "images under data/ (or directly in data_dir) as data/{afw, helen/{trainset,testset}, lfpw/{trainset,"
          "testset}, ibug}/ with their .pts files; annotations='native' needs only those folders")
PROTOCOL = (
    "Splits: train 3,148 (face_landmarks_300w_train.csv), test_common 554 (valid_common), test_challenge 135 "
    "(valid_challenge), test_full 689 (valid = common + challenge). landmarks = HRNet CSV values - 2.0, face_box = "
    "square of side 200*scale about (center_w - 2, center_h - 2); the reader zooms 0.8 about the crop center. "
    "NME normalizers (0-based points): inter_ocular = |p36 - p45| (reported), inter_pupil = |mean(p36..p41) - "
    "mean(p42..p47)| (logged). Column subset: train / common / challenge. annotations='native' reads the .pts "
    "files instead (values - 1.0, box = square about the landmark extent); see the module docstring for the gap.")


def _image_root(data_dir: str) -> str:
    return first_existing_folder(data_dir, ("data", "")) or data_dir


def _subset(split: str, image: str) -> str:
    if split == "train":
        return "train"
    return "challenge" if image.replace("\\", "/").startswith("ibug/") else "common"


def _row(image: str, box: list[float], points: list[list[float]], subset: str) -> dict:
    return {"image": image, "face_box": box, "face_keypoints": None, "landmarks": points, "subset": subset}


def _csv_rows(data_dir: str, split: str):
    csv_path = os.path.join(data_dir, CSV_FILES[split])
    if not os.path.isfile(csv_path):
        raise DatasetFormatError(f"HRNet protocol CSV not found; expected {LAYOUT} (or pass annotations='native' "
                                 "to read the .pts files)", csv_path)
    image_root = _image_root(data_dir)
    for item in iter_hrnet_csv(csv_path, NUM_POINTS):
        if isinstance(item, DatasetFormatError):
            yield item
            continue
        image = os.path.join(image_root, item.image)
        if not os.path.isfile(image) and item.image in NATIVE_IMAGE_NAMES:
            image = os.path.join(image_root, NATIVE_IMAGE_NAMES[item.image])
        if not os.path.isfile(image):
            yield DatasetFormatError(f"image {image!r} named here does not exist", csv_path, item.line)
            continue
        center = (item.center[0] - CSV_OFFSET, item.center[1] - CSV_OFFSET)
        yield _row(image, hrnet_box(center, item.scale), shifted(item.points, CSV_OFFSET), _subset(split, item.image))


def _native_rows(data_dir: str, split: str):
    image_root = _image_root(data_dir)
    for part in NATIVE_PARTS[split]:
        folder = os.path.join(image_root, part)
        if not os.path.isdir(folder):
            raise DatasetFormatError(f"300W folder {part!r} not found; expected {LAYOUT}", folder)
        for name in sorted(os.listdir(folder)):
            stem, extension = os.path.splitext(name)
            if extension != ".pts":
                continue
            pts_path = os.path.join(folder, name)
            try:
                points = shifted(read_pts(pts_path, NUM_POINTS), PTS_OFFSET)
            except DatasetFormatError as error:
                yield error
                continue
            images = [os.path.join(folder, stem + ext) for ext in IMAGE_EXTENSIONS
                      if os.path.isfile(os.path.join(folder, stem + ext))]
            if not images:
                yield DatasetFormatError(f"no image {stem!r} with extension {'/'.join(IMAGE_EXTENSIONS[:3])} next to "
                                         "this .pts file", pts_path)
                continue
            yield _row(images[0], landmark_extent_box(points), points, _subset(split, f"{part}/{name}"))


def iter_300w_rows(data_dir: str, split: str, annotations: str = "hrnet_csv"):
    """Rows of one 300W split in the common schema (module docstring: the two annotation sources)."""
    if annotations not in ANNOTATION_SOURCES:
        raise DatasetFormatError(f"300w: annotations must be one of {ANNOTATION_SOURCES}, got {annotations!r}")
    yield from (_csv_rows if annotations == "hrnet_csv" else _native_rows)(data_dir, split)


def _features():
    return task_features(make_task("align_300w"), extra={"subset": Value("string")})


register_native_dataset(NativeDataset(
    name="300w", task="align_300w", splits=SPLITS, rows=iter_300w_rows, features=_features, layout=LAYOUT,
    protocol=PROTOCOL, options=("annotations",)))
