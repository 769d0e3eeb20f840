"""Decoding any user image into an RGB float tensor, with clear errors for bad input.

Accepts what transformers' image pipelines accept (``transformers.image_utils.load_image``: file paths, http(s)
URLs, ``data:image/...;base64,`` strings, PIL images) and more: bytes, PIL images of any mode (grayscale, RGBA,
palette, CMYK, 16-bit), numpy arrays and torch tensors (HW, HWC or CHW; uint8, uint16 or float in [0, 1]). EXIF
orientation is applied. Images larger than ``max_pixels`` are refused before decoding (decompression bombs).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000; PIL's own bomb warning starts at ~89M
DOWNLOAD_TIMEOUT_S = 30.0


class ImageLoadError(ValueError):
    """An input image could not be used; the message names the image and the problem."""


class ImageTooLargeError(ImageLoadError):
    """The image has more pixels than ``max_pixels`` allows (refused before decoding where the header tells)."""


class UnrecognizedImageError(ImageLoadError):
    """The data is not an image format PIL can read (e.g. a text file)."""


def image_name(image, index: int) -> str:
    """How messages name an input: its path or URL, else its position in the call."""
    if isinstance(image, str) and image.startswith("data:"):
        return f"image {index} (data URI)"
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return f"image {index}"


def _is_url(image) -> bool:
    return isinstance(image, str) and image.startswith(("http://", "https://"))


def _fetch(url: str, name: str) -> bytes:
    """The bytes behind an http(s) URL (decoded afterwards like a file's, with the same checks)."""
    from huggingface_hub.utils import httpx  # the HTTP client transformers' load_image uses

    try:
        response = httpx.get(url, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise ImageLoadError(f"{name}: cannot be downloaded ({error})") from error
    return response.content


def _data_uri_bytes(uri: str, name: str) -> bytes:
    try:
        return base64.b64decode(uri.split(",", 1)[1], validate=True)
    except (IndexError, binascii.Error) as error:
        raise ImageLoadError(f"{name}: not a valid base64 data URI") from error


def _open(image, name: str, max_pixels: int) -> PIL.Image.Image:
    source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
    if isinstance(image, (str, os.PathLike)):
        if not os.path.exists(image):
            raise ImageLoadError(f"{name}: no such file")
        if os.path.getsize(image) == 0:
            raise ImageLoadError(f"{name}: empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
        try:
            opened = PIL.Image.open(source)
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as error:
            raise ImageTooLargeError(f"{name}: image too large to decode safely ({error})") from error
        except PIL.UnidentifiedImageError as error:
            raise UnrecognizedImageError(f"{name}: not a recognized image file") from error
        except OSError as error:
            raise ImageLoadError(f"{name}: cannot be read ({error})") from error
        width, height = opened.size
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
                "(decompression-bomb protection; raise max_pixels to allow it)")
        try:
            opened.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageLoadError(f"{name}: corrupt or truncated image data ({error})") from error
    return opened


def pil_to_array(image: PIL.Image.Image) -> np.ndarray:
    """PIL image of any mode -> (H, W, 3) float32 RGB in [0, 1]; transparency is composited on black."""
    image = PIL.ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(array[..., None], 3, axis=-1)
    if image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float32)
        top = 65535.0 if array.max() > 255 else 255.0
        return np.repeat(np.clip(array / top, 0, 1)[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
        rgba = np.asarray(image, dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:]
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def array_to_rgb(array, name: str) -> np.ndarray:
    """numpy/torch pixels (HW, HWC or CHW) -> (H, W, 3) float32 in [0, 1]."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    original_shape = array.shape
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ImageLoadError(f"{name}: expected 2-D or 3-D pixels, got shape {original_shape}")
    if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.shape[-1] not in (1, 3, 4):
        raise ImageLoadError(f"{name}: expected 1, 3 or 4 channels, got shape {original_shape}")
    if min(array.shape[:2]) < 1:
        raise ImageLoadError(f"{name}: empty image of shape {original_shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    elif array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ImageLoadError(f"{name}: unsupported pixel type {array.dtype}")
    else:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{name}: contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise ImageLoadError(
                f"{name}: float pixels must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        array = array[..., :3] * array[..., 3:]
    return np.ascontiguousarray(array)


def load_image(image, index: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Any supported image -> (3, H, W) float32 RGB tensor in [0, 1]. Raises ``ImageLoadError``."""
    name = image_name(image, index)
    if _is_url(image):
        image = _fetch(image, name)
    elif isinstance(image, str) and image.startswith("data:"):
        image = _data_uri_bytes(image, name)
    if isinstance(image, (str, os.PathLike, bytes, bytearray)):
        array = pil_to_array(_open(image, name, max_pixels))
    elif isinstance(image, PIL.Image.Image):
        if image.size[0] * image.size[1] > max_pixels:
            raise ImageTooLargeError(
                f"{name}: {image.size[0]}x{image.size[1]} pixels exceeds the limit of {max_pixels:,}")
        array = pil_to_array(image)
    elif isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.float32:
        # (3, H, W) float pixels, torch's layout and what this function returns (so even a 1x1 image round-trips):
        # validate without copying to numpy.
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ImageLoadError(f"{name}: float pixels must be finite and lie in [0, 1]")
        if image.shape[1] * image.shape[2] > max_pixels:
            raise ImageTooLargeError(
                f"{name}: {image.shape[2]}x{image.shape[1]} pixels exceeds the limit of {max_pixels:,}")
        return image.contiguous()
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        array = array_to_rgb(image, name)
    else:
        raise ImageLoadError(f"{name}: unsupported input type {type(image).__name__}; give a path, URL, PIL "
                             "image, numpy array or torch tensor")
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {array.shape[1]}x{array.shape[0]} pixels exceeds the limit of {max_pixels:,}")
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
