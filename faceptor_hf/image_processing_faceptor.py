"""Image processor for Faceptor: turns face crops into the two model inputs with per-group normalisation.

The released weights were trained with two different normalisations (see the model card):
112-px tasks read x/255 mapped to [-1, 1]; 512-px tasks read x/255 normalised with CLIP mean/std.
This processor takes face crops that are already aligned (the aligned-face datasets' convention) and resizes them
with PIL bilinear resampling, as the official test transforms do.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def to_rgb_array(image, index: int = 0) -> np.ndarray:
    """Any supported image -> (H, W, 3) float32 RGB in [0, 1].

    Accepts PIL images of any mode (grayscale, RGBA, palette, CMYK, 16-bit), numpy arrays (HW, HWC or CHW; uint8,
    uint16 or float in [0, 1]) and torch tensors of the same layouts. Raises ``ValueError`` naming the image.
    """
    if isinstance(image, PIL.Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float32) / (65535.0 if image.mode.startswith("I;16") else max(
                1.0, float(np.asarray(image).max())))
            return np.repeat(np.clip(array, 0, 1)[..., None], 3, axis=-1)
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
            background = PIL.Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = PIL.Image.alpha_composite(background, image)
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image {index}: unsupported type {type(image).__name__}; give PIL, numpy or torch images")
    array = image
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"image {index}: expected 2-D or 3-D pixels, got shape {image.shape}")
    if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image {index}: expected 1, 3 or 4 channels, got shape {image.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    else:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"image {index}: contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"image {index}: float pixels must lie in [0, 1], got [{array.min()}, {array.max()}]")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        array = array[..., :3] * array[..., 3:]
    return array


class FaceptorImageProcessor(BaseImageProcessor):
    r"""Prepares aligned face crops for [`FaceptorModel`].

    Args:
        size (`dict`): output of the identity/attribute branch, ``{"height": 112, "width": 112}``.
        dense_size (`dict`): output of the dense branch, ``{"height": 512, "width": 512}``.
        image_mean, image_std: normalisation of the 112 branch (0.5, 0.5 -> [-1, 1]).
        dense_image_mean, dense_image_std: normalisation of the dense branch (CLIP statistics).
    """

    model_input_names = ["pixel_values", "dense_pixel_values"]

    def __init__(self, size=None, dense_size=None, image_mean=None, image_std=None, dense_image_mean=None,
                 dense_image_std=None, **kwargs):
        super().__init__(**kwargs)
        self.size = size or {"height": 112, "width": 112}
        self.dense_size = dense_size or {"height": 512, "width": 512}
        self.image_mean = list(image_mean or [0.5, 0.5, 0.5])
        self.image_std = list(image_std or [0.5, 0.5, 0.5])
        self.dense_image_mean = list(dense_image_mean or CLIP_MEAN)
        self.dense_image_std = list(dense_image_std or CLIP_STD)

    @staticmethod
    def _resize_normalise(array: np.ndarray, size: dict, mean, std) -> torch.Tensor:
        height, width = size["height"], size["width"]
        if array.shape[:2] != (height, width):
            channels = [PIL.Image.fromarray(array[..., c], mode="F").resize((width, height), PIL.Image.BILINEAR)
                        for c in range(3)]
            array = np.stack([np.asarray(c, dtype=np.float32) for c in channels], axis=-1)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        return (tensor - mean) / std

    def preprocess(self, images, return_pixel_values: bool = True, return_dense_pixel_values: bool = True,
                   return_tensors="pt", **kwargs) -> BatchFeature:
        """images: one aligned face crop or a list of them -> BatchFeature with ``pixel_values`` (B, 3, 112, 112)
        and ``dense_pixel_values`` (B, 3, 512, 512), float32."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("no images given")
        small, dense = [], []
        for index, image in enumerate(images):
            array = to_rgb_array(image, index)
            if min(array.shape[:2]) < 1:
                raise ValueError(f"image {index}: empty image of shape {array.shape}")
            if return_pixel_values:
                small.append(self._resize_normalise(array, self.size, self.image_mean, self.image_std))
            if return_dense_pixel_values:
                dense.append(self._resize_normalise(array, self.dense_size, self.dense_image_mean,
                                                    self.dense_image_std))
        data = {}
        if small:
            data["pixel_values"] = torch.stack(small)
        if dense:
            data["dense_pixel_values"] = torch.stack(dense)
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["FaceptorImageProcessor", "CLIP_MEAN", "CLIP_STD"]
