"""The one row -> crop rule: official box crop, zoom about the center, whole-image resizes without a dark rim,
exact inverse mapping of points, and the official resamplers' pixels (OpenCV, PIL, timm) on real photos."""

from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import torch

from faceptor_hf.dataset_crops import (
    box_crop_matrix_official,
    center_similarity,
    horizontal_flip,
    row_matrix,
    unwarp_points,
    warp_image,
    warp_mask,
    warp_points,
)
from faceptor_hf.face_alignment import compose, invert_affine, warp_faces


def test_box_edges_land_on_the_crop_edges_and_zoom_shrinks_about_the_center():
    matrix = box_crop_matrix_official([10, 20, 110, 220], 512)  # anisotropic: 100 x 200 box
    corners = warp_points(torch.tensor([[10.0, 20.0], [110.0, 220.0]]), matrix)
    torch.testing.assert_close(corners, torch.tensor([[-0.5, -0.5], [511.5, 511.5]], dtype=torch.float64))
    zoomed = row_matrix({"face_box": [10, 20, 110, 220]}, "dense_pixel_values", (300, 300), zoom=0.8)
    center = warp_points(torch.tensor([[60.0, 120.0]]), zoomed)  # the box center is the crop center
    torch.testing.assert_close(center, torch.tensor([[255.5, 255.5]], dtype=torch.float64))
    points = torch.tensor([[30.0, 40.0], [90.0, 200.0]])
    torch.testing.assert_close(unwarp_points(warp_points(points, zoomed), zoomed), points.double())


def test_center_similarity_and_flip_fix_the_center():
    for matrix in (center_similarity(512, 0.9, 0.3, (0.0, 0.0)), horizontal_flip(512)):
        torch.testing.assert_close(warp_points(torch.tensor([[255.5, 255.5]]), matrix),
                                   torch.tensor([[255.5, 255.5]], dtype=torch.float64))


def test_whole_image_upsample_repeats_the_edges_instead_of_darkening_them():
    image = torch.full((3, 48, 48), 0.8)
    matrix = row_matrix({}, "pixel_values", (48, 48))
    crop = warp_image(image, matrix, 112, whole_image=True)
    torch.testing.assert_close(crop, torch.full((3, 112, 112), 0.8))
    sampled = warp_image(image, matrix, 112)  # plain sampling blends the zero padding into the outer ring
    assert sampled[:, 0, 0].max() < 0.7
    flipped = warp_image(image, compose(horizontal_flip(112), matrix), 112, whole_image=True)
    torch.testing.assert_close(flipped, crop)


def test_masks_warp_by_nearest_with_background_outside():
    mask = torch.zeros(64, 64, dtype=torch.long)
    mask[16:48, 16:48] = 3
    matrix = box_crop_matrix_official([0, 0, 64, 64], 128)
    warped = warp_mask(mask, matrix, 128)
    assert warped.unique().tolist() == [0, 3] and warped[64, 64] == 3 and warped[0, 0] == 0
    outside = warp_mask(mask, box_crop_matrix_official([-64, -64, 128, 128], 96), 96)
    assert outside[0, 0] == 0 and outside[48, 48] == 3


# ---- Pixel parity with the official resamplers (OpenCV for the dense pipeline, PIL / timm at 112 px) -------------
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def _photo(name: str) -> np.ndarray:
    return np.asarray(PIL.Image.open(EXAMPLES / name).convert("RGB"))


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255


def _gray_levels(crop: torch.Tensor, reference: np.ndarray) -> np.ndarray:
    """|ours - reference| in gray levels, ours rounded to uint8 as the official pipelines hold it."""
    ours = (crop.permute(1, 2, 0).numpy() * 255).round()
    return np.abs(ours - reference.astype(np.float64))


def test_celebamask_hq_1024_to_512_is_opencv_s_inter_linear_resize():
    # A real 1024-px photo: the astronaut portrait tiled 2 x 2 (full-resolution detail, no upsampling blur).
    photo = np.tile(_photo("astronaut.png"), (2, 2, 1))
    matrix = row_matrix({}, "dense_pixel_values", (1024, 1024))
    for training in (False, True):
        crop = warp_image(_tensor(photo), matrix, 512, whole_image=True, training=training)
        error = _gray_levels(crop, cv2.resize(photo, (512, 512), interpolation=cv2.INTER_LINEAR))
        assert error.max() <= 1 and error.mean() < 0.1  # OpenCV's 11-bit fixed-point weights: rounding only
    # Not a 2x factor and not square (a user's pre-cropped 600 x 512 photo): still OpenCV's resize.
    grace = _photo("grace_hopper.jpg")
    crop = warp_image(_tensor(grace), row_matrix({}, "dense_pixel_values", grace.shape[:2]), 512, whole_image=True)
    error = _gray_levels(crop, cv2.resize(grace, (512, 512), interpolation=cv2.INTER_LINEAR))
    assert error.max() <= 1 and error.mean() < 0.2


def test_already_cropped_112_px_images_follow_the_official_test_and_training_transforms():
    grace = _photo("grace_hopper.jpg")  # 512 wide, 600 high
    small = np.asarray(PIL.Image.fromarray(grace).resize((100, 100), PIL.Image.LANCZOS))  # RAF-DB-sized crop
    for pixels in (grace, small):
        height, width = pixels.shape[:2]
        # Evaluation: torchvision Resize([112, 112]) on the PIL image = PIL bilinear, the whole image squashed.
        matrix = row_matrix({}, "pixel_values", (height, width))
        crop = warp_image(_tensor(pixels), matrix, 112, whole_image=True)
        expected = np.asarray(PIL.Image.fromarray(pixels).resize((112, 112), PIL.Image.BILINEAR))
        assert _gray_levels(crop, expected).max() == 0
        # Training: timm RandomResizedCrop(112, scale=(1, 1), ratio=(1, 1), bicubic) falls back to the center
        # square (integer offsets), then PIL bicubic.
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        expected = np.asarray(PIL.Image.fromarray(pixels).crop((left, top, left + side, top + side))
                              .resize((112, 112), PIL.Image.BICUBIC))
        matrix = row_matrix({}, "pixel_values", (height, width), training=True)
        crop = warp_image(_tensor(pixels), matrix, 112, whole_image=True, training=True)
        assert _gray_levels(crop, expected).max() == 0
        # The matrix describes that crop: the square's corners are the crop's corners.
        corners = torch.tensor([[left - 0.5, top - 0.5], [left + side - 0.5, top + side - 0.5]])
        torch.testing.assert_close(warp_points(corners, matrix),
                                   torch.tensor([[-0.5, -0.5], [111.5, 111.5]], dtype=torch.float64))
        # A training flip is the mirror of that crop.
        flipped = warp_image(_tensor(pixels), compose(horizontal_flip(112), matrix), 112, whole_image=True,
                             training=True)
        torch.testing.assert_close(flipped, crop.flip(-1))


def test_large_box_crops_are_sampled_as_opencv_remap_without_prefilter():
    # A 1200-px face box (zoom 0.8, the 300W/WFLW protocol) in a 1536-px photo: the crop shrinks 2.9x.
    photo = np.tile(_photo("astronaut.png"), (3, 3, 1))
    matrix = row_matrix({"face_box": [150.0, 180.0, 1350.0, 1380.0]}, "dense_pixel_values", photo.shape[:2],
                        zoom=0.8)
    crop = warp_image(_tensor(photo), matrix, 512)
    # blueprint's GetTransformMap + TransformByMap: per-pixel source maps through the inverse matrix, cv2.remap.
    inverse = invert_affine(matrix[None])[0].numpy()
    ys, xs = np.mgrid[0:512, 0:512].astype(np.float64)
    map_x = (inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]).astype(np.float32)
    map_y = (inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]).astype(np.float32)
    remapped = cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warped = cv2.warpAffine(photo, matrix.numpy(), (512, 512), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    for reference in (remapped, warped):
        error = _gray_levels(crop, reference)
        assert error.max() <= 1 and error.mean() < 0.05
    # The photo pipeline's anti-aliased sampling of the same crop is what the protocol must not use.
    smoothed = warp_faces(_tensor(photo), matrix[None], (512, 512))[0]
    assert _gray_levels(smoothed, remapped).max() > 10
