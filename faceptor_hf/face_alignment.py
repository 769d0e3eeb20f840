"""Face alignment geometry: templates, similarity fits, crop matrices and batched warps.

Conventions (shared with the official data pipeline): points are pixel-index coordinates (the center of pixel
(row i, column j) is (x=j, y=i); an image spans [-0.5, W-0.5]); a 2x3 matrix maps original-image points to crop
points; warping samples by inverse mapping with bilinear interpolation and zero padding outside the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ArcFace 112x112 template (left eye, right eye, nose, left mouth corner, right mouth corner; image left/right).
ARCFACE_TEMPLATE_112 = [
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041],
]
# FaRL's 5-point template in a 512 frame, as blueprint maps it to pixel-index targets (template * 511/512).
FARL_TEMPLATE_512 = [[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4], [292.0, 360.4]]


def farl_template(size: int, face_scale: float) -> torch.Tensor:
    """(5, 2) FaRL template for a ``size`` crop, shrunk by ``face_scale`` about the crop center."""
    template = torch.tensor(FARL_TEMPLATE_512, dtype=torch.float64) / 512.0 * (size - 1)
    center = (size - 1) / 2.0
    return (template - center) * face_scale + center


def arcface_template(size: int) -> torch.Tensor:
    return torch.tensor(ARCFACE_TEMPLATE_112, dtype=torch.float64) * (size / 112.0)


def similarity_transform(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``source`` onto
    ``target`` (Umeyama). source (F, P, 2), target (P, 2) or (F, P, 2) -> (F, 2, 3) float64."""
    source = source.to(torch.float64)
    target = target.to(torch.float64).expand_as(source)
    mean_s, mean_t = source.mean(1, keepdim=True), target.mean(1, keepdim=True)
    s, t = source - mean_s, target - mean_t
    # Closed form for 2-D: with complex numbers z_t = a * z_s, a = sum(conj(z_s) z_t) / sum(|z_s|^2).
    denominator = (s**2).sum((1, 2)).clamp_min(1e-12)
    a = ((s[..., 0] * t[..., 0] + s[..., 1] * t[..., 1]).sum(1)) / denominator
    b = ((s[..., 0] * t[..., 1] - s[..., 1] * t[..., 0]).sum(1)) / denominator
    rotation = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    translation = mean_t.squeeze(1) - (rotation @ mean_s.squeeze(1)[..., None]).squeeze(-1)
    return torch.cat([rotation, translation[..., None]], dim=-1)


def box_crop_matrix(boxes: torch.Tensor, size: int, face_scale: float = 1.0) -> torch.Tensor:
    """Crop a square around each box (x1, y1, x2, y2 boundary coordinates, side = box's longer side) onto a
    ``size`` crop, then shrink by ``face_scale`` about the center. boxes (F, 4) -> (F, 2, 3) float64."""
    boxes = boxes.to(torch.float64)
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(-1).clamp_min(1e-6)
    scale = size / side * face_scale
    zeros = torch.zeros_like(scale)
    # x' = (x - cx) * scale + (size - 1) / 2 : box edges land on the crop's outer edges for face_scale = 1.
    offset = (size - 1) / 2.0
    row_x = torch.stack([scale, zeros, offset - center[:, 0] * scale], -1)
    row_y = torch.stack([zeros, scale, offset - center[:, 1] * scale], -1)
    return torch.stack([row_x, row_y], 1)


def resize_matrix(height: int, width: int, out_height: int, out_width: int) -> torch.Tensor:
    """(2, 3) pixel-index matrix of a plain resize (image edges onto crop edges)."""
    sx, sy = out_width / width, out_height / height
    return torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]], dtype=torch.float64)


def to_homogeneous(matrices: torch.Tensor) -> torch.Tensor:
    bottom = torch.zeros(matrices.shape[:-2] + (1, 3), dtype=matrices.dtype, device=matrices.device)
    bottom[..., 0, 2] = 1
    return torch.cat([matrices, bottom], dim=-2)


def invert_affine(matrices: torch.Tensor) -> torch.Tensor:
    """(..., 2, 3) -> (..., 2, 3) inverse."""
    return torch.linalg.inv(to_homogeneous(matrices.to(torch.float64)))[..., :2, :]


def transform_points(matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """matrices (F, 2, 3), points (F, P, 2) -> (F, P, 2), in the points' dtype."""
    m = matrices.to(torch.float64)
    p = points.to(torch.float64)
    return (p @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]).to(points.dtype)


def matrix_scale(matrices: torch.Tensor) -> torch.Tensor:
    """Isotropic scale (crop pixels per image pixel) of each (2, 3) matrix."""
    return torch.sqrt(torch.abs(torch.linalg.det(matrices[..., :2].to(torch.float64))))


def sampling_grid(matrices: torch.Tensor, source_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """grid_sample grid (F, h, w, 2) that fills a crop of ``out_size`` from a source of ``source_size`` (h, w)
    through the crop matrices (image -> crop). align_corners=False normalization: (p + 0.5) / size * 2 - 1."""
    inverse = invert_affine(matrices)
    out_h, out_w = out_size
    src_h, src_w = source_size
    device = matrices.device
    ys = torch.arange(out_h, dtype=torch.float64, device=device)
    xs = torch.arange(out_w, dtype=torch.float64, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    crop_points = torch.stack([grid_x, grid_y], -1).reshape(1, -1, 2).expand(matrices.shape[0], -1, -1)
    source_points = transform_points(inverse, crop_points)
    normalized = torch.empty_like(source_points)
    normalized[..., 0] = (source_points[..., 0] + 0.5) / src_w * 2 - 1
    normalized[..., 1] = (source_points[..., 1] + 0.5) / src_h * 2 - 1
    return normalized.reshape(-1, out_h, out_w, 2)


def _halve(image: torch.Tensor) -> torch.Tensor:
    """2x box downsample (antialiasing for large downscales); odd sizes are padded by edge replication."""
    h, w = image.shape[-2:]
    if h % 2 or w % 2:
        image = F.pad(image, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(image, 2)


def rescale_source_matrix(matrices: torch.Tensor, factor: float) -> torch.Tensor:
    """Rewrite image->crop matrices for a source resized so that one new pixel spans ``factor`` old pixels
    (p = factor * (p_new + 0.5) - 0.5)."""
    if factor == 1:
        return matrices
    out = matrices.clone()
    out[..., :2] = matrices[..., :2] * factor
    out[..., 2] = matrices[..., 2] + (matrices[..., :2].sum(-1)) * (0.5 * factor - 0.5)
    return out


def warp_faces(image: torch.Tensor, matrices: torch.Tensor, out_size: tuple[int, int],
               mode: str = "bilinear", antialias: bool = True) -> torch.Tensor:
    """Crops of one image. image (C, H, W) float, matrices (F, 2, 3) image->crop -> (F, C, h, w).

    With ``antialias`` (photos), faces whose crop shrinks the image by more than 2x are sampled from a 2x
    box-filtered pyramid level, so small crops of large faces do not alias. Without it every crop samples the image
    itself, bilinear with no prefilter, as OpenCV ``remap`` / ``warpAffine`` do (the official dataset crops). Outside
    the image is zero (padding, not shifting).
    """
    if matrices.shape[0] == 0:
        return image.new_zeros((0, image.shape[0]) + tuple(out_size))
    if antialias:
        scales = matrix_scale(matrices)
        levels = torch.clamp(torch.floor(torch.log2(1.0 / scales.clamp_min(1e-9))), min=0).long().tolist()
    else:
        levels = [0] * matrices.shape[0]
    out = image.new_empty((matrices.shape[0], image.shape[0]) + tuple(out_size))
    level_image, current = image[None], 0
    for level in sorted(set(levels)):
        while current < level and min(level_image.shape[-2:]) > 1:
            level_image = _halve(level_image)
            current += 1
        picked = [i for i, value in enumerate(levels) if value == level]
        level_matrices = rescale_source_matrix(matrices[picked].to(torch.float64), 2.0**current)
        grid = sampling_grid(level_matrices, tuple(level_image.shape[-2:]), out_size).to(image.dtype)
        source = level_image.expand(len(picked), -1, -1, -1)
        out[picked] = F.grid_sample(source, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out


def translation(dx: float, dy: float, device=None) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=torch.float64, device=device)


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """outer(inner(p)) for (..., 2, 3) matrices."""
    return (to_homogeneous(outer.to(torch.float64)) @ to_homogeneous(inner.to(torch.float64)))[..., :2, :]


def crop_footprint(matrix: torch.Tensor, crop_size: tuple[int, int], image_size: tuple[int, int]):
    """Integer pixel region (x0, y0, x1, y1), end-exclusive, of the image covered by a crop; None if empty."""
    h, w = crop_size
    corners = torch.tensor([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]], dtype=torch.float64)
    points = transform_points(invert_affine(matrix[None]), corners[None])[0]
    x0 = max(0, math.floor(points[:, 0].min().item() + 0.5))
    y0 = max(0, math.floor(points[:, 1].min().item() + 0.5))
    x1 = min(image_size[1], math.ceil(points[:, 0].max().item() + 0.5))
    y1 = min(image_size[0], math.ceil(points[:, 1].max().item() + 0.5))
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def unwarp_map(face_map: torch.Tensor, matrix: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of ``warp_faces`` for one face's map over an image region: face_map (C, h, w) in crop space,
    matrix (2, 3) image->crop, region (x0, y0, x1, y1) -> (C, y1 - y0, x1 - x0) bilinear, zeros outside the crop."""
    x0, y0, x1, y1 = region
    region_to_crop = compose(matrix, translation(x0, y0, matrix.device))  # region pixel index -> crop pixel index
    grid = sampling_grid(invert_affine(region_to_crop[None]), tuple(face_map.shape[-2:]), (y1 - y0, x1 - x0))
    return F.grid_sample(face_map[None], grid.to(face_map.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0]


def rotation_about(angle_degrees: float, center: tuple[float, float]) -> torch.Tensor:
    """(2, 3) rotation of image points about ``center`` (y down, positive = clockwise on screen)."""
    angle = math.radians(angle_degrees)
    c, s = math.cos(angle), math.sin(angle)
    cx, cy = center
    return torch.tensor([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]], dtype=torch.float64)
