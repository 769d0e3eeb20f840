"""How a dataset row becomes a model crop: the one rule of training and evaluation, applied by
``FaceptorImageProcessor.crop_row``. A row is an image plus optional ``face_keypoints`` (5, 2) / ``face_box`` (4,):

1. ``face_keypoints`` present -> 5-point similarity onto the input's template (ArcFace at 112 px, FaRL at 512 px);
2. else ``face_box`` present -> the official box crop (``box_crop_matrix_official``: box edges onto the crop's
   outer edges, anisotropic where the box is not square), then a zoom about the crop center (``zoom``, e.g. the
   0.8 of the 300W/WFLW/COFW landmark protocol);
3. else the image is already the aligned crop: resized to the input size as the official pipeline of that input
   resizes it (``whole_image_matrix``, ``warp_image``):
   * 512 px (CelebAMask-HQ's 1024-px photos): OpenCV ``resize`` INTER_LINEAR, in training and evaluation alike;
     bilinear without antialiasing, so an exact 2x shrink is a plain 2 x 2 average;
   * 112 px, training (``training=True``): timm ``RandomResizedCrop(112, scale=(1, 1), ratio=(1, 1),
     interpolation="bicubic")`` of the attribute/age/expression transform, which for these settings is a center
     square crop (integer offsets) followed by PIL's bicubic resize (recognition trains through the test resize:
     the example builder passes ``training=False`` for it);
   * 112 px, evaluation: torchvision ``Resize([112, 112])`` on a PIL image, i.e. PIL's bilinear resize of the whole
     image (a non-square image is squashed).
   PIL's resizes filter over the whole footprint (antialiased) and OpenCV's does not; both are reproduced to uint8
   rounding (the 112-px ones by PIL itself).

Sampling follows the official dense pipeline (blueprint ``TransformByMap``: OpenCV ``remap``, bilinear, zero
border, no prefilter), so a box crop that shrinks a large face more than 2x is sampled as officially, not from the
anti-aliased pyramid photos take (``FaceptorImageProcessor.preprocess``).

Augmentations compose with that matrix (``center_similarity``: shift, rotation, scale about the center); labels
go through the same matrix (``warp_points``, ``warp_mask``), so predictions map back with its inverse.
Shapes: images (3, H, W) float in [0, 1]; masks (H, W) int; points (N, 2) pixel-index XY.
"""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .face_alignment import (
    arcface_template,
    compose,
    farl_template,
    invert_affine,
    resize_matrix,
    sampling_grid,
    similarity_transform,
    transform_points,
    translation,
    warp_faces,
)
from .task_types import INPUT_SIZE_OF


def box_crop_matrix_official(box, size: int) -> torch.Tensor:
    """(2, 3) float64: box (x1, y1, x2, y2, boundary coordinates) onto a ``size`` crop with
    x' = (x - x1) * size / (x2 - x1) - 0.5 (and likewise y), as the official landmark datasets crop."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face_box {[x1, y1, x2, y2]} has no area")
    sx, sy = size / (x2 - x1), size / (y2 - y1)
    return torch.tensor([[sx, 0.0, -x1 * sx - 0.5], [0.0, sy, -y1 * sy - 0.5]], dtype=torch.float64)


def center_similarity(size: int, scale: float = 1.0, angle: float = 0.0, shift=(0.0, 0.0)) -> torch.Tensor:
    """(2, 3) float64 p -> s R(angle) (p - c) + c + shift about the crop center c = ((size - 1) / 2, ...);
    ``angle`` in radians (y down), ``shift`` in crop pixels."""
    c = (size - 1) / 2.0
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[cos, -sin, c - cos * c + sin * c + shift[0]],
                         [sin, cos, c - sin * c - cos * c + shift[1]]], dtype=torch.float64)


def horizontal_flip(size: int) -> torch.Tensor:
    """(2, 3) float64 mirror of a ``size`` crop: x -> size - 1 - x."""
    return torch.tensor([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


# The dense input's official pipeline resizes already-cropped images with OpenCV, the 112-px one with PIL.
DENSE_SIZE = INPUT_SIZE_OF["dense_pixel_values"]


def _center_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of timm's fallback crop for scale = ratio = 1: the center square, integer offsets."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def whole_image_matrix(image_size: tuple[int, int], size: int, training: bool = False) -> torch.Tensor:
    """(2, 3) float64 image -> ``size`` crop matrix of rule 3 (the image is the crop) for an (H, W) image.

    A plain resize onto the crop, except in training at every size but the dense 512 on a non-square image: timm's
    ``RandomResizedCrop`` with scale = ratio = 1 finds no square of the image's area inside it and falls back to
    the center square (side min(H, W), offsets ``(H - side) // 2`` and ``(W - side) // 2``), then resizes that."""
    height, width = image_size
    if training and size != DENSE_SIZE and height != width:
        top, left, side = _center_square(height, width)
        return compose(resize_matrix(side, side, size, size), translation(-left, -top))
    return resize_matrix(height, width, size, size)


def row_matrix(row: dict, model_input: str, image_size: tuple[int, int], zoom: float = 1.0,
               dense_face_scale: float = 1.0, training: bool = False, size: int | None = None) -> torch.Tensor:
    """(2, 3) float64 image -> crop matrix of a schema row for ``model_input`` (rules 1-3 of the module doc).

    ``zoom`` shrinks box crops about the center (landmark protocols: 0.8, AFLW 1.0); ``dense_face_scale`` scales
    the FaRL template of keypoint crops at 512 px (1.0 = the template as trained for LaPa); ``training`` selects
    the official training resize of rule 3 (``whole_image_matrix``); ``size`` is the crop side (default: the
    input's, ``task_types.INPUT_SIZE_OF``; the processor passes its own)."""
    size = INPUT_SIZE_OF[model_input] if size is None else size
    keypoints, box = row.get("face_keypoints"), row.get("face_box")
    if keypoints is not None:
        points = torch.as_tensor(keypoints, dtype=torch.float64).reshape(1, 5, 2)
        template = arcface_template(size) if model_input == "pixel_values" else farl_template(size, dense_face_scale)
        return similarity_transform(points, template)[0]
    if box is not None:
        matrix = box_crop_matrix_official(box, size)
        return compose(center_similarity(size, zoom), matrix) if zoom != 1.0 else matrix
    return whole_image_matrix(image_size, size, training)


def is_whole_image(row: dict) -> bool:
    """Rule 3: the row has neither keypoints nor a box, so its image is already the aligned crop."""
    return row.get("face_keypoints") is None and row.get("face_box") is None


def _pil_resize(image: torch.Tensor, size: int, resample: int, box: tuple[int, int, int, int] | None) -> torch.Tensor:
    """(3, H, W) float in [0, 1] -> (3, size, size) float by PIL on 8-bit pixels, as the official 112-px transforms
    (torchvision / timm on the PIL image the dataset opened); ``box`` = (left, top, right, bottom) is cropped first."""
    pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = PIL.Image.fromarray(np.ascontiguousarray(pixels))
    if box is not None:
        picture = picture.crop(box)
    resized = np.asarray(picture.resize((size, size), resample), dtype=np.float32) / 255.0
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).to(image.dtype)


def resize_whole_image(image: torch.Tensor, size: int, training: bool = False) -> torch.Tensor:
    """(3, H, W) float -> (3, size, size): rule 3's official resize (module doc), the crop ``whole_image_matrix``
    describes. 512 px (the dense input): bilinear without antialiasing (OpenCV INTER_LINEAR); any other size (the
    112-px input): PIL bilinear (evaluation) or timm's center square + PIL bicubic (training)."""
    height, width = image.shape[-2:]
    if size == DENSE_SIZE:
        return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                             antialias=False)[0]
    if not training:
        return _pil_resize(image, size, PIL.Image.BILINEAR, None)
    top, left, side = _center_square(height, width)
    box = None if height == width else (left, top, left + side, top + side)
    return _pil_resize(image, size, PIL.Image.BICUBIC, box)


def warp_image(image: torch.Tensor, matrix: torch.Tensor, size: int, whole_image: bool = False,
               training: bool = False) -> torch.Tensor:
    """(3, H, W) float -> (3, size, size): bilinear, zero outside the image, without prefilter (as OpenCV
    ``remap`` / ``warpAffine`` sample the official crops, whatever the shrink).

    ``whole_image`` (rule 3, pre-aligned crops such as RAF-DB's 100 px or CelebAMask-HQ's 1024 px): the image is
    first resized to the crop as the official pipeline of that size does (``resize_whole_image``; edge pixels
    repeated, no zero border blended into the outer ring of an upsampled crop), and ``matrix`` composed with the
    inverse of ``whole_image_matrix`` (identity, or an augmentation such as a flip) is applied to that crop.
    ``training`` selects the official training resize (``row_matrix`` must have been built with the same)."""
    if whole_image:
        height, width = image.shape[-2:]
        resized = resize_whole_image(image, size, training)
        base = whole_image_matrix((height, width), size, training)
        inner = compose(matrix, invert_affine(base[None])[0])
        if torch.allclose(inner, torch.eye(2, 3, dtype=torch.float64), atol=1e-9):
            return resized
        image, matrix = resized, inner
    return warp_faces(image, matrix[None], (size, size), antialias=False)[0]


def warp_mask(mask: torch.Tensor, matrix: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) integer labels -> (size, size) int64 by nearest sampling; 0 (background) outside the image."""
    grid = sampling_grid(matrix[None].to(torch.float64), tuple(mask.shape[-2:]), (size, size))
    sampled = F.grid_sample(mask[None, None].float(), grid.float(), mode="nearest", padding_mode="zeros",
                            align_corners=False)
    return sampled[0, 0].round().long()


def warp_points(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(N, 2) image points -> (N, 2) crop points (float64)."""
    return transform_points(matrix[None].to(torch.float64), torch.as_tensor(points, dtype=torch.float64)[None])[0]


def unwarp_points(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(..., N, 2) crop points -> image points through the inverse of ``matrix`` (2, 3) or (..., 2, 3)."""
    points = torch.as_tensor(points, dtype=torch.float64)
    matrices = matrix.to(torch.float64).expand(points.shape[:-2] + (2, 3)) if matrix.ndim == 2 else matrix
    flat = matrices.reshape(-1, 2, 3)
    return transform_points(invert_affine(flat), points.reshape(flat.shape[0], -1, 2)).reshape(points.shape)


__all__ = ["DENSE_SIZE", "box_crop_matrix_official", "center_similarity", "horizontal_flip", "is_whole_image",
           "resize_whole_image", "row_matrix", "unwarp_points", "warp_image", "warp_mask", "warp_points",
           "whole_image_matrix"]
