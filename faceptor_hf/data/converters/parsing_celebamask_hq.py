"""CelebAMask-HQ (19-class face parsing, task ``parsing_celebam``) from its native release
(docs/datasets-and-evaluation.md §4.5).

Layout of ``data_dir`` (the release folder, or a folder holding it as ``CelebAMask-HQ/``):

    CelebA-HQ-img/{id}.jpg                                   30,000 photos, 1024 x 1024, id 0 ... 29999
    CelebAMask-HQ-mask-anno/{id // 2000}/{id:05d}_{part}.png 512 x 512 binary masks, one per visible part
    CelebA-HQ-to-CelebA-mapping.txt                          header "idx orig_idx orig_file", one line per id
    list_eval_partition.txt  (or Eval/list_eval_partition.txt, as CelebA ships it; not part of CelebAMask-HQ)
                                                             "<orig_file> <0|1|2>" per CelebA image

Splits: each HQ id takes the CelebA partition of its original file (0 train, 1 validation, 2 test: 24,183 /
2,993 / 2,824 images); ``trainval`` is train + validation, the 27,176 images Faceptor trains on.

Masks: the 18 part masks are painted into one class-index map in ``CELEBAMASK_HQ_LABELS`` order, later parts
overwriting earlier ones at overlaps (that order decides the labels there); absent part files are parts the face
does not show. The map is built at the annotation size (512) and enlarged by pixel replication to the image's own
size (1024), so ``mask`` and ``image`` have the same size as the schema requires. The reader's resize of such a row
to 512 (no ``face_box``/``face_keypoints``: the whole image is the crop; ``data.geometry.resize_whole_image``) is
the official pipeline's OpenCV INTER_LINEAR resize, bilinear without antialiasing, which at exactly 2x averages
2 x 2 pixel blocks (equal to OpenCV to uint8 rounding; PIL's resize would filter wider), and samples the mask back
to the 512 map exactly.

Rows: ``image`` (the release's JPEG path), ``mask`` (PNG bytes, mode "L"), ``face_box``/``face_keypoints`` None,
plus ``hq_id`` and ``orig_file`` (the CelebA file the HQ image was made from).
"""

from __future__ import annotations

import io
import os
from typing import Iterator

import numpy as np
import PIL.Image

from ...configuration_faceptor import CELEBAMASK_HQ_LABELS, make_task
from ..errors import DatasetFormatError
from ..registry import NativeDataset, register_native_dataset
from ..schema import task_features

IMAGE_FOLDER = "CelebA-HQ-img"
MASK_FOLDER = "CelebAMask-HQ-mask-anno"
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
PARTITION_FILES = ("list_eval_partition.txt", os.path.join("Eval", "list_eval_partition.txt"))
IDS_PER_MASK_FOLDER = 2000
# Part-file names of the release in class order 1 ... 18 (class 0 is background). The release's l_/r_ parts are
# the subject's left/right, so they carry the image-side names right_/left_ in CELEBAMASK_HQ_LABELS; "mouth" is the
# inner mouth and "l_lip" the lower lip.
PART_FILES = ("neck", "skin", "cloth", "l_ear", "r_ear", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth",
              "l_lip", "u_lip", "hair", "eye_g", "hat", "ear_r", "neck_l")
assert len(PART_FILES) == len(CELEBAMASK_HQ_LABELS) - 1
PARTITIONS = {"train": (0,), "validation": (1,), "test": (2,), "trainval": (0, 1)}

LAYOUT = (f"data_dir/ (or data_dir/CelebAMask-HQ/) holds {IMAGE_FOLDER}/<id>.jpg, {MASK_FOLDER}/<id // 2000>/"
          f"<id:05d>_<part>.png, {MAPPING_FILE}, and CelebA's list_eval_partition.txt (in data_dir/ or data_dir/Eval/)")


def release_root(data_dir: str) -> str:
    """The folder holding the release's files: ``data_dir`` itself or its ``CelebAMask-HQ/`` subfolder."""
    nested = os.path.join(data_dir, "CelebAMask-HQ")
    if not os.path.exists(os.path.join(data_dir, MAPPING_FILE)) and os.path.exists(os.path.join(nested, MAPPING_FILE)):
        return nested
    return data_dir


def mask_part_path(root: str, hq_id: int, part: str) -> str:
    return os.path.join(root, MASK_FOLDER, str(hq_id // IDS_PER_MASK_FOLDER), f"{hq_id:05d}_{part}.png")


def _partition_key(file_name: str) -> int | None:
    """CelebA file names are numbers (``000123.jpg``); compare them as numbers so zero padding does not matter."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return int(stem) if stem.isdigit() else None


def read_partition(path: str) -> tuple[dict[int, int], list[DatasetFormatError]]:
    """CelebA's ``list_eval_partition.txt`` -> ({file number: 0|1|2}, errors of malformed lines)."""
    partition, problems = {}, []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            key = _partition_key(fields[0]) if len(fields) == 2 else None
            if key is None or fields[1] not in ("0", "1", "2"):
                problems.append(DatasetFormatError(
                    f"expected '<celeba file>.jpg <0|1|2>', got {line.strip()!r}", path, line_number))
                continue
            partition[key] = int(fields[1])
    return partition, problems


def read_part_mask(path: str) -> np.ndarray:
    """(H, W) bool: inside the part (mask value > 0; the release stores 255, in gray or equal RGB channels)."""
    with PIL.Image.open(path) as image:
        pixels = np.asarray(image)
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    return pixels > 0


def assemble_mask(root: str, hq_id: int, image_size: tuple[int, int], where: tuple[str, int]):
    """The class-index mask of one HQ id as PNG bytes at ``image_size`` (W, H), or a ``DatasetFormatError``."""
    labels = None
    for class_index, part in enumerate(PART_FILES, 1):
        path = mask_part_path(root, hq_id, part)
        if not os.path.exists(path):
            continue
        try:
            inside = read_part_mask(path)
        except (OSError, SyntaxError, ValueError) as error:
            return DatasetFormatError(f"part mask cannot be read ({type(error).__name__}: {error})", path)
        if labels is None:
            labels = np.zeros(inside.shape, dtype=np.uint8)
        elif inside.shape != labels.shape:
            return DatasetFormatError(f"part mask is {inside.shape[1]}x{inside.shape[0]}, the other parts of id "
                                      f"{hq_id} are {labels.shape[1]}x{labels.shape[0]}", path)
        labels[inside] = class_index
    if labels is None:
        folder = os.path.dirname(mask_part_path(root, hq_id, PART_FILES[0]))
        return DatasetFormatError(f"no part mask {hq_id:05d}_<part>.png in {folder} for id {hq_id}", *where)
    mask = PIL.Image.fromarray(labels)
    if mask.size != image_size:
        mask = mask.resize(image_size, PIL.Image.NEAREST)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def celebamask_hq_rows(data_dir: str, split: str) -> Iterator[dict | DatasetFormatError]:
    """Rows of one split in HQ-id order (the mapping file's order)."""
    root = release_root(data_dir)
    mapping_path = os.path.join(root, MAPPING_FILE)
    candidates = [os.path.join(folder, name) for folder in (data_dir, root) for name in PARTITION_FILES]
    partition_path = next((path for path in candidates if os.path.exists(path)), None)
    for required in (mapping_path, os.path.join(root, IMAGE_FOLDER), os.path.join(root, MASK_FOLDER)):
        if not os.path.exists(required):
            raise DatasetFormatError(f"missing; expected {LAYOUT}", required)
    if partition_path is None:
        raise DatasetFormatError(f"CelebA's list_eval_partition.txt (from the CelebA release's Eval/ folder; it "
                                 f"decides the splits) is missing; looked for {', '.join(candidates)}")
    partition, problems = read_partition(partition_path)
    yield from problems
    wanted = PARTITIONS[split]
    with open(mapping_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or (line_number == 1 and fields[0] == "idx"):
                continue
            if len(fields) != 3 or not fields[0].isdigit():
                yield DatasetFormatError(f"expected 'idx orig_idx orig_file', got {line.strip()!r}", mapping_path,
                                         line_number)
                continue
            hq_id, orig_file = int(fields[0]), fields[2]
            key = _partition_key(orig_file)
            if key not in partition:
                yield DatasetFormatError(f"CelebA file {orig_file!r} of id {hq_id} is not in {partition_path}",
                                         mapping_path, line_number)
                continue
            if partition[key] not in wanted:
                continue
            image_path = os.path.join(root, IMAGE_FOLDER, f"{hq_id}.jpg")
            if not os.path.exists(image_path):
                yield DatasetFormatError(f"image of id {hq_id} ({mapping_path}:{line_number}) is missing", image_path)
                continue
            try:
                with PIL.Image.open(image_path) as image:
                    image_size = image.size
            except (OSError, SyntaxError, ValueError) as error:
                yield DatasetFormatError(f"image cannot be read ({type(error).__name__}: {error})", image_path)
                continue
            mask = assemble_mask(root, hq_id, image_size, (mapping_path, line_number))
            if isinstance(mask, DatasetFormatError):
                yield mask
                continue
            yield {"image": image_path, "face_box": None, "face_keypoints": None,
                   "mask": {"bytes": mask, "path": None}, "hq_id": hq_id, "orig_file": orig_file}


def celebamask_hq_features():
    from datasets import Value

    return task_features(make_task("parsing_celebam"), extra={"hq_id": Value("int32"), "orig_file": Value("string")})


register_native_dataset(NativeDataset(
    name="celebamask-hq",
    task="parsing_celebam",
    splits=tuple(PARTITIONS),
    rows=celebamask_hq_rows,
    features=celebamask_hq_features,
    layout=LAYOUT,
    protocol=("Splits from CelebA's list_eval_partition.txt through CelebA-HQ-to-CelebA-mapping.txt (0 train, 1 "
              "validation, 2 test); trainval = train + validation, Faceptor's training set; the paper tests on "
              "test. Masks: the 18 part PNGs painted in CELEBAMASK_HQ_LABELS order (later parts win at overlaps; "
              "absent part files are parts not shown), built at 512 and pixel-replicated to the 1024 image. No "
              "face_box or keypoints: the whole image is the crop (identity alignment after the 1024 -> 512 resize)."),
))
