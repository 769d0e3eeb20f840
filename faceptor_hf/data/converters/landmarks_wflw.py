"""WFLW, 98 points (docs/datasets-and-evaluation.md §4.2): HRNet's protocol CSVs, or the native
``list_98pt_rect_attr_*.txt`` lists.

``annotations="hrnet_csv"`` (default, the official protocol): ``face_landmarks_wflw_{train, test, test_<subset>}.csv``
give membership, landmarks (no offset, unlike 300W) and the crop box, the square of side 200 * scale about
(center_w, center_h). The attribute flags of test rows are their membership in the six subset CSVs (matched on image
and landmarks); train rows have none (None), as the CSVs carry no attributes.

``annotations="native"``: the release's lists, one face per line: 196 landmark values (x0 y0 ... x97 y97), the
detector rectangle (x_min y_min x_max y_max), the 6 attribute flags (pose, expression, illumination, make-up,
occlusion, blur) and the image name. Landmarks are used as stored (no offset, as for the CSVs); the box is the square
HRNet derives from the landmark extent (the release's rectangle is not the protocol's box). A subset split is the
test rows whose flag is set, which is how WFLW defines its ``list_98pt_test_<subset>.txt`` files.
"""

from __future__ import annotations

import os

from datasets import Value

from ...configuration_faceptor import make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features
from ._landmarks_common import first_existing_folder, hrnet_box, iter_hrnet_csv, landmark_extent_box

NUM_POINTS = 98
# Subset names in the order of the native attribute columns (pose, expression, illumination, make-up, occlusion, blur).
SUBSETS = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")
SPLITS = ("train", "test") + tuple(f"test_{subset}" for subset in SUBSETS)
FLAG_COLUMNS = tuple(f"is_{subset}" for subset in SUBSETS)
NATIVE_LIST_FOLDERS = ("WFLW_annotations/list_98pt_rect_attr_train_test", "list_98pt_rect_attr_train_test", "")
NATIVE_FIELDS = 2 * NUM_POINTS + 4 + len(SUBSETS) + 1
# 0-based point groups whose centroids' distance normalizes NME (docs/datasets-and-evaluation.md §5.1); the first is the
# reported one.
NME_NORMALIZERS = {"inter_ocular": ((60,), (72,)), "inter_pupil": ((96,), (97,))}
ANNOTATION_SOURCES = ("hrnet_csv", "native")
# Landmark values are compared at this many decimals when matching rows across CSVs (they share one writer).
MATCH_DECIMALS = 3

LAYOUT = ("data_dir holds HRNet's face_landmarks_wflw_{train,test,test_<subset>}.csv and the images with the "
          "paths the CSVs name under data/ or WFLW_images/; annotations='native' needs WFLW_images/ and "
          "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt (or the two lists "
          "directly in data_dir)")
PROTOCOL = (
    "Splits: train 7,500, test 2,500, and the test attribute subsets test_largepose 326, test_expression 314, "
    "test_illumination 698, test_makeup 206, test_occlusion 736, test_blur 773 (HRNet CSVs). landmarks = CSV values "
    "(no offset); face_box = square of side 200*scale about (center_w, center_h); the reader zooms 0.8. NME "
    "normalizers (0-based points): inter_ocular = |p60 - p72| (reported), inter_pupil = |p96 - p97|; FR and AUC at "
    "0.1 on inter_ocular. The paper reports test only. Columns is_<subset>: attribute flags (None for train rows "
    "from the CSVs). annotations='native' reads the release's lists (box = square about the landmark extent).")


def _image_root(data_dir: str) -> str:
    root = first_existing_folder(data_dir, ("data", "WFLW_images"))
    if root is None:
        raise DatasetFormatError(f"no image folder (data/ or WFLW_images/); expected {LAYOUT}", data_dir)
    return root


def _match_key(image: str, points: list[list[float]]) -> tuple:
    return (image, tuple(round(value, MATCH_DECIMALS) for point in points for value in point))


def _row(image: str, box: list[float], points: list[list[float]], flags: dict) -> dict:
    return {"image": image, "face_box": box, "face_keypoints": None, "landmarks": points, **flags}


def _subset_members(data_dir: str, subset: str):
    """(match keys of one subset CSV or None when the file is absent, the CSV's unparsable lines as errors)."""
    path = os.path.join(data_dir, f"face_landmarks_wflw_test_{subset}.csv")
    if not os.path.isfile(path):
        return None, []
    members, problems = set(), []
    for item in iter_hrnet_csv(path, NUM_POINTS):
        if isinstance(item, DatasetFormatError):
            problems.append(item)
        else:
            members.add(_match_key(item.image, item.points))
    return members, problems


def _csv_rows(data_dir: str, split: str):
    csv_path = os.path.join(data_dir, f"face_landmarks_wflw_{split}.csv")
    if not os.path.isfile(csv_path):
        raise DatasetFormatError(f"HRNet protocol CSV not found; expected {LAYOUT} (or pass annotations='native')",
                                 csv_path)
    image_root = _image_root(data_dir)
    members = {}
    if split != "train":
        for subset in SUBSETS:
            if split == f"test_{subset}":
                continue
            members[subset], problems = _subset_members(data_dir, subset)
            yield from problems
    for item in iter_hrnet_csv(csv_path, NUM_POINTS):
        if isinstance(item, DatasetFormatError):
            yield item
            continue
        image = os.path.join(image_root, item.image)
        if not os.path.isfile(image):
            yield DatasetFormatError(f"image {image!r} named here does not exist", csv_path, item.line)
            continue
        key = _match_key(item.image, item.points)
        flags = {}
        for subset, column in zip(SUBSETS, FLAG_COLUMNS):
            if split == f"test_{subset}":
                flags[column] = True
            elif members.get(subset) is None:  # a train row, or that subset's CSV is absent: unknown
                flags[column] = None
            else:
                flags[column] = key in members[subset]
        yield _row(image, hrnet_box(item.center, item.scale), item.points, flags)


def _native_list(data_dir: str, part: str) -> str:
    name = f"list_98pt_rect_attr_{part}.txt"
    for folder in NATIVE_LIST_FOLDERS:
        path = os.path.join(data_dir, folder, name)
        if os.path.isfile(path):
            return path
    raise DatasetFormatError(f"WFLW annotation list {name} not found; expected {LAYOUT}", data_dir)


def _native_rows(data_dir: str, split: str):
    list_path = _native_list(data_dir, "train" if split == "train" else "test")
    wanted = SUBSETS.index(split[len("test_"):]) if split.startswith("test_") else None
    image_root = _image_root(data_dir)
    with open(list_path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != NATIVE_FIELDS:
                yield DatasetFormatError(f"expected {NATIVE_FIELDS} space-separated fields ({2 * NUM_POINTS} "
                                         "landmark values, 4 box values, 6 attribute flags, image name), found "
                                         f"{len(fields)}", list_path, number)
                continue
            try:
                values = [float(field) for field in fields[:2 * NUM_POINTS]]
                attributes = [int(field) for field in fields[2 * NUM_POINTS + 4:-1]]
            except ValueError as error:
                yield DatasetFormatError(f"a numeric field does not parse ({error})", list_path, number)
                continue
            if any(flag not in (0, 1) for flag in attributes):
                yield DatasetFormatError(f"attribute flags must be 0 or 1, got {attributes}", list_path, number)
                continue
            if wanted is not None and not attributes[wanted]:
                continue
            image = os.path.join(image_root, fields[-1])
            if not os.path.isfile(image):
                yield DatasetFormatError(f"image {image!r} named here does not exist", list_path, number)
                continue
            points = [[values[2 * k], values[2 * k + 1]] for k in range(NUM_POINTS)]
            flags = {column: bool(flag) for column, flag in zip(FLAG_COLUMNS, attributes)}
            yield _row(image, landmark_extent_box(points), points, flags)


def iter_wflw_rows(data_dir: str, split: str, annotations: str = "hrnet_csv"):
    """Rows of one WFLW split in the common schema (module docstring: the two annotation sources)."""
    if annotations not in ANNOTATION_SOURCES:
        raise DatasetFormatError(f"wflw: annotations must be one of {ANNOTATION_SOURCES}, got {annotations!r}")
    yield from (_csv_rows if annotations == "hrnet_csv" else _native_rows)(data_dir, split)


def _features():
    return task_features(make_task("align_wflw"), extra={column: Value("bool") for column in FLAG_COLUMNS})


register_native_dataset(NativeDataset(
    name="wflw", task="align_wflw", splits=SPLITS, rows=iter_wflw_rows, features=_features, layout=LAYOUT,
    protocol=PROTOCOL, options=("annotations",)))
