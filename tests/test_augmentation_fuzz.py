"""Augmentation at full magnitude never fails: every RandAugment op and every 512-px op at magnitude 0 and at its
maximum, both signs, on RGB crops of each input size, plus thousands of random draws through the official
settings; outputs stay finite and in range, and labels stay inside the crop (or are masked where they may not).

Regression: at magnitude 10 (about 2 % of the N(9, 0.5) draws) posterize asks for 0 bits, which current Pillow
refuses; before the fix any 112-px task crashed the DataLoader within its first batches."""

import numpy as np
import PIL.Image
import pytest
import torch

from faceptor_hf.configuration_faceptor import make_task
from faceptor_hf.training import TaskExampleBuilder
from faceptor_hf.training import augmentation as aug

CROP_SIZES = (112, 512)


class FixedDraw:
    """A generator whose ``random()`` is constant: picks the sign of a signed op (< 0.5 negative)."""

    def __init__(self, value: float):
        self.value = value

    def random(self):
        return self.value


def face_like(size: int, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels[size // 4:3 * size // 4, size // 4:3 * size // 4] = (230, 180, 150)  # a flat skin-toned patch
    return PIL.Image.fromarray(pixels)


def as_tensor(picture: PIL.Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)


@pytest.mark.parametrize("size", CROP_SIZES)
@pytest.mark.parametrize("level", [0.0, 1.0])
@pytest.mark.parametrize("sign", [0.1, 0.9])
@pytest.mark.parametrize("name", list(aug.RAND_AUGMENT_OPS))
def test_every_rand_augment_op_at_both_ends_of_its_range(name, sign, level, size):
    picture = face_like(size)
    out = aug.RAND_AUGMENT_OPS[name](picture, level, aug.ATTRIBUTE_AUGMENTATION, FixedDraw(sign))
    assert out.size == (size, size) and out.mode == "RGB"
    pixels = np.asarray(out)
    assert pixels.dtype == np.uint8 and pixels.shape == (size, size, 3)


def test_posterize_at_magnitude_10_is_a_black_image_as_the_official_pillow_gave():
    out = aug.RAND_AUGMENT_OPS["posterize"](face_like(112), 1.0, aug.ATTRIBUTE_AUGMENTATION, FixedDraw(0.5))
    assert np.asarray(out).max() == 0
    kept = np.asarray(aug.RAND_AUGMENT_OPS["posterize"](face_like(112), 0.0, aug.ATTRIBUTE_AUGMENTATION,
                                                        FixedDraw(0.5)))
    assert (kept & 0x0F).max() == 0 and kept.max() > 0  # magnitude 0: 4 bits kept


def test_rand_augment_at_the_maximum_magnitude_and_hundreds_of_default_draws():
    image = as_tensor(face_like(112))
    strongest = aug.Augmentation112(rand_augment_magnitude=10.0, rand_augment_magnitude_std=0.0,
                                    rand_augment_probability=1.0)
    for seed in range(300):
        out = aug.rand_augment(image, strongest, np.random.default_rng(seed))
        assert out.shape == image.shape and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    # The official N(9, 0.5) magnitudes, clipped at 10: 500 draws hold about 10 at magnitude 10, the posterize
    # regression; every op at both ends of its range is pinned deterministically above.
    for seed in range(500):
        out = aug.rand_augment(image, aug.ATTRIBUTE_AUGMENTATION, np.random.default_rng(seed))
        assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("size", CROP_SIZES)
def test_every_512px_op_at_both_ends(size):
    image = as_tensor(face_like(size))
    for seed in range(4):
        generator = np.random.default_rng(seed)
        for out in (aug.occlude(image, generator), aug.fuse_noise(image, generator), aug.to_gray(image),
                    aug.random_gamma(image, generator)):
            assert out.shape == image.shape and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    largest = int(size * aug.LANDMARK_AUGMENTATION.blur_fraction) + 1  # above what blur_fraction 0.01 can draw
    for kernel in (1, 2, largest):
        out = aug.box_blur(image, kernel)
        assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1 + 1e-6
    for settings in (aug.LANDMARK_AUGMENTATION, aug.PARSING_AUGMENTATION):
        for extreme in (0.0, 1.0):
            strongest = aug.Augmentation512(
                shift=settings.shift * extreme, rotation=settings.rotation * extreme,
                rotation_distribution=settings.rotation_distribution, scale=settings.scale * extreme,
                scale_distribution=settings.scale_distribution, occlusion=bool(extreme),
                noise_fusion_probability=extreme, gray_probability=extreme, gamma=bool(extreme),
                blur_fraction=settings.blur_fraction * extreme, flip_probability=extreme)
            for seed in range(3):
                generator = np.random.default_rng(seed)
                matrix = aug.random_similarity(strongest, size, 0.8, generator)
                assert torch.isfinite(matrix).all()
                out = aug.dense_photometric(image, strongest, generator)
                assert torch.isfinite(out).all() and -1e-6 <= out.min() and out.max() <= 1 + 1e-6


def _landmark_row(size=256):
    """A face whose 4 landmarks lie well inside a box, as real annotations do."""
    box = [64.0, 64.0, 192.0, 192.0]
    points = [[90.0, 110.0], [166.0, 110.0], [128.0, 150.0], [128.0, 175.0]]
    return {"image": face_like(size), "face_box": box, "face_keypoints": None, "landmarks": points}


def _mask_row(size=128):
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4:3 * size // 4, size // 4:3 * size // 2 // 2 + size // 4] = 1
    mask[size // 3:size // 2, size // 3:size // 2] = 2
    return {"image": face_like(size), "face_box": None, "face_keypoints": None, "mask": PIL.Image.fromarray(mask)}


def test_default_dense_augmentation_keeps_labels_inside_the_crop():
    landmarks = TaskExampleBuilder(make_task("align_x", type="align", num_queries=4), train=True, zoom=0.8)
    parsing = TaskExampleBuilder(make_task("parsing_x", type="parsing", labels=["bg", "skin", "eye"]), train=True)
    for seed in range(40):
        example = landmarks(_landmark_row(), np.random.default_rng(seed))
        assert torch.isfinite(example["pixel_values"]).all()
        assert (example["target"] >= 0).all() and (example["target"] < 512).all(), seed
        example = parsing(_mask_row(), np.random.default_rng(seed))
        assert torch.isfinite(example["pixel_values"]).all()
        assert example["target"].min() >= 0 and example["target"].max() <= 2


@pytest.mark.parametrize("column_task", [make_task("affect_rafdb"), make_task("age_morph2"),
                                         make_task("biattr_celeba")])
def test_default_112px_augmentation_over_many_draws(column_task):
    builder = TaskExampleBuilder(column_task, train=True)
    values = {"expression": 3, "age": 40.0, "attributes": [1] * 20 + [0] * 19 + [-1]}
    column = builder.column
    row = {"image": face_like(112), "face_box": None, "face_keypoints": None, column: values[column]}
    for seed in range(300):
        example = builder(row, np.random.default_rng(seed))
        assert example["pixel_values"].shape == (3, 112, 112) and torch.isfinite(example["pixel_values"]).all()
        assert torch.isfinite(example["target"].float()).all()
