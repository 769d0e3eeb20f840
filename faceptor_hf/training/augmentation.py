"""Training augmentations of the two input groups, in torch and PIL (``docs/datasets-and-evaluation.md`` §2.3, §2.6,
§3, §4.13).

* 112-px crops (``Augmentation112``): horizontal flip, RandAugment as the official timm setting
  ``rand-m9-mstd0.5-inc1`` (2 ops, magnitude N(9, 0.5), the increasing-severity op set, gray fill 128), then random
  erasing on the normalized tensor (p 0.25, per-pixel N(0, 1) noise). Recognition uses the flip only.
* 512-px crops (``Augmentation512``): a random similarity about the crop center composed with the row's crop matrix
  (landmarks: uniform shift / rotation / scale; parsing: Gaussian rotation and scale), photometric changes on the
  warped [0, 1] image (landmarks: occlusion, noise fusion, gray, gamma, blur; parsing: gray, gamma, blur), and —
  an option the official recipes leave off — label-consistent horizontal flips.

Every random number comes from the ``numpy.random.Generator`` passed in, so an example is reproducible from its
generator's seed alone (the trainer seeds one per sample, which makes a resumed run draw the same augmentations).
Geometry is expressed as (2, 3) crop matrices so labels follow the image through ``data.geometry``.
Shapes: images (3, H, W) float.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import PIL.ImageOps
import torch
import torch.nn.functional as F

from ..data.geometry import center_similarity
from ..task_types import FaceptorTask, get_task_type

_DISTRIBUTIONS = ("uniform", "normal")


def _check_probabilities(settings, names):
    for name in names:
        value = getattr(settings, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{type(settings).__name__}.{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class Augmentation112:
    """Settings of the 112-px pipeline (``pixel_values`` tasks). Defaults: the official attribute/age/expression
    training transform (timm ``rand-m9-mstd0.5-inc1``, RandomErasing p 0.25 pixel mode, flip 0.5).

    Attributes:
        flip_probability: horizontal flip (labels permuted by the task type's ``flip_permutation``).
        rand_augment_ops: ops drawn per image, with replacement (0 switches RandAugment off).
        rand_augment_magnitude, rand_augment_magnitude_std: magnitude ~ N(mean, std) per op, clipped to [0, 10].
        rand_augment_probability: chance that each drawn op is applied.
        fill: gray level of the area that rotations, shears and translations uncover.
        erasing_probability: chance of one random-erasing box (on the normalized tensor, N(0, 1) noise).
        erasing_area: box area range, as fractions of the image.
        erasing_aspect: box height/width range (drawn log-uniformly).
    """

    flip_probability: float = 0.5
    rand_augment_ops: int = 2
    rand_augment_magnitude: float = 9.0
    rand_augment_magnitude_std: float = 0.5
    rand_augment_probability: float = 0.5
    fill: int = 128
    erasing_probability: float = 0.25
    erasing_area: tuple[float, float] = (0.02, 1 / 3)
    erasing_aspect: tuple[float, float] = (0.3, 1 / 0.3)

    model_input = "pixel_values"

    def __post_init__(self):
        _check_probabilities(self, ("flip_probability", "rand_augment_probability", "erasing_probability"))


@dataclass(frozen=True)
class Augmentation512:
    """Settings of the 512-px pipeline (``dense_pixel_values`` tasks). Defaults: the official landmark training
    (``LANDMARK_AUGMENTATION``); ``PARSING_AUGMENTATION`` holds the parsing one.

    Attributes:
        shift: translation per axis as a fraction of the crop side, uniform in [-shift, shift].
        rotation: radians; uniform in [-rotation, rotation] or normal with std ``rotation``
            (``rotation_distribution``).
        scale: offset added to the crop's zoom (test-time zoom, 1 where none): uniform in [-scale, scale] or normal
            with std ``scale`` (``scale_distribution``). E.g. 300W (zoom 0.8) trains at scales U[0.7, 0.9].
        occlusion: black out one random rectangle (10-40 % of the side) on every image.
        noise_fusion_probability: blend with uniform noise, weight U[0, 0.5).
        gray_probability: replace by its gray level (0.299 R + 0.587 G + 0.114 B).
        gamma: clamp to [0, 1], then square root, identity or square, uniformly.
        blur_fraction: box blur of side int(mean(H, W) * U[0, blur_fraction)) where that exceeds 1 pixel.
        flip_probability: label-consistent horizontal flip (landmark order / left-right classes swapped by the
            task type's ``flip_permutation``). Off in the official recipes.
    """

    shift: float = 0.05
    rotation: float = 0.174
    rotation_distribution: str = "uniform"
    scale: float = 0.1
    scale_distribution: str = "uniform"
    occlusion: bool = True
    noise_fusion_probability: float = 0.5
    gray_probability: float = 0.1
    gamma: bool = True
    blur_fraction: float = 0.01
    flip_probability: float = 0.0

    model_input = "dense_pixel_values"

    def __post_init__(self):
        _check_probabilities(self, ("noise_fusion_probability", "gray_probability", "flip_probability"))
        for name in ("rotation_distribution", "scale_distribution"):
            if getattr(self, name) not in _DISTRIBUTIONS:
                raise ValueError(f"Augmentation512.{name} must be one of {list(_DISTRIBUTIONS)}, "
                                 f"got {getattr(self, name)!r}")


Augmentation = Augmentation112 | Augmentation512

RECOGNITION_AUGMENTATION = Augmentation112(rand_augment_ops=0, erasing_probability=0.0)
ATTRIBUTE_AUGMENTATION = Augmentation112()
LANDMARK_AUGMENTATION = Augmentation512()
PARSING_AUGMENTATION = Augmentation512(shift=0.01, rotation=0.314, rotation_distribution="normal", scale=0.1,
                                       scale_distribution="normal", occlusion=False, noise_fusion_probability=0.0)

# The official pipeline of each target column; other columns take their input group's default.
AUGMENTATION_OF_COLUMN = {
    "identity": RECOGNITION_AUGMENTATION,
    "landmarks": LANDMARK_AUGMENTATION,
    "mask": PARSING_AUGMENTATION,
}
AUGMENTATION_OF_INPUT = {"pixel_values": ATTRIBUTE_AUGMENTATION, "dense_pixel_values": PARSING_AUGMENTATION}


def default_augmentation(task: FaceptorTask) -> Augmentation:
    """The official training augmentation of ``task`` (by its type's ``label_column``, else its input group), with
    flips switched off where the type cannot express a flip (``flip_permutation`` None)."""
    column = get_task_type(task).label_column
    settings = AUGMENTATION_OF_COLUMN.get(column, AUGMENTATION_OF_INPUT[task.model_input])
    if settings.model_input != task.model_input:
        settings = AUGMENTATION_OF_INPUT[task.model_input]
    if settings.flip_probability > 0 and get_task_type(task).flip_permutation(task) is None:
        settings = dataclasses.replace(settings, flip_probability=0.0)
    return settings


def check_augmentation(task: FaceptorTask, settings: Augmentation) -> list[int] | None:
    """Raise ``ValueError`` naming the task when ``settings`` do not fit it (wrong input group, or flips for a type
    without a flip permutation); returns the flip permutation (None when flips are off)."""
    if settings.model_input != task.model_input:
        raise ValueError(f"task {task.name!r} reads {task.model_input}, but {type(settings).__name__} augments "
                         f"{settings.model_input}")
    if settings.flip_probability <= 0:
        return None
    permutation = get_task_type(task).flip_permutation(task)
    if permutation is None:
        raise ValueError(f"task {task.name!r}: flip_probability={settings.flip_probability} but task type "
                         f"{task.type!r} cannot express a horizontal flip (flip_permutation is None); set "
                         "flip_probability=0 or give the task flip_pairs")
    return permutation


def draws_flip(settings: Augmentation, generator: np.random.Generator) -> bool:
    return settings.flip_probability > 0 and generator.random() < settings.flip_probability


# ---------------------------------------------------------------------------------------------------------------
# 512 px
# ---------------------------------------------------------------------------------------------------------------
def _draw(generator: np.random.Generator, distribution: str, spread: float) -> float:
    if distribution == "uniform":
        return float(generator.uniform(-spread, spread))
    return float(generator.normal(0.0, spread))


def random_similarity(settings: Augmentation512, size: int, zoom: float,
                      generator: np.random.Generator) -> torch.Tensor:
    """(2, 3) float64 similarity about the crop center to compose after a crop matrix whose zoom is ``zoom``:
    the trained scale is zoom + offset, so the extra factor is (zoom + offset) / zoom. Draw order as official:
    shift (x, y), rotation, scale."""
    shift = generator.uniform(-settings.shift, settings.shift, size=2) * size
    angle = _draw(generator, settings.rotation_distribution, settings.rotation)
    offset = _draw(generator, settings.scale_distribution, settings.scale)
    return center_similarity(size, scale=(zoom + offset) / zoom, angle=angle, shift=(float(shift[0]),
                                                                                      float(shift[1])))


def occlude(image: torch.Tensor, generator: np.random.Generator) -> torch.Tensor:
    """Black out one rectangle: height fraction rh ~ U[0.2, 0.8), width fraction rh + U[-0.2, 0.2), center uniform
    over the image; the rectangle spans +- (side/2 * fraction) // 2 around the center, clipped to the image."""
    _, height, width = image.shape
    height_fraction = generator.uniform(0.2, 0.8)
    width_fraction = height_fraction + generator.uniform(-0.2, 0.2)
    center_x, center_y = int((width - 1) * generator.random()), int((height - 1) * generator.random())
    half_height, half_width = int(height / 2 * height_fraction) // 2, int(width / 2 * width_fraction) // 2
    out = image.clone()
    out[:, max(center_y - half_height, 0):center_y + half_height + 1,
        max(center_x - half_width, 0):center_x + half_width + 1] = 0
    return out


def fuse_noise(image: torch.Tensor, generator: np.random.Generator) -> torch.Tensor:
    """(1 - a) image + a noise, a ~ U[0, 0.5), noise uniform [0, 1) per pixel and channel."""
    weight = generator.uniform(0.0, 0.5)
    noise = torch.from_numpy(generator.random(tuple(image.shape), dtype=np.float32)).to(image.dtype)
    return (1 - weight) * image + weight * noise


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """RGB -> gray (OpenCV weights) replicated to 3 channels."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype)[:, None, None]
    return (image * weights).sum(0, keepdim=True).expand(3, -1, -1).clone()


def random_gamma(image: torch.Tensor, generator: np.random.Generator) -> torch.Tensor:
    """Clamp to [0, 1], then x ** 0.5, x or x ** 2 with equal chance."""
    image = image.clamp(0, 1)
    choice = int(generator.integers(3))
    return image.sqrt() if choice == 0 else image if choice == 1 else image * image


def box_blur(image: torch.Tensor, kernel: int) -> torch.Tensor:
    """Mean filter of side ``kernel`` with mirrored borders (OpenCV ``blur``: reflect-101, anchor at kernel // 2)."""
    before, after = kernel // 2, kernel - 1 - kernel // 2
    padded = F.pad(image[None], (before, after, before, after), mode="reflect")
    return F.avg_pool2d(padded, kernel, stride=1)[0]


def dense_photometric(image: torch.Tensor, settings: Augmentation512, generator: np.random.Generator) -> torch.Tensor:
    """The official photometric chain on a warped (3, H, W) image in [0, 1]: occlusion, noise fusion, gray,
    gamma, blur (each as enabled in ``settings``)."""
    if settings.occlusion:
        image = occlude(image, generator)
    if settings.noise_fusion_probability > 0 and generator.random() < settings.noise_fusion_probability:
        image = fuse_noise(image, generator)
    if settings.gray_probability > 0 and generator.random() < settings.gray_probability:
        image = to_gray(image)
    if settings.gamma:
        image = random_gamma(image, generator)
    if settings.blur_fraction > 0:
        kernel = int(sum(image.shape[-2:]) / 2 * generator.uniform(0.0, settings.blur_fraction))
        if kernel > 1:
            image = box_blur(image.clamp(0, 1), kernel)
    return image


# ---------------------------------------------------------------------------------------------------------------
# 112 px: RandAugment ("increasing" op set) and random erasing
# ---------------------------------------------------------------------------------------------------------------
_MAX_MAGNITUDE = 10.0


def _signed(value: float, generator: np.random.Generator) -> float:
    return -value if generator.random() < 0.5 else value


def _affine(image, coefficients, settings):
    return image.transform(image.size, PIL.Image.Transform.AFFINE, coefficients,
                           resample=PIL.Image.Resampling.BICUBIC, fillcolor=(settings.fill,) * 3)


def _rotate(image, level, settings, generator):
    return image.rotate(_signed(level * 30.0, generator), resample=PIL.Image.Resampling.BICUBIC,
                        fillcolor=(settings.fill,) * 3)


def _shear_x(image, level, settings, generator):
    return _affine(image, (1, _signed(level * 0.3, generator), 0, 0, 1, 0), settings)


def _shear_y(image, level, settings, generator):
    return _affine(image, (1, 0, 0, _signed(level * 0.3, generator), 1, 0), settings)


def _translate_x(image, level, settings, generator):
    return _affine(image, (1, 0, _signed(level * 0.45, generator) * image.size[0], 0, 1, 0), settings)


def _translate_y(image, level, settings, generator):
    return _affine(image, (1, 0, 0, 0, 1, _signed(level * 0.45, generator) * image.size[1]), settings)


def _posterize(image, level, settings, generator):
    """Keep ``4 - int(4 * level)`` high bits per channel: 4 at magnitude 0, 0 (a black image) at magnitude 10.

    Pillow >= 10 refuses 0 bits (``ValueError``), while the Pillow the official code ran with masked every bit
    away; magnitudes reach 10 for about 2 % of the N(9, 0.5) draws, so 0 bits is a real case and keeps its old
    meaning here."""
    bits = 4 - int(level * 4)
    if bits <= 0:
        return PIL.Image.new(image.mode, image.size)
    return PIL.ImageOps.posterize(image, bits)


def _solarize(image, level, settings, generator):
    return PIL.ImageOps.solarize(image, 256 - int(level * 256))


def _solarize_add(image, level, settings, generator):
    added = int(level * 110)
    table = [min(255, value + added) if value < 128 else value for value in range(256)]
    return image.point(table * len(image.getbands()))


def _enhancer(kind):
    def enhance(image, level, settings, generator):
        factor = max(0.1, 1.0 + _signed(level * 0.9, generator))
        return kind(image).enhance(factor)
    return enhance


def _plain(operation):
    return lambda image, level, settings, generator: operation(image)


# The "increasing" set: every op gets stronger with the magnitude (level = magnitude / 10).
RAND_AUGMENT_OPS = {
    "auto_contrast": _plain(PIL.ImageOps.autocontrast),
    "equalize": _plain(PIL.ImageOps.equalize),
    "invert": _plain(PIL.ImageOps.invert),
    "rotate": _rotate,
    "posterize": _posterize,
    "solarize": _solarize,
    "solarize_add": _solarize_add,
    "color": _enhancer(PIL.ImageEnhance.Color),
    "contrast": _enhancer(PIL.ImageEnhance.Contrast),
    "brightness": _enhancer(PIL.ImageEnhance.Brightness),
    "sharpness": _enhancer(PIL.ImageEnhance.Sharpness),
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}
_OP_NAMES = list(RAND_AUGMENT_OPS)


def rand_augment(image: torch.Tensor, settings: Augmentation112, generator: np.random.Generator) -> torch.Tensor:
    """(3, H, W) float [0, 1] -> same, after ``rand_augment_ops`` ops drawn with replacement, each applied with
    ``rand_augment_probability`` at a magnitude ~ N(mean, std) clipped to [0, 10]. The ops work on 8-bit RGB as
    the official PIL pipeline does."""
    if settings.rand_augment_ops <= 0:
        return image
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = PIL.Image.fromarray(np.ascontiguousarray(pixels))
    for index in generator.integers(len(_OP_NAMES), size=settings.rand_augment_ops):
        if generator.random() > settings.rand_augment_probability:
            continue
        magnitude = settings.rand_augment_magnitude
        if settings.rand_augment_magnitude_std > 0:
            magnitude = generator.normal(magnitude, settings.rand_augment_magnitude_std)
        level = min(max(float(magnitude), 0.0), _MAX_MAGNITUDE) / _MAX_MAGNITUDE
        picture = RAND_AUGMENT_OPS[_OP_NAMES[index]](picture, level, settings, generator)
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def random_erasing(pixels: torch.Tensor, settings: Augmentation112, generator: np.random.Generator) -> torch.Tensor:
    """On a normalized (3, H, W) tensor: with ``erasing_probability``, fill one box with N(0, 1) noise per pixel
    and channel; area fraction ~ U(erasing_area), aspect log-uniform in ``erasing_aspect``, up to 10 tries to fit
    the box inside the image."""
    if settings.erasing_probability <= 0 or generator.random() >= settings.erasing_probability:
        return pixels
    channels, height, width = pixels.shape
    low, high = math.log(settings.erasing_aspect[0]), math.log(settings.erasing_aspect[1])
    for _ in range(10):
        area = generator.uniform(*settings.erasing_area) * height * width
        aspect = math.exp(generator.uniform(low, high))
        box_height = int(round(math.sqrt(area * aspect)))
        box_width = int(round(math.sqrt(area / aspect)))
        if box_width < width and box_height < height:
            top = int(generator.integers(0, height - box_height + 1))
            left = int(generator.integers(0, width - box_width + 1))
            noise = generator.standard_normal((channels, box_height, box_width), dtype=np.float32)
            out = pixels.clone()
            out[:, top:top + box_height, left:left + box_width] = torch.from_numpy(noise).to(pixels.dtype)
            return out
    return pixels


__all__ = [
    "ATTRIBUTE_AUGMENTATION",
    "AUGMENTATION_OF_COLUMN",
    "AUGMENTATION_OF_INPUT",
    "Augmentation",
    "Augmentation112",
    "Augmentation512",
    "LANDMARK_AUGMENTATION",
    "PARSING_AUGMENTATION",
    "RAND_AUGMENT_OPS",
    "RECOGNITION_AUGMENTATION",
    "box_blur",
    "check_augmentation",
    "default_augmentation",
    "dense_photometric",
    "draws_flip",
    "fuse_noise",
    "occlude",
    "rand_augment",
    "random_erasing",
    "random_similarity",
    "random_gamma",
    "to_gray",
]
