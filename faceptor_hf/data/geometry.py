"""The row -> crop rule under its package path: the geometry lives in the shipped ``dataset_crops`` (the image
processor applies it, ``FaceptorImageProcessor.crop_row``), so that a saved processor crops rows as training and
evaluation do. Kept so that ``faceptor_hf.data.geometry`` imports go on working."""

from ..dataset_crops import (
    box_crop_matrix_official,
    center_similarity,
    horizontal_flip,
    is_whole_image,
    resize_whole_image,
    row_matrix,
    unwarp_points,
    warp_image,
    warp_mask,
    warp_points,
    whole_image_matrix,
)

__all__ = ["box_crop_matrix_official", "center_similarity", "horizontal_flip", "is_whole_image", "resize_whole_image",
           "row_matrix", "unwarp_points", "warp_image", "warp_mask", "warp_points", "whole_image_matrix"]
