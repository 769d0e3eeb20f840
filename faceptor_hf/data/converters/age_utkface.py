"""UTKFace (age estimation, task ``age_utkface``) from its release and CORAL's split files
(docs/datasets-and-evaluation.md §4.8).

Layout of ``data_dir``:

    data/<file> or UTKFace/<file> (or data_dir itself)   the "Aligned & Cropped" 200 x 200 chips, named
                                                         <age>_<gender>_<race>_<datetime>.jpg.chip.jpg
    label/{train,test}.csv (Faceptor's copy) or utk_train.csv / utk_test.csv (CORAL's)
                                                         a header (",file,age"), then "<index>,<file>,<age>"

Splits ``train`` and ``test`` are CORAL's lists (ages 21-60; 13,144 training images in the paper). The age is the
true age from the file-name prefix, not the lists' age column, which CORAL stores as age - 21
(docs/datasets-and-evaluation.md §9 marks whether Faceptor kept that shift as a gap; MAE does not change, the age bins
do). Each listed age must be the file name's age or that minus 21, which catches a list that does not belong to these
files. Images in neither list (ages outside 21-60) are left out: their number is logged as a warning when a split is
read, and ``left_out_images(data_dir)`` names them.

Alignment: the chips are UTKFace's own aligned square crops, the likeliest Faceptor inputs
(docs/datasets-and-evaluation.md §3), so no detection is needed: ``face_box``/``face_keypoints`` are None and the chip
is resized to 112 px.

Rows: ``image`` (path), ``age`` (float32 years), ``gender`` (0 male, 1 female) and ``race`` (0-4) from the file
name, None where the name lacks the field (a few release names skip the race).
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Iterator

from ...configuration_faceptor import make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
# Faceptor's copy first, then CORAL's names; the first pair found is used.
LIST_FILES = ({"train": os.path.join("label", "train.csv"), "test": os.path.join("label", "test.csv")},
              {"train": "utk_train.csv", "test": "utk_test.csv"})
IMAGE_FOLDERS = ("data", "UTKFace")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CORAL_AGE_OFFSET = 21  # CORAL's age column is the true age minus 21

LAYOUT = ("data_dir/ holds the UTKFace chips (in data/, UTKFace/ or data_dir itself, named "
          "<age>_<gender>_<race>_<datetime>.jpg.chip.jpg) and CORAL's split lists: label/{train,test}.csv or "
          "utk_train.csv and utk_test.csv (header ',file,age')")


def parse_file_name(name: str) -> tuple[int, int | None, int | None] | None:
    """(age, gender, race) from a UTKFace file name; None when it does not start with ``<age>_``."""
    fields = os.path.basename(name).split("_")
    if len(fields) < 2 or not fields[0].isdigit():
        return None
    gender = int(fields[1]) if len(fields) >= 3 and fields[1].isdigit() else None
    race = int(fields[2]) if len(fields) >= 4 and fields[2].isdigit() else None
    return int(fields[0]), gender, race


def split_list_paths(data_dir: str) -> dict[str, str]:
    for names in LIST_FILES:
        paths = {split: os.path.join(data_dir, name) for split, name in names.items()}
        if all(os.path.exists(path) for path in paths.values()):
            return paths
    expected = " or ".join(" and ".join(names.values()) for names in LIST_FILES)
    raise DatasetFormatError(f"no UTKFace split lists in {data_dir}: expected {expected}; {LAYOUT}")


def image_folder(data_dir: str) -> str:
    return next((os.path.join(data_dir, name) for name in IMAGE_FOLDERS if os.path.isdir(os.path.join(data_dir, name))),
                data_dir)


def read_split_list(path: str) -> list[tuple[str, int, int] | DatasetFormatError]:
    """One CORAL list in line order: (file name, listed age, line) per sample, or the error of a malformed line."""
    items = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        file_column = header.index("file") if "file" in header else 1
        age_column = header.index("age") if "age" in header else 2
        for fields in reader:
            line = reader.line_num
            if not any(field.strip() for field in fields):
                continue
            if len(fields) <= max(file_column, age_column) or not fields[file_column].strip():
                items.append(DatasetFormatError(f"expected '<index>,<file>,<age>', got {','.join(fields)!r}", path,
                                                line))
                continue
            age = fields[age_column].strip()
            if not age.isdigit():
                items.append(DatasetFormatError(f"age {age!r} is not an integer", path, line))
                continue
            items.append((fields[file_column].strip(), int(age), line))
    return items


def _image_names(folder: str) -> Iterator[str]:
    return (entry.name for entry in os.scandir(folder) if entry.is_file()
            and entry.name.lower().endswith(IMAGE_EXTENSIONS))


def read_split_lists(data_dir: str) -> tuple[dict, dict, dict]:
    """(list path per split, ``read_split_list`` items per split, {file name: line} per split)."""
    paths = split_list_paths(data_dir)
    lists = {split: read_split_list(path) for split, path in paths.items()}
    lines = {split: {item[0]: item[2] for item in items if not isinstance(item, DatasetFormatError)}
             for split, items in lists.items()}
    return paths, lists, lines


def _left_out(folder: str, lines: dict) -> list[str]:
    return sorted(name for name in _image_names(folder) if not any(name in listed for listed in lines.values()))


def left_out_images(data_dir: str) -> list[str]:
    """Sorted names of the images that neither split list names (left out of every split)."""
    return _left_out(image_folder(data_dir), read_split_lists(data_dir)[2])


def utkface_rows(data_dir: str, split: str) -> Iterator[dict | DatasetFormatError]:
    """Rows of one split in the list's order."""
    paths, lists, lines = read_split_lists(data_dir)
    folder = image_folder(data_dir)
    other = next(name for name in SPLITS if name != split)
    left_out = len(_left_out(folder, lines))
    if left_out:
        logger.warning("utkface: %d image(s) in %s are in neither %s nor %s and were left out", left_out, folder,
                       paths["train"], paths["test"])
    for item in lists[split]:
        if isinstance(item, DatasetFormatError):
            yield item
            continue
        file_name, listed_age, line = item
        if file_name in lines[other]:
            yield DatasetFormatError(f"{file_name} is also in the {other} list ({paths[other]}:"
                                     f"{lines[other][file_name]})", paths[split], line)
            continue
        parsed = parse_file_name(file_name)
        if parsed is None:
            yield DatasetFormatError(f"file name {file_name!r} does not start with '<age>_' as UTKFace names do",
                                     paths[split], line)
            continue
        age, gender, race = parsed
        if listed_age not in (age, age - CORAL_AGE_OFFSET):
            yield DatasetFormatError(f"listed age {listed_age} fits neither the file name's age {age} nor CORAL's "
                                     f"{age} - {CORAL_AGE_OFFSET}", paths[split], line)
            continue
        image_path = os.path.join(folder, file_name)
        if not os.path.exists(image_path):
            yield DatasetFormatError(f"image {image_path} is missing", paths[split], line)
            continue
        yield {"image": image_path, "face_box": None, "face_keypoints": None, "age": float(age),
               "gender": gender, "race": race}


def utkface_features():
    from datasets import Value

    return task_features(make_task("age_utkface"), extra={"gender": Value("int8"), "race": Value("int8")})


register_native_dataset(NativeDataset(
    name="utkface",
    task="age_utkface",
    splits=SPLITS,
    rows=utkface_rows,
    features=utkface_features,
    layout=LAYOUT,
    protocol=("CORAL's lists (label/{train,test}.csv or utk_train.csv/utk_test.csv, ages 21-60) decide train/test; "
              "images in neither are left out and counted (logged). age = the true age from the file-name prefix, not "
              "CORAL's age - 21 column (a gap, docs/datasets-and-evaluation.md §9). The aligned 200x200 chips are the "
              "crops: no face_box or keypoints, no detection needed."),
    # The official loader opens the chips with PIL, without the EXIF orientation.
    exif_orientation=False,
))
