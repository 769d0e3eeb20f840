"""The tanh-warp of FaRL's face parsing (docs/datasets-and-evaluation.md §2.4): a crop whose center band is linear and
whose borders squeeze the whole image plane into the frame. LaPa trains and tests with ``warp_factor`` 0.8; 0 is a plain
affine crop.

Coordinates follow the official (blueprint) convention: pixel-index points (pixel center = integer), normalized
per axis as q = x / size * 2 - 1 (divided by the size, not size - 1, so q = 0 sits at index size / 2). With
wf = ``warp_factor``, the band |q| <= 1 - wf stays linear; outside it

    forward (aligned -> warped):  q' = sign(q) * (tanh((|q| - (1 - wf)) / wf) * wf + (1 - wf))
    inverse (warped -> aligned):  q  = sign(q') * (atanh(clip((|q'| - (1 - wf)) / wf, 0.999)) * wf + (1 - wf))

``matrix`` arguments are (2, 3) image -> aligned-crop matrices (``dataset_crops.row_matrix``); the warp is applied
on top. Images (C, H, W) float; maps (C, size, size) in the warped frame; points (..., 2) XY.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .face_alignment import invert_affine, transform_points

ATANH_CLIP = 0.999


def _check_factor(warp_factor: float):
    if not 0.0 <= warp_factor < 1.0:
        raise ValueError(f"warp_factor must lie in [0, 1), got {warp_factor}")


def tanh_warp_points(points: torch.Tensor, size: int, warp_factor: float) -> torch.Tensor:
    """(..., 2) aligned-crop points -> (..., 2) points of the tanh-warped ``size`` crop (float64)."""
    _check_factor(warp_factor)
    points = torch.as_tensor(points, dtype=torch.float64)
    if warp_factor == 0:
        return points
    q = points / size * 2 - 1
    linear = 1.0 - warp_factor
    outer = q.abs() > linear
    squeezed = torch.sign(q) * (torch.tanh((q.abs() - linear) / warp_factor) * warp_factor + linear)
    return (torch.where(outer, squeezed, q) + 1) / 2 * size


def untanh_warp_points(points: torch.Tensor, size: int, warp_factor: float) -> torch.Tensor:
    """(..., 2) points of the tanh-warped ``size`` crop -> (..., 2) aligned-crop points (float64). The atanh argument
    is clipped to 0.999 as officially, so the frame's outer pixels see at most ~3.24 normalized units out."""
    _check_factor(warp_factor)
    points = torch.as_tensor(points, dtype=torch.float64)
    if warp_factor == 0:
        return points
    q = points / size * 2 - 1
    linear = 1.0 - warp_factor
    outer = q.abs() > linear
    ratio = ((q.abs() - linear) / warp_factor).clamp(max=ATANH_CLIP)
    stretched = torch.sign(q) * (torch.atanh(ratio) * warp_factor + linear)
    return (torch.where(outer, stretched, q) + 1) / 2 * size


def _grid(points: torch.Tensor, source_height: int, source_width: int) -> torch.Tensor:
    """Pixel-index XY -> grid_sample coordinates (align_corners=False)."""
    grid = torch.empty_like(points)
    grid[..., 0] = (points[..., 0] + 0.5) / source_width * 2 - 1
    grid[..., 1] = (points[..., 1] + 0.5) / source_height * 2 - 1
    return grid


def _pixel_centers(height: int, width: int, device) -> torch.Tensor:
    """(height * width, 2) float64 XY of every pixel, row-major."""
    ys = torch.arange(height, dtype=torch.float64, device=device)
    xs = torch.arange(width, dtype=torch.float64, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], -1).reshape(-1, 2)


def tanh_warp_image(image: torch.Tensor, matrix: torch.Tensor, size: int, warp_factor: float,
                    mode: str = "bilinear") -> torch.Tensor:
    """(C, H, W) image -> (C, size, size) warped crop by inverse mapping (crop pixel -> inverse tanh -> inverse
    ``matrix`` -> image), sampled bilinearly (``mode="nearest"`` for label maps), zero outside the image."""
    crop = _pixel_centers(size, size, image.device)
    aligned = untanh_warp_points(crop, size, warp_factor)
    source = transform_points(invert_affine(matrix.to(torch.float64)[None]).to(image.device), aligned[None])[0]
    grid = _grid(source, *image.shape[-2:]).reshape(1, size, size, 2).to(image.dtype)
    return F.grid_sample(image[None], grid, mode=mode, padding_mode="zeros", align_corners=False)[0]


def tanh_unwarp_map(face_map: torch.Tensor, matrix: torch.Tensor, image_size: tuple[int, int],
                    warp_factor: float) -> torch.Tensor:
    """(C, size, size) map in the warped crop -> (C, H, W) in the image frame: every image pixel goes through
    ``matrix`` and the forward tanh-warp, and the map is sampled there bilinearly with zeros outside the crop (the
    official parsing evaluation warps logits this way before the argmax)."""
    size = face_map.shape[-1]
    if face_map.shape[-2] != size:
        raise ValueError(f"the crop map must be square, got {tuple(face_map.shape[-2:])}")
    height, width = image_size
    image_points = _pixel_centers(height, width, face_map.device)
    aligned = transform_points(matrix.to(torch.float64)[None].to(face_map.device), image_points[None])[0]
    warped = tanh_warp_points(aligned, size, warp_factor)
    grid = _grid(warped, size, size).reshape(1, height, width, 2).to(face_map.dtype)
    return F.grid_sample(face_map[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


__all__ = ["ATANH_CLIP", "tanh_unwarp_map", "tanh_warp_image", "tanh_warp_points", "untanh_warp_points"]
