"""Dataset row (common schema, ``docs/datasets-and-evaluation.md`` §S) -> training example: the normalized crop and
the task's target.

    builder = TaskExampleBuilder(task, train=True, zoom=0.8)
    example = builder(row, numpy.random.default_rng(seed))      # {"pixel_values": (3, S, S), "target": ...}
    batch = collate_examples([example, ...])                     # stacked tensors

The crop is the image processor's (``FaceptorImageProcessor.crop_row``: the one row -> crop rule of
``dataset_crops``, size and statistics of the task's input; with ``train`` an already-cropped image takes the
official training resize, timm's center square + bicubic at 112 px except for recognition, else the evaluation
one); training augmentations (``training.augmentation``) go in as crop matrices composed with the row's and a
photometric step on the crop, so masks and landmarks go through exactly the image's geometry, and a horizontal flip
also reorders the labels by the task type's ``flip_permutation``. The target is read from the task type's
``label_column``; how each column becomes a tensor is the table ``TARGET_OF_COLUMN`` (``register_target_column``
adds a column for a new task type). Every label is checked against the task (counts, class ranges, mask ids), and a
bad one raises ``TrainingExampleError`` naming the task, the column and the row.

Targets per column (S = crop side, 112 or 512): identity int64 (); age float32 (); attributes int8 (A,);
expression / label int64 (); mask int64 (S, S); landmarks float32 (N, 2) crop pixel-index XY; values float32 (N,).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import PIL.Image
import torch

from ..data.schema import FACE_BOX, FACE_KEYPOINTS, IMAGE
from ..dataset_crops import horizontal_flip, warp_mask, warp_points
from ..image_loading import ImageLoadError, load_image
from ..image_processing_faceptor import FaceptorImageProcessor
from ..tanh_warp import tanh_warp_image, tanh_warp_points
from ..task_types import FaceptorTask, get_task_type
from .augmentation import (
    Augmentation,
    Augmentation112,
    Augmentation512,
    check_augmentation,
    default_augmentation,
    dense_photometric,
    draws_flip,
    rand_augment,
    random_erasing,
    random_similarity,
)


class TrainingExampleError(ValueError):
    """A row cannot become a training example; the message names the task, the column and the row if known."""


@dataclass
class TargetContext:
    """What a target reader needs besides the column's value.

    Attributes:
        task: the task being trained.
        matrix: (2, 3) float64 image -> crop matrix of this example (augmentation and flip included).
        crop_size: S.
        image_size: (H, W) of the row's image.
        flip: the task type's flip permutation when this example is mirrored, else None.
        num_identities: identity count of a recognition task when known (bounds ``identity``).
        warp_factor: tanh-warp applied after ``matrix`` (``tanh_warp``; 0 = plain crop).
    """

    task: FaceptorTask
    matrix: torch.Tensor
    crop_size: int
    image_size: tuple[int, int]
    flip: list[int] | None
    num_identities: int | None = None
    warp_factor: float = 0.0


# ---------------------------------------------------------------------------------------------------------------
# Reading values
# ---------------------------------------------------------------------------------------------------------------
def _integer(value, what: str) -> int:
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not math.isfinite(value) or float(value) != int(value):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _array(value, what: str, dtype) -> np.ndarray:
    try:
        array = np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be numbers, got {value!r}") from error
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return array


def _picture_source(value):
    """A ``datasets`` image value (PIL image, or {"bytes", "path"} when not decoded), a path, bytes or pixels."""
    if isinstance(value, dict):
        source = value.get("bytes") or value.get("path")
        if source is None:
            raise ValueError("the image entry has neither bytes nor a path")
        return source
    return value


def read_image(value) -> torch.Tensor:
    """Any image value of a row -> (3, H, W) float32 RGB in [0, 1] (every PIL mode converted)."""
    try:
        return load_image(_picture_source(value))
    except ImageLoadError as error:
        raise ValueError(str(error)) from error


_MASK_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")


def read_mask(value) -> np.ndarray:
    """A mask value (single-channel PIL image, {"bytes", "path"}, path, bytes or 2-D integer array) -> (H, W)
    int64 class ids."""
    source = _picture_source(value)
    if isinstance(source, (str, bytes, bytearray)):
        try:
            source = PIL.Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
            source.load()
        except (OSError, PIL.UnidentifiedImageError) as error:
            raise ValueError(f"cannot read the mask image ({error})") from error
    if isinstance(source, PIL.Image.Image):
        if source.mode not in _MASK_MODES:
            raise ValueError(f"a mask must be a single-channel image of class ids (mode L), got mode {source.mode}")
        return np.asarray(source).astype(np.int64)
    array = np.asarray(source.cpu() if isinstance(source, torch.Tensor) else source)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"a mask array must be 2-D integer class ids, got shape {array.shape} dtype {array.dtype}")
    return array.astype(np.int64)


def _inverse(permutation: list[int]) -> list[int]:
    inverse = [0] * len(permutation)
    for position, source in enumerate(permutation):
        inverse[source] = position
    return inverse


# ---------------------------------------------------------------------------------------------------------------
# Target columns
# ---------------------------------------------------------------------------------------------------------------
def identity_target(value, context: TargetContext) -> torch.Tensor:
    identity = _integer(value, "identity")
    limit = context.num_identities
    if identity < 0 or (limit is not None and identity >= limit):
        bound = f"0 .. {limit - 1}" if limit is not None else ">= 0"
        raise ValueError(f"identity {identity} is out of range ({bound})")
    return torch.tensor(identity, dtype=torch.int64)


def age_target(value, context: TargetContext) -> torch.Tensor:
    years = _array(value, "age", np.float64)
    if years.size != 1:
        raise ValueError(f"age must be one number, got {value!r}")
    age = float(years.reshape(()))
    last_bin = context.task.num_queries - 1
    if not 0 <= age <= last_bin:
        raise ValueError(f"age {age} lies outside the task's bins 0 .. {last_bin}")
    return torch.tensor(age, dtype=torch.float32)


def attributes_target(value, context: TargetContext) -> torch.Tensor:
    attributes = _array(value, "attributes", np.float64)
    count = context.task.num_queries
    if attributes.shape != (count,):
        raise ValueError(f"{attributes.size} attribute values (shape {attributes.shape}) for a task with {count} "
                         "attributes")
    bad = sorted(set(attributes.tolist()) - {-1.0, 0.0, 1.0})
    if bad:
        raise ValueError(f"attribute values must be 1 (present), 0 (absent) or -1 (unknown), got {bad[:5]}")
    if context.flip is not None:
        attributes = attributes[context.flip]
    return torch.from_numpy(attributes.astype(np.int8))


def class_target(value, context: TargetContext) -> torch.Tensor:
    labels = context.task.labels
    if isinstance(value, str):
        if value not in labels:
            raise ValueError(f"class {value!r} is not one of the task's labels {labels}")
        index = labels.index(value)
    else:
        index = _integer(value, "class id")
    if not 0 <= index < len(labels):
        raise ValueError(f"class id {index} is out of range 0 .. {len(labels) - 1}")
    if context.flip is not None:
        index = _inverse(context.flip)[index]
    return torch.tensor(index, dtype=torch.int64)


def mask_target(value, context: TargetContext) -> torch.Tensor:
    mask = read_mask(value)
    if tuple(mask.shape) != tuple(context.image_size):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{context.image_size[1]}x{context.image_size[0]}; they must have the same size")
    classes = context.task.num_queries
    if mask.size and (mask.min() < 0 or mask.max() >= classes):
        found = int(mask.max()) if mask.max() >= classes else int(mask.min())
        raise ValueError(f"mask holds class id {found}, outside the task's {classes} classes (0 .. {classes - 1})")
    if context.warp_factor:
        warped = tanh_warp_image(torch.from_numpy(mask)[None].float(), context.matrix, context.crop_size,
                                 context.warp_factor, mode="nearest")[0].round().long()
    else:
        warped = warp_mask(torch.from_numpy(mask), context.matrix, context.crop_size)
    if context.flip is not None:
        warped = torch.tensor(_inverse(context.flip), dtype=torch.int64)[warped]
    return warped


def landmarks_target(value, context: TargetContext) -> torch.Tensor:
    points = _array(value, "landmarks", np.float64)
    count = context.task.num_queries
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"landmarks must be (N, 2) x y points, got shape {points.shape}")
    if points.shape[0] != count:
        raise ValueError(f"{points.shape[0]} landmarks for a task with {count} points")
    warped = tanh_warp_points(warp_points(torch.from_numpy(points), context.matrix), context.crop_size,
                              context.warp_factor)
    if context.flip is not None:
        warped = warped[context.flip]
    return warped.float()


def values_target(value, context: TargetContext) -> torch.Tensor:
    values = _array(value, "values", np.float64)
    count = context.task.num_queries
    if values.shape != (count,):
        raise ValueError(f"{values.size} values (shape {values.shape}) for a task with {count} outputs")
    if context.flip is not None:
        values = values[context.flip]
    return torch.from_numpy(values.astype(np.float32))


TARGET_OF_COLUMN: dict[str, Callable[[object, TargetContext], torch.Tensor]] = {
    "identity": identity_target,
    "age": age_target,
    "attributes": attributes_target,
    "expression": class_target,
    "label": class_target,
    "mask": mask_target,
    "landmarks": landmarks_target,
    "values": values_target,
}


def register_target_column(column: str, reader: Callable[[object, TargetContext], torch.Tensor],
                           exist_ok: bool = False):
    """Teach the builder a new target column (of a user's task type): ``reader(value, context) -> tensor``
    raising ``ValueError`` on a bad value (the builder adds the task, column and row to the message)."""
    if column in TARGET_OF_COLUMN and not exist_ok:
        raise ValueError(f"target column {column!r} already has a reader; pass exist_ok=True to replace it")
    TARGET_OF_COLUMN[column] = reader


# ---------------------------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------------------------
# Target columns whose official training transform resizes an already-cropped image as the test transform does
# (recognition: torchvision Resize, PIL bilinear); the others train through timm's (center square, bicubic).
TEST_RESIZE_IN_TRAINING = {"identity"}


class TaskExampleBuilder:
    """Turns rows of one task's dataset into examples; picklable, so it runs in ``DataLoader`` workers.

    Args:
        task: the model's task (its type's ``label_column`` is the target column).
        train: augment (``augmentation``); False gives the deterministic evaluation crop.
        processor: cuts and normalizes the crops (``crop_row``; its crop size and statistics per input).
        augmentation: ``Augmentation112`` / ``Augmentation512`` settings; None = the official ones for the task
            (``augmentation.default_augmentation``). Ignored when ``train`` is False.
        zoom, dense_face_scale: crop rule of ``dataset_crops.row_matrix`` (box crops: 0.8 for 300W/WFLW/COFW).
        num_identities: identity count of a recognition task, to refuse out-of-range ids (None: only >= 0).
        warp_factor: FaRL's tanh-warp on top of the crop (``tanh_warp``; LaPa 0.8), for
            image and labels alike; 0 = the plain crop.
    Raises ``ValueError`` naming the task when the augmentation does not fit it, or the target column has no
    reader.
    """

    def __init__(self, task: FaceptorTask, train: bool, processor: FaceptorImageProcessor | None = None,
                 augmentation: Augmentation | None = None, zoom: float = 1.0, dense_face_scale: float = 1.0,
                 num_identities: int | None = None, warp_factor: float = 0.0):
        if not zoom > 0:
            raise ValueError(f"task {task.name!r}: zoom must be positive, got {zoom}")
        if not 0.0 <= warp_factor < 1.0:
            raise ValueError(f"task {task.name!r}: warp_factor must lie in [0, 1), got {warp_factor}")
        self.task, self.train = task, train
        self.column = get_task_type(task).label_column
        if self.column not in TARGET_OF_COLUMN:
            raise ValueError(f"task {task.name!r}: no target reader for column {self.column!r}; add one with "
                             "faceptor_hf.training.examples.register_target_column")
        self.processor = processor if processor is not None else FaceptorImageProcessor()
        self.crop_size = self.processor.crop_size(task.model_input)
        if train:
            self.augmentation = augmentation if augmentation is not None else default_augmentation(task)
        else:
            self.augmentation = None
        self.flip_permutation = check_augmentation(task, self.augmentation) if self.augmentation else None
        self.zoom, self.dense_face_scale, self.num_identities = zoom, dense_face_scale, num_identities
        self.warp_factor = warp_factor
        self.training_resize = train and self.column not in TEST_RESIZE_IN_TRAINING

    def _fail(self, column: str, index, message: str) -> TrainingExampleError:
        row = f", row {index}" if index is not None else ""
        return TrainingExampleError(f"task {self.task.name!r}, column {column!r}{row}: {message}")

    def _applied_zoom(self, row: dict) -> float:
        # row_matrix applies ``zoom`` to box crops only (rule 2); the random scale is relative to what it applied.
        return self.zoom if row.get(FACE_KEYPOINTS) is None and row.get(FACE_BOX) is not None else 1.0

    def _draw_augmentation(self, row: dict, generator: np.random.Generator):
        """(crop matrices to compose with the row's, photometric step on the [0, 1] crop or None, flip permutation
        or None). Draw order as official: similarity, flip, then the photometric draws when the crop exists."""
        settings = self.augmentation
        if settings is None:
            return (), None, None
        transforms, flip = [], None
        if isinstance(settings, Augmentation512):
            transforms.append(random_similarity(settings, self.crop_size, self._applied_zoom(row), generator))
        if draws_flip(settings, generator):
            transforms.append(horizontal_flip(self.crop_size))
            flip = self.flip_permutation
        photometric = dense_photometric if isinstance(settings, Augmentation512) else rand_augment
        return transforms, (lambda crop: photometric(crop, settings, generator)), flip

    def __call__(self, row: dict, generator: np.random.Generator, index: int | None = None) -> dict:
        """One example from a row; ``index`` (the row number) only makes error messages more precise.

        Returns ``{"pixel_values": (3, S, S) float32 normalized, "target": tensor}``; all randomness comes from
        ``generator``."""
        for column in (IMAGE, self.column):
            if row.get(column) is None:
                raise self._fail(column, index, "missing (None or absent); the row has columns "
                                                f"{sorted(key for key, value in row.items() if value is not None)}")
        try:
            image = read_image(row[IMAGE])
        except ValueError as error:
            raise self._fail(IMAGE, index, str(error)) from error
        image_size = tuple(image.shape[-2:])
        transforms, augment_crop, flip = self._draw_augmentation(row, generator)
        try:
            pixels, matrix = self.processor.crop_row(
                {IMAGE: image, FACE_BOX: row.get(FACE_BOX), FACE_KEYPOINTS: row.get(FACE_KEYPOINTS)},
                self.task.model_input, zoom=self.zoom, dense_face_scale=self.dense_face_scale,
                warp_factor=self.warp_factor, training_resize=self.training_resize, crop_transforms=transforms,
                augment_crop=augment_crop)
        except (ValueError, RuntimeError) as error:
            column = FACE_KEYPOINTS if row.get(FACE_KEYPOINTS) is not None else FACE_BOX
            raise self._fail(column, index, str(error)) from error

        context = TargetContext(self.task, matrix, self.crop_size, image_size, flip, self.num_identities,
                                self.warp_factor)
        try:
            target = TARGET_OF_COLUMN[self.column](row[self.column], context)
        except ValueError as error:
            raise self._fail(self.column, index, str(error)) from error
        if isinstance(self.augmentation, Augmentation112):
            pixels = random_erasing(pixels, self.augmentation, generator)
        return {"pixel_values": pixels.float().contiguous(), "target": target}


def collate_examples(examples: list[dict]) -> dict:
    """List of examples -> dict of stacked tensors (``pixel_values`` (B, 3, S, S), ``target`` (B, ...))."""
    if not examples:
        raise ValueError("collate_examples: no examples")
    keys = list(examples[0])
    batch = {}
    for key in keys:
        values = [example.get(key) for example in examples]
        if any(value is None for value in values):
            raise ValueError(f"collate_examples: some examples lack {key!r}")
        shapes = {tuple(value.shape) for value in values}
        if len(shapes) > 1:
            raise ValueError(f"collate_examples: {key!r} has differing shapes {sorted(shapes)}")
        batch[key] = torch.stack(values)
    return batch


__all__ = [
    "TARGET_OF_COLUMN",
    "TEST_RESIZE_IN_TRAINING",
    "TargetContext",
    "TaskExampleBuilder",
    "TrainingExampleError",
    "collate_examples",
    "read_image",
    "read_mask",
    "register_target_column",
]
