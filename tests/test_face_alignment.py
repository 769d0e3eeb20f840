"""Geometry of the image processor: warp then inverse must round-trip points (< 0.5 px) and masks, at any angle."""

import pytest
import torch

from faceptor_hf import FaceptorImageProcessor
from faceptor_hf.face_alignment import (
    arcface_template,
    box_crop_matrix,
    crop_footprint,
    farl_template,
    invert_affine,
    rotation_about,
    similarity_transform,
    transform_points,
    unwarp_map,
    warp_faces,
)

FACE = torch.tensor([[204.7, 101.0], [247.3, 103.4], [223.6, 129.4], [202.6, 138.2], [244.4, 140.4]],
                    dtype=torch.float64)


def dot_centroid(crop):
    ys, xs = torch.meshgrid(torch.arange(crop.shape[0], dtype=torch.float64),
                            torch.arange(crop.shape[1], dtype=torch.float64), indexing="ij")
    weights = crop.double()
    return torch.stack([(weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()])


@pytest.mark.parametrize("angle", [0, 90, -90, 180, 37])
@pytest.mark.parametrize("branch", ["small", "dense"])
def test_point_round_trip_through_pixels(angle, branch):
    """A one-pixel dot is warped into the crop, located there, and mapped back: a half-pixel convention slip would
    show up as a ~0.5 px error."""
    height, width = 320, 400
    keypoints = transform_points(rotation_about(angle, (200, 160))[None], (FACE * 0.7 + 40)[None])
    processor = FaceptorImageProcessor()
    m112, m512 = processor.face_matrices(height, width, keypoints, None)
    matrix, size = (m112, 112) if branch == "small" else (m512, 512)
    target = transform_points(invert_affine(matrix), torch.tensor([[[size * 0.45, size * 0.55]]], dtype=torch.float64))
    x, y = (round(v) for v in target[0, 0].tolist())
    image = torch.zeros(1, height, width, dtype=torch.float64)
    image[0, y, x] = 1.0
    crop = warp_faces(image, matrix, (size, size))[0, 0]
    back = transform_points(invert_affine(matrix), dot_centroid(crop)[None, None])[0, 0]
    assert (back - torch.tensor([x, y], dtype=torch.float64)).norm() < 0.5


@pytest.mark.parametrize("angle", [0, 90, 23])
def test_mask_round_trip(angle):
    """A label map warped into the dense crop (nearest) and warped back agrees with the original inside the crop."""
    height, width = 300, 360
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    labels = ((yy // 40) * 7 + (xx // 45)) % 5
    keypoints = transform_points(rotation_about(angle, (180, 150))[None], (FACE * 0.8 + 10)[None])
    _, matrix = FaceptorImageProcessor().face_matrices(height, width, keypoints, None)
    crop = warp_faces(labels[None].double(), matrix, (512, 512), mode="nearest")[0]
    one_hot = torch.nn.functional.one_hot(crop[0].long(), 5).permute(2, 0, 1).double()
    region = crop_footprint(matrix[0], (512, 512), (height, width))
    restored = unwarp_map(one_hot, matrix[0], region).argmax(0)
    x0, y0, x1, y1 = region
    original = labels[y0:y1, x0:x1]
    # compare away from the label edges (nearest + bilinear blur a one-pixel band) and inside the crop
    inside = unwarp_map(torch.ones(1, 512, 512, dtype=torch.float64), matrix[0], region)[0] > 0.999
    edge = torch.zeros_like(original, dtype=torch.bool)
    edge[:, 1:] |= original[:, 1:] != original[:, :-1]
    edge[1:, :] |= original[1:, :] != original[:-1, :]
    edge = torch.nn.functional.max_pool2d(edge[None, None].float(), 5, 1, 2)[0, 0] > 0
    keep = inside & ~edge
    assert keep.sum() > 1000
    agreement = (restored[keep] == original[keep]).double().mean().item()
    assert agreement > 0.995


def test_similarity_maps_template_exactly():
    target = arcface_template(112)
    angle = torch.tensor(0.3, dtype=torch.float64)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]) * 2.5
    source = (target @ rot.T + torch.tensor([30.0, -12.0], dtype=torch.float64))[None]
    matrix = similarity_transform(source, target)
    torch.testing.assert_close(transform_points(matrix, source)[0], target, atol=1e-9, rtol=0)


def test_templates_and_box_crop():
    template = farl_template(512, 1.0)
    torch.testing.assert_close(template[0], torch.tensor([196 * 511 / 512, 226 * 511 / 512], dtype=torch.float64))
    shrunk = farl_template(512, 0.5)
    torch.testing.assert_close(shrunk.mean(0) - 255.5, (template.mean(0) - 255.5) * 0.5)
    matrix = box_crop_matrix(torch.tensor([[10.0, 20.0, 110.0, 120.0]]), 512)
    corners = transform_points(matrix, torch.tensor([[[10.0, 20.0], [110.0, 120.0]]]))[0]
    torch.testing.assert_close(corners, torch.tensor([[-0.5, -0.5], [511.5, 511.5]]), atol=1e-5, rtol=0)


def test_border_faces_are_padded_not_shifted():
    image = torch.ones(3, 200, 200)
    keypoints = FACE[None] - torch.tensor([200.0, 95.0], dtype=torch.float64)  # face cut by the top-left corner
    processor = FaceptorImageProcessor()
    out = processor(image, face_keypoints=keypoints.numpy())
    small = out["pixel_values"][0] * 0.5 + 0.5
    assert (small < 0.01).all(dim=0).any() and (small > 0.99).all(dim=0).any()  # both padding and image content
    matrix = out.geometry.affine_matrices[0]
    inside = transform_points(matrix[None], torch.tensor([[[0.0, 0.0]]], dtype=torch.float64))[0, 0].round().long()
    assert small[:, inside[1].clamp(0, 111) + 2, inside[0].clamp(0, 111) + 2].min() > 0.9


def test_large_faces_are_antialiased():
    """A fine checkerboard shrunk 8x must average to gray instead of aliasing."""
    yy, xx = torch.meshgrid(torch.arange(896), torch.arange(896), indexing="ij")
    board = ((yy + xx) % 2).double()[None]
    matrix = box_crop_matrix(torch.tensor([[0.0, 0.0, 896.0, 896.0]]), 112)
    crop = warp_faces(board, matrix, (112, 112))[0, 0]
    assert abs(crop[10:-10, 10:-10].mean().item() - 0.5) < 0.02
    assert crop[10:-10, 10:-10].std().item() < 0.05
