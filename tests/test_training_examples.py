"""Row -> training example: shapes and dtypes per target column, geometry shared by image and labels (through the
augmentations and flips), label permutations from the registry, determinism, the augmentation helpers, and an
error naming task and column for every kind of bad label."""

import dataclasses
import io
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

from faceptor_hf.configuration_faceptor import make_task
from faceptor_hf.data.schema import task_features
from faceptor_hf.task_types import get_task_type
from faceptor_hf.training import TaskExampleBuilder, TrainingExampleError, collate_examples
from faceptor_hf.training import augmentation as aug
from faceptor_hf.training.examples import TARGET_OF_COLUMN, TargetContext

TASKS = {
    "identity": make_task("recog_ms1mv3"),
    "age": make_task("age_morph2"),
    "attributes": make_task("biattr_x", type="biattr", labels=["left_a", "right_a", "c"], flip_pairs=[[0, 1]]),
    "expression": make_task("affect_affectnet"),
    "label": make_task("hand_x", type="classification", labels=["left", "right", "none"], flip_pairs=[[0, 1]]),
    "mask": make_task("parsing_x", type="parsing", labels=["background", "left_eye", "right_eye"]),
    "landmarks": make_task("align_x", type="align", num_queries=4, flip_pairs=[[0, 1]]),
    "values": make_task("pose_x", type="regression", num_queries=2),
}
EXPECTED = {"identity": (torch.int64, ()), "age": (torch.float32, ()), "attributes": (torch.int8, (3,)),
            "expression": (torch.int64, ()), "label": (torch.int64, ()), "mask": (torch.int64, (512, 512)),
            "landmarks": (torch.float32, (4, 2)), "values": (torch.float32, (2,))}
# Geometry only: photometric steps off, so intensities can be traced through the warp.
GEOMETRY_ONLY = dict(occlusion=False, noise_fusion_probability=0.0, gray_probability=0.0, gamma=False,
                     blur_fraction=0.0)


def picture(height=48, width=40, seed=0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def gray(values: np.ndarray) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.repeat(values.astype(np.uint8)[..., None], 3, axis=-1))


def png(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def row_for(column: str) -> dict:
    image = picture()
    values = {"identity": 3, "age": 33.5, "attributes": [1, 0, -1], "expression": 4, "label": 0,
              "mask": PIL.Image.fromarray(np.random.default_rng(1).integers(0, 3, (48, 40), dtype=np.uint8)),
              "landmarks": [[5.0, 6.0], [30.0, 8.0], [18.0, 25.0], [20.0, 40.0]], "values": [0.5, -1.0]}
    return {"image": image, "face_box": None, "face_keypoints": None, column: values[column]}


def crop_intensity(example, builder) -> torch.Tensor:
    """(S, S) mean over channels of the un-normalized crop, in [0, 1]."""
    mean, std = (torch.tensor(values)[:, None, None] for values in builder.processor.normalization(
        builder.task.model_input))
    return (example["pixel_values"] * std + mean).mean(0)


# ---- shapes, dtypes, normalization ------------------------------------------------------------------------------
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("column", list(TASKS))
def test_each_column_gives_its_target_shape_and_dtype(column, train):
    task = TASKS[column]
    example = TaskExampleBuilder(task, train=train)(row_for(column), np.random.default_rng(0))
    size = 112 if task.model_input == "pixel_values" else 512
    assert example["pixel_values"].shape == (3, size, size) and example["pixel_values"].dtype == torch.float32
    dtype, shape = EXPECTED[column]
    assert example["target"].dtype == dtype and tuple(example["target"].shape) == shape


def test_evaluation_crops_use_the_processor_statistics_of_their_input_group():
    small = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    example = TaskExampleBuilder(TASKS["age"], train=False)({"image": PIL.Image.fromarray(small), "age": 20.0},
                                                            np.random.default_rng(0))
    expected = (torch.from_numpy(small).permute(2, 0, 1) / 255.0 - 0.5) / 0.5
    torch.testing.assert_close(example["pixel_values"], expected, atol=1e-4, rtol=0)
    dense = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    mask = PIL.Image.fromarray(np.zeros((512, 512), dtype=np.uint8))
    example = TaskExampleBuilder(TASKS["mask"], train=False)({"image": PIL.Image.fromarray(dense), "mask": mask},
                                                             np.random.default_rng(0))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    torch.testing.assert_close(example["pixel_values"],
                               (torch.from_numpy(dense).permute(2, 0, 1) / 255.0 - mean) / std, atol=1e-4, rtol=0)


def test_already_cropped_images_take_the_official_training_and_test_resize():
    # A non-square pre-aligned crop (CelebA's 178 x 218 shape, scaled down): attribute/age/expression training =
    # timm's center square + PIL bicubic, evaluation = torchvision Resize([112, 112]) (PIL bilinear, squashed).
    image = picture(height=109, width=89, seed=4)
    plain = aug.Augmentation112(flip_probability=0.0, rand_augment_ops=0, erasing_probability=0.0)
    row = {"image": image, "age": 30.0}
    expected = {
        True: image.crop((0, 10, 89, 99)).resize((112, 112), PIL.Image.BICUBIC),
        False: image.resize((112, 112), PIL.Image.BILINEAR),
    }
    for train, reference in expected.items():
        builder = TaskExampleBuilder(TASKS["age"], train=train, augmentation=plain if train else None)
        pixels = builder(row, np.random.default_rng(0))["pixel_values"] * 0.5 + 0.5
        torch.testing.assert_close(pixels, torch.from_numpy(np.asarray(reference).copy()).permute(2, 0, 1) / 255.0,
                                   atol=1e-6, rtol=0)
    # Recognition trains through torchvision Resize([112, 112]) (then a flip), as it tests.
    builder = TaskExampleBuilder(TASKS["identity"], train=True, augmentation=plain)
    pixels = builder({"image": image, "identity": 3}, np.random.default_rng(0))["pixel_values"] * 0.5 + 0.5
    torch.testing.assert_close(pixels, torch.from_numpy(np.asarray(expected[False]).copy()).permute(2, 0, 1) / 255.0,
                               atol=1e-6, rtol=0)


# ---- geometry shared by image and labels ------------------------------------------------------------------------
def test_landmarks_follow_the_official_box_crop_and_zoom():
    row = {"image": picture(96, 96), "face_box": [10.0, 20.0, 74.0, 84.0],
           "landmarks": [[10.0, 20.0], [42.0, 52.0], [74.0, 84.0], [0.0, 0.0]]}
    target = TaskExampleBuilder(TASKS["landmarks"], train=False, zoom=0.8)(row, np.random.default_rng(0))["target"]
    for (x, y), (tx, ty) in zip(row["landmarks"], target.tolist()):
        crop_x, crop_y = (x - 10) * 512 / 64 - 0.5, (y - 20) * 512 / 64 - 0.5  # box edges onto -0.5 / 511.5
        assert tx == pytest.approx(0.8 * (crop_x - 255.5) + 255.5, abs=1e-4)
        assert ty == pytest.approx(0.8 * (crop_y - 255.5) + 255.5, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_marked_point_stays_under_its_landmark_through_augmentation_and_flip(seed):
    pixels = np.zeros((96, 96), dtype=np.uint8)
    pixels[49:52, 39:42] = 255  # a 3x3 white blob centered on pixel (x=40, y=50)
    row = {"image": gray(pixels), "face_box": [8.0, 8.0, 88.0, 88.0],
           "landmarks": [[40.0, 50.0], [60.0, 30.0], [20.0, 20.0], [70.0, 70.0]]}
    settings = aug.Augmentation512(flip_probability=1.0, **GEOMETRY_ONLY)
    builder = TaskExampleBuilder(TASKS["landmarks"], train=True, augmentation=settings, zoom=0.8)
    example = builder(row, np.random.default_rng(seed))
    bright = crop_intensity(example, builder) > 0.5
    ys, xs = torch.nonzero(bright, as_tuple=True)
    centroid = torch.stack([xs.float().mean(), ys.float().mean()])
    # flipped: output point 1 is the mirror of input point 0 (flip pairs [[0, 1]])
    torch.testing.assert_close(centroid, example["target"][1], atol=1.0, rtol=0)
    assert (example["target"][0] - example["target"][1]).norm() > 20


def test_the_tanh_warp_moves_image_and_landmarks_together():
    pixels = np.zeros((96, 96), dtype=np.uint8)
    pixels[29:32, 23:26] = 255  # blob at (24, 30), in the squeezed band of a 0.8 tanh-warp
    keypoints = [[36.0, 40.0], [60.0, 40.0], [48.0, 52.0], [40.0, 66.0], [56.0, 66.0]]
    row = {"image": gray(pixels), "face_keypoints": keypoints,
           "landmarks": [[24.0, 30.0], [48.0, 52.0], [60.0, 70.0], [30.0, 60.0]]}
    settings = aug.Augmentation512(flip_probability=1.0, **GEOMETRY_ONLY)
    builder = TaskExampleBuilder(TASKS["landmarks"], train=True, augmentation=settings, warp_factor=0.8)
    example = builder(row, np.random.default_rng(0))
    ys, xs = torch.nonzero(crop_intensity(example, builder) > 0.5, as_tuple=True)
    point = example["target"][1]  # flipped: output 1 is input 0
    assert not (204.8 <= point[0] <= 307.2 and 204.8 <= point[1] <= 307.2)  # outside the linear band
    torch.testing.assert_close(torch.stack([xs.float().mean(), ys.float().mean()]), point, atol=1.0, rtol=0)
    with pytest.raises(ValueError, match="warp_factor must lie in"):
        TaskExampleBuilder(TASKS["landmarks"], train=True, warp_factor=1.0)


@pytest.mark.parametrize("warp_factor", [0.0, 0.8])
@pytest.mark.parametrize("flip", [False, True])
def test_masks_are_warped_with_the_image_and_flips_swap_left_right_classes(flip, warp_factor):
    classes = np.zeros((64, 64), dtype=np.uint8)
    classes[:40, :32], classes[:40, 32:] = 1, 2  # left_eye on the image's left, right_eye on its right
    image = gray(np.choose(classes, [0, 100, 200]))
    settings = aug.Augmentation512(shift=0.01, rotation=0.314, rotation_distribution="normal", scale=0.1,
                                   scale_distribution="normal", flip_probability=1.0 if flip else 0.0,
                                   **GEOMETRY_ONLY)
    builder = TaskExampleBuilder(TASKS["mask"], train=True, augmentation=settings, warp_factor=warp_factor)
    example = builder({"image": image, "mask": PIL.Image.fromarray(classes)}, np.random.default_rng(3))
    level = crop_intensity(example, builder) * 255
    mask = example["target"]
    left, right = (2, 1) if flip else (1, 2)
    for value, expected in ((100, left), (200, right)):
        clean = (level - value).abs() < 2  # pixels whose bilinear sample is not blended across a boundary
        assert clean.sum() > 10_000
        assert (mask[clean] == expected).float().mean() > 0.99
    assert (mask[level < 1] == 0).float().mean() > 0.99


def test_value_targets_and_the_image_flip_as_the_registry_says():
    settings = aug.Augmentation112(flip_probability=1.0, rand_augment_ops=0, erasing_probability=0.0)
    unflipped = dataclasses.replace(settings, flip_probability=0.0)
    for column in ("attributes", "label", "expression"):
        task = TASKS[column]
        row = row_for(column)
        permutation = get_task_type(task).flip_permutation(task)
        flipped = TaskExampleBuilder(task, train=True, augmentation=settings)(row, np.random.default_rng(0))
        plain = TaskExampleBuilder(task, train=True, augmentation=unflipped)(row, np.random.default_rng(0))
        if column == "attributes":
            assert flipped["target"].tolist() == [row[column][i] for i in permutation]
        else:
            assert permutation[flipped["target"].item()] == row[column]
        torch.testing.assert_close(flipped["pixel_values"], plain["pixel_values"].flip(-1), atol=1e-4, rtol=0)


def test_value_readers_reorder_per_output_targets_and_rename_classes():
    flip = [1, 0, 2]  # output order after a mirror: outputs 0 and 1 swap
    context = TargetContext(TASKS["attributes"], torch.eye(2, 3, dtype=torch.float64), 112, (48, 40), flip)
    assert TARGET_OF_COLUMN["attributes"]([1, 0, -1], context).tolist() == [0, 1, -1]
    context.task = TASKS["label"]
    assert TARGET_OF_COLUMN["label"](0, context).item() == 1 and TARGET_OF_COLUMN["label"]("none", context) == 2
    context.task = make_task("pose_three", type="regression", num_queries=3)
    assert TARGET_OF_COLUMN["values"]([0.5, -1.0, 2.0], context).tolist() == [-1.0, 0.5, 2.0]
    cyclic = TargetContext(TASKS["mask"], torch.eye(2, 3, dtype=torch.float64), 4, (4, 4), [2, 0, 1])
    mask = TARGET_OF_COLUMN["mask"](np.array([[0, 1, 2, 0]] * 4), cyclic)  # class c becomes the output showing it
    assert mask[0].tolist() == [1, 2, 0, 1]


def test_the_random_scale_is_relative_to_the_crop_zoom():
    row = {"image": picture(96, 96), "face_box": [8.0, 8.0, 88.0, 88.0],
           "landmarks": [[20.0, 20.0], [80.0, 30.0], [40.0, 70.0], [50.0, 44.0]]}
    task = TASKS["landmarks"]
    plain = TaskExampleBuilder(task, train=False, zoom=0.8)(row, np.random.default_rng(0))
    still = aug.Augmentation512(shift=0.0, rotation=0.0, scale=0.0, **GEOMETRY_ONLY)
    unchanged = TaskExampleBuilder(task, train=True, augmentation=still, zoom=0.8)(row, np.random.default_rng(0))
    torch.testing.assert_close(unchanged["target"], plain["target"])
    torch.testing.assert_close(unchanged["pixel_values"], plain["pixel_values"])
    scaled = aug.Augmentation512(shift=0.0, rotation=0.0, scale=0.1, **GEOMETRY_ONLY)
    for seed in range(3):
        target = TaskExampleBuilder(task, train=True, augmentation=scaled, zoom=0.8)(row, np.random.default_rng(seed))
        ratio = (target["target"] - 255.5) / (plain["target"] - 255.5)
        assert 0.7 / 0.8 - 1e-4 <= ratio.min() and ratio.max() <= 0.9 / 0.8 + 1e-4
        torch.testing.assert_close(ratio, ratio[0, 0].expand_as(ratio), atol=1e-4, rtol=0)


# ---- settings ----------------------------------------------------------------------------------------------------
def test_default_augmentation_is_chosen_by_target_column_and_input_group():
    assert aug.default_augmentation(TASKS["identity"]) == aug.RECOGNITION_AUGMENTATION
    assert aug.default_augmentation(TASKS["age"]) == aug.ATTRIBUTE_AUGMENTATION
    assert aug.default_augmentation(TASKS["landmarks"]) == aug.LANDMARK_AUGMENTATION
    assert aug.default_augmentation(TASKS["mask"]) == aug.PARSING_AUGMENTATION
    assert aug.default_augmentation(TASKS["values"]).flip_probability == 0.0  # signed values cannot be mirrored
    assert aug.LANDMARK_AUGMENTATION.flip_probability == aug.PARSING_AUGMENTATION.flip_probability == 0.0


def test_flips_are_refused_where_the_type_has_no_permutation_and_settings_must_fit_the_input():
    unmapped = make_task("align_five", type="align", num_queries=5)
    with pytest.raises(ValueError, match="align_five.*flip_permutation is None"):
        TaskExampleBuilder(unmapped, train=True, augmentation=aug.Augmentation512(flip_probability=0.5))
    with pytest.raises(ValueError, match="pose_x.*flip_permutation is None"):
        TaskExampleBuilder(TASKS["values"], train=True, augmentation=aug.Augmentation112())
    with pytest.raises(ValueError, match="'parsing_x' reads dense_pixel_values"):
        TaskExampleBuilder(TASKS["mask"], train=True, augmentation=aug.Augmentation112())
    with pytest.raises(ValueError, match="rotation_distribution"):
        aug.Augmentation512(rotation_distribution="laplace")
    with pytest.raises(ValueError, match="Augmentation112.erasing_probability must lie in \\[0, 1\\], got 25"):
        aug.Augmentation112(erasing_probability=25)
    with pytest.raises(ValueError, match="'align_x': zoom must be positive"):
        TaskExampleBuilder(TASKS["landmarks"], train=True, zoom=0.0)


# ---- determinism, input forms, collation ------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["attributes", "landmarks"])
def test_examples_depend_only_on_the_generator(column):
    builder = TaskExampleBuilder(TASKS[column], train=True)
    row = row_for(column)
    copied = pickle.loads(pickle.dumps(builder))  # DataLoader workers receive a pickled builder
    first, again = builder(row, np.random.default_rng(7)), copied(row, np.random.default_rng(7))
    other = builder(row, np.random.default_rng(8))
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and torch.equal(first["target"], again["target"])
    assert not torch.equal(first["pixel_values"], other["pixel_values"])


def test_images_and_masks_as_bytes_paths_or_decoded_by_datasets(tmp_path):
    import datasets

    task = TASKS["mask"]
    image, mask = picture(32, 32, seed=4), PIL.Image.fromarray(np.full((32, 32), 2, dtype=np.uint8))
    path = tmp_path / "face.png"
    image.save(path)
    builder = TaskExampleBuilder(task, train=False)
    reference = builder({"image": image, "mask": mask}, np.random.default_rng(0))
    for image_value, mask_value in (({"bytes": png(image), "path": None}, {"bytes": png(mask), "path": None}),
                                    ({"bytes": None, "path": str(path)}, np.full((32, 32), 2)),
                                    (png(image.convert("RGBA")), mask.convert("P"))):
        example = builder({"image": image_value, "mask": mask_value}, np.random.default_rng(0))
        torch.testing.assert_close(example["pixel_values"], reference["pixel_values"])
        assert torch.equal(example["target"], reference["target"])
    table = datasets.Dataset.from_dict({"image": [image], "mask": [mask], "face_box": [None], "face_keypoints": [None]},
                                       features=task_features(task))
    example = builder(table[0], np.random.default_rng(0))
    assert torch.equal(example["target"], reference["target"]) and int(example["target"].max()) == 2


def test_collate_stacks_and_refuses_mixed_shapes():
    builder = TaskExampleBuilder(TASKS["attributes"], train=False)
    examples = [builder(row_for("attributes"), np.random.default_rng(i)) for i in range(3)]
    batch = collate_examples(examples)
    assert batch["pixel_values"].shape == (3, 3, 112, 112) and batch["target"].shape == (3, 3)
    with pytest.raises(ValueError, match="'target' has differing shapes"):
        collate_examples([examples[0], {**examples[1], "target": torch.zeros(5, dtype=torch.int8)}])


# ---- bad labels ---------------------------------------------------------------------------------------------------
BAD_ROWS = [
    ("landmarks", {"landmarks": [[1.0, 2.0]] * 3}, "'align_x', column 'landmarks'.*3 landmarks for a task with 4"),
    ("landmarks", {"landmarks": [[1.0, float("nan")]] * 4}, "column 'landmarks'.*NaN"),
    ("mask", {"mask": PIL.Image.fromarray(np.full((48, 40), 3, dtype=np.uint8))},
     "'parsing_x', column 'mask'.*class id 3, outside the task's 3 classes"),
    ("mask", {"mask": PIL.Image.fromarray(np.zeros((20, 20), dtype=np.uint8))}, "column 'mask'.*same size"),
    ("mask", {"mask": picture()}, "column 'mask'.*single-channel"),
    ("expression", {"expression": 7}, "'affect_affectnet', column 'expression'.*class id 7 is out of range 0 .. 6"),
    ("label", {"label": "middle"}, "'hand_x', column 'label'.*'middle' is not one of"),
    ("attributes", {"attributes": [1, 0]}, "'biattr_x', column 'attributes'.*2 attribute values.*3 attributes"),
    ("attributes", {"attributes": [1, 2, 0]}, "column 'attributes'.*got \\[2.0\\]"),
    ("age", {"age": 130.0}, "'age_morph2', column 'age'.*outside the task's bins 0 .. 100"),
    ("age", {"age": None}, "'age_morph2', column 'age'.*missing"),
    ("identity", {"identity": -1}, "'recog_ms1mv3', column 'identity'.*identity -1 is out of range"),
    ("identity", {"identity": 2.5}, "column 'identity'.*must be an integer"),
    ("values", {"values": [1.0, 2.0, 3.0]}, "'pose_x', column 'values'.*3 values"),
    ("age", {"image": b"not an image"}, "'age_morph2', column 'image'.*not a recognized image"),
    ("landmarks", {"face_box": [10.0, 10.0, 10.0, 30.0]}, "'align_x', column 'face_box'.*no area"),
]


@pytest.mark.parametrize("column, change, message", BAD_ROWS)
def test_bad_labels_name_the_task_the_column_and_the_row(column, change, message):
    row = {**row_for(column), **change}
    with pytest.raises(TrainingExampleError, match=message):
        TaskExampleBuilder(TASKS[column], train=True)(row, np.random.default_rng(0), index=17)
    with pytest.raises(TrainingExampleError, match="row 17"):
        TaskExampleBuilder(TASKS[column], train=False)(row, np.random.default_rng(0), index=17)


def test_identities_beyond_the_known_count_are_refused():
    builder = TaskExampleBuilder(TASKS["identity"], train=False, num_identities=3)
    with pytest.raises(TrainingExampleError, match="identity 3 is out of range \\(0 .. 2\\)"):
        builder(row_for("identity"), np.random.default_rng(0))


def test_a_missing_target_column_lists_what_the_row_has():
    row = row_for("age")
    del row["age"]
    with pytest.raises(TrainingExampleError, match="column 'age'.*missing.*\\['image'\\]"):
        TaskExampleBuilder(TASKS["age"], train=False)(row, np.random.default_rng(0))


# ---- augmentation helpers ---------------------------------------------------------------------------------------
def reflect(index: int, size: int) -> int:
    return -index if index < 0 else 2 * (size - 1) - index if index >= size else index


@pytest.mark.parametrize("kernel", [2, 3])
def test_box_blur_is_a_mean_with_mirrored_borders_anchored_like_opencv(kernel):
    image = torch.arange(1, 26, dtype=torch.float32).reshape(1, 5, 5)
    blurred = aug.box_blur(image, kernel)
    start = -(kernel // 2)
    for y in range(5):
        for x in range(5):
            window = [image[0, reflect(y + dy, 5), reflect(x + dx, 5)].item()
                      for dy in range(start, start + kernel) for dx in range(start, start + kernel)]
            assert blurred[0, y, x].item() == pytest.approx(sum(window) / len(window))


def test_photometric_helpers():
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    gray = aug.to_gray(image)
    torch.testing.assert_close(gray[1], 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])
    assert torch.equal(gray[0], gray[2])
    for seed in range(6):
        out = aug.random_gamma(image, np.random.default_rng(seed))
        assert any(torch.allclose(out, candidate) for candidate in (image.sqrt(), image, image * image))
    occluded = aug.occlude(torch.ones(3, 512, 512), np.random.default_rng(5))
    rows, cols = torch.nonzero(occluded[0] == 0, as_tuple=True)
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert rows.numel() == height * width and height <= 205 and width <= 257  # one rectangle, <= 40 % / 50 %
    noisy = aug.fuse_noise(torch.zeros(3, 8, 8), np.random.default_rng(0))
    assert 0 <= noisy.min() and noisy.max() < 0.5


def test_rand_augment_ops_and_random_erasing():
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(1))
    picture_8bit = PIL.Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    for name, operation in aug.RAND_AUGMENT_OPS.items():
        out = operation(picture_8bit, 0.9, aug.ATTRIBUTE_AUGMENTATION, np.random.default_rng(0))
        assert out.size == (40, 40) and out.mode == "RGB", name
    settings = aug.Augmentation112(rand_augment_probability=1.0)
    first = aug.rand_augment(image, settings, np.random.default_rng(2))
    assert first.shape == image.shape and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, aug.rand_augment(image, settings, np.random.default_rng(2)))
    pixels = torch.full((3, 112, 112), 5.0)
    erased = aug.random_erasing(pixels, aug.Augmentation112(erasing_probability=1.0), np.random.default_rng(0))
    changed = (erased != 5.0).all(0)
    assert 0.02 * 112 * 112 * 0.9 <= changed.sum() <= 112 * 112 / 3 * 1.1
    assert torch.equal(aug.random_erasing(pixels, aug.Augmentation112(erasing_probability=0.0),
                                          np.random.default_rng(0)), pixels)
