"""The one row -> crop rule: official box crop, zoom about the centre, whole-image resizes without a dark rim,
and exact inverse mapping of points."""

import torch

from faceptor_hf.data.geometry import (
    box_crop_matrix_official,
    centre_similarity,
    horizontal_flip,
    row_matrix,
    unwarp_points,
    warp_image,
    warp_mask,
    warp_points,
)
from faceptor_hf.face_alignment import compose


def test_box_edges_land_on_the_crop_edges_and_zoom_shrinks_about_the_centre():
    matrix = box_crop_matrix_official([10, 20, 110, 220], 512)  # anisotropic: 100 x 200 box
    corners = warp_points(torch.tensor([[10.0, 20.0], [110.0, 220.0]]), matrix)
    torch.testing.assert_close(corners, torch.tensor([[-0.5, -0.5], [511.5, 511.5]], dtype=torch.float64))
    zoomed = row_matrix({"face_box": [10, 20, 110, 220]}, "dense_pixel_values", (300, 300), zoom=0.8)
    centre = warp_points(torch.tensor([[60.0, 120.0]]), zoomed)  # the box centre is the crop centre
    torch.testing.assert_close(centre, torch.tensor([[255.5, 255.5]], dtype=torch.float64))
    points = torch.tensor([[30.0, 40.0], [90.0, 200.0]])
    torch.testing.assert_close(unwarp_points(warp_points(points, zoomed), zoomed), points.double())


def test_centre_similarity_and_flip_fix_the_centre():
    for matrix in (centre_similarity(512, 0.9, 0.3, (0.0, 0.0)), horizontal_flip(512)):
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
