"""MORPH II (age estimation, task ``age_morph2``) from its release in Faceptor's layout (docs/datasets-and-evaluation.md
§4.7).

Layout of ``data_dir``:

    data/<relative path>                       the photos; MORPH names them <subject>_<picture><M|F><age>.<ext>,
                                               e.g. 201620_00M29.jpg
    label/RANDOM_80_20/{train,test}.txt        "<relative path> <integer age>" per line, no header (optional)

Splits ``train`` and ``test``. The RANDOM_80_20 lists Faceptor used (an image-level random 80/20 split, 44,194
training images) are not public (a gap, docs/datasets-and-evaluation.md §9). When ``label/RANDOM_80_20/`` exists its
lists are used as they are; otherwise every image under ``data/`` is assigned by a seeded image-level 80/20 split, as
docs/datasets-and-evaluation.md §4.7 recommends: images are ordered by SHA-256 of "<split_seed>/<relative path>" and the
first 20 % (rounded) form ``test``, so the split depends only on the seed and the file names (not on the library
versions or the listing order). Ages then come from the file names (MORPH's own naming, equal to the ages of its CSV).
Expect MAE differences of a few hundredths against the paper with a generated split.

Alignment: Faceptor's 112-px input is a square face crop made by an unpublished aligner (docs/datasets-and-evaluation.md
§3, a gap); MORPH's release holds uncropped mugshots. Rows carry ``face_box``/``face_keypoints`` None (the image is
taken as the crop, right for a copy already aligned to 112 px) unless ``detect_keypoints=True``: then the package's
RetinaFace runs on each photo and the most confident face's 5 points become ``face_keypoints`` (the reader then aligns
to the ArcFace 112-px template, docs/datasets-and-evaluation.md §3's recommendation); a photo without a detected face is
a bad sample.

Rows: ``image`` (path), ``age`` (float32 years), ``subject_id`` (from the MORPH file name; None when a listed name
does not follow it).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Iterator

from ...configuration_faceptor import make_task
from ..errors import DatasetFormatError
from ..exif import raw_pixel_frame
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

IMAGE_FOLDER = "data"
LIST_FOLDER = os.path.join("label", "RANDOM_80_20")
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# <subject id>_<picture index><sex><age>.<ext>
MORPH_FILE_NAME = re.compile(r"^(\d+)_(\d+)([MF])(\d+)\.[A-Za-z]+$")

LAYOUT = ("data_dir/ holds data/<relative path> (the MORPH II photos, named <subject>_<picture><M|F><age>.<ext>) "
          "and optionally label/RANDOM_80_20/{train,test}.txt ('<relative path> <integer age>' lines)")


def parse_file_name(path: str) -> tuple[int, int] | None:
    """(subject id, age) from a MORPH file name, or None when the name does not follow MORPH's pattern."""
    match = MORPH_FILE_NAME.match(os.path.basename(path))
    return (int(match.group(1)), int(match.group(4))) if match else None


def listed_samples(list_path: str, image_root: str) -> Iterator[tuple | DatasetFormatError]:
    """(image path, age, subject id, (list file, line)) per line of a RANDOM_80_20 list."""
    with open(list_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            fields = line.rsplit(None, 1)  # the path may contain spaces; the age is the last field
            if len(fields) != 2 or not fields[1].isdigit():
                yield DatasetFormatError(f"expected '<relative path> <integer age>', got {line.strip()!r}",
                                         list_path, line_number)
                continue
            relative, age = fields[0].strip(), int(fields[1])
            parsed = parse_file_name(relative)
            yield (os.path.join(image_root, relative), age, parsed[0] if parsed else None, (list_path, line_number))


def seeded_split_members(image_root: str, split: str, seed: int) -> list[str]:
    """Relative paths ("/"-separated, sorted) of ``split`` under the seeded 80/20 split of every image."""
    files = []
    for folder, subfolders, names in os.walk(image_root):
        subfolders.sort()
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.relpath(os.path.join(folder, name), image_root).replace(os.sep, "/"))
    order = sorted(files, key=lambda relative: hashlib.sha256(f"{seed}/{relative}".encode("utf-8")).hexdigest())
    test_count = round(len(files) * TEST_FRACTION)
    return sorted(order[:test_count] if split == "test" else order[test_count:])


def generated_samples(image_root: str, split: str, seed: int) -> Iterator[tuple | DatasetFormatError]:
    for relative in seeded_split_members(image_root, split, seed):
        path = os.path.join(image_root, relative)
        parsed = parse_file_name(relative)
        if parsed is None:
            yield DatasetFormatError("file name does not give the age (MORPH names photos "
                                     "<subject>_<picture><M|F><age>.<ext>)", path)
            continue
        yield path, parsed[1], parsed[0], (path, None)


def detected_keypoints(detector, image_path: str, where: tuple) -> list | DatasetFormatError:
    """The 5 points (left eye, right eye, nose, left/right mouth corner) of the most confident detected face, in
    the raw pixel frame the rows are stored in (``exif.raw_pixel_frame``)."""
    from ...image_loading import ImageLoadError, load_image

    stored = raw_pixel_frame(image_path)
    try:
        image = load_image(stored if isinstance(stored, str) else stored["bytes"])
    except ImageLoadError as error:
        return DatasetFormatError(str(error), *where)
    faces = detector([image])[0]
    if len(faces["scores"]) == 0:
        return DatasetFormatError(f"no face detected in {image_path} (detect_keypoints needs one for the 5-point "
                                  "alignment)", *where)
    return faces["keypoints"][int(faces["scores"].argmax())].tolist()


def morph2_rows(data_dir: str, split: str, detect_keypoints: bool = False,
                split_seed: int | None = None) -> Iterator[dict | DatasetFormatError]:
    """Rows of one split, in list order (or sorted path order for a generated split)."""
    image_root = os.path.join(data_dir, IMAGE_FOLDER)
    if not os.path.isdir(image_root):
        raise DatasetFormatError(f"missing; expected {LAYOUT}", image_root)
    list_folder = os.path.join(data_dir, LIST_FOLDER)
    if os.path.isdir(list_folder):
        if split_seed is not None:
            raise DatasetFormatError(f"holds the RANDOM_80_20 lists, which fix the split; split_seed={split_seed} "
                                     "applies only without them (drop the option or the lists)", list_folder)
        list_path = os.path.join(list_folder, f"{split}.txt")
        if not os.path.exists(list_path):
            raise DatasetFormatError(f"missing (the {split} list of the RANDOM_80_20 split); expected {LAYOUT}",
                                     list_path)
        samples = listed_samples(list_path, image_root)
    else:
        samples = generated_samples(image_root, split, 0 if split_seed is None else split_seed)
    detector = None
    if detect_keypoints:
        import torch

        from ...face_detection import RetinaFaceDetector

        detector = RetinaFaceDetector(device="cuda" if torch.cuda.is_available() else "cpu")
    for sample in samples:
        if isinstance(sample, DatasetFormatError):
            yield sample
            continue
        image_path, age, subject_id, where = sample
        if not os.path.exists(image_path):
            yield DatasetFormatError(f"image {image_path} is missing", *where)
            continue
        keypoints = None
        if detector is not None:
            keypoints = detected_keypoints(detector, image_path, where)
            if isinstance(keypoints, DatasetFormatError):
                yield keypoints
                continue
        yield {"image": image_path, "face_box": None, "face_keypoints": keypoints, "age": float(age),
               "subject_id": subject_id}


def morph2_features():
    from datasets import Value

    return task_features(make_task("age_morph2"), extra={"subject_id": Value("int64")})


register_native_dataset(NativeDataset(
    name="morph2",
    task="age_morph2",
    splits=SPLITS,
    rows=morph2_rows,
    features=morph2_features,
    layout=LAYOUT,
    protocol=("label/RANDOM_80_20/{train,test}.txt when present (Faceptor's lists, not public). Without them (a gap, "
              "docs/datasets-and-evaluation.md §9): a seeded image-level 80/20 split of every image under data/ "
              "(SHA-256 of '<split_seed>/<relative path>' orders the images, the first 20 % are test; split_seed "
              "defaults to 0) with ages from the MORPH file names; expect small MAE differences. Alignment (a gap, "
              "docs/datasets-and-evaluation.md §9): rows carry no face_box/face_keypoints, so the image is used as "
              "the 112-px crop (right for an aligned copy); detect_keypoints=True adds RetinaFace's 5 points of the "
              "most confident face for ArcFace alignment of the raw mugshots."),
    options=("detect_keypoints", "split_seed"),
    # The official loader opens the photos with PIL, without the EXIF orientation.
    exif_orientation=False,
))
