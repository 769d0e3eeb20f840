"""The processor's one row -> crop path (``FaceptorImageProcessor.crop_row``): its size and statistics lookups, the
crop of each rule (keypoints, box with zoom, whole image, tanh-warp), augmentation matrices and photometric steps
composed as the training builder composes them, clear errors, and crops, matrices and targets of the training
builder and the evaluation preparer unchanged from the implementation before the processor owned the path."""

import dataclasses

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset

from faceptor_hf import FaceptorImageProcessor
from faceptor_hf.configuration_faceptor import make_task
from faceptor_hf.data import geometry
from faceptor_hf.dataset_crops import center_similarity, horizontal_flip, row_matrix, warp_image
from faceptor_hf.evaluation.evaluate import BatchPreparer
from faceptor_hf.evaluation.protocols import PROTOCOLS
from faceptor_hf.face_alignment import compose
from faceptor_hf.image_processing_faceptor import CLIP_MEAN, CLIP_STD, FaceInputError
from faceptor_hf.tanh_warp import tanh_warp_image
from faceptor_hf.task_types import INPUT_SIZE_OF
from faceptor_hf.training import TaskExampleBuilder
from faceptor_hf.training import augmentation as aug

KEYPOINTS = [[55.0, 70.0], [95.0, 68.0], [75.0, 90.0], [60.0, 110.0], [92.0, 108.0]]
BOX = [30.0, 40.0, 120.0, 140.0]
LANDMARKS = [[50.0, 60.0], [100.0, 62.0], [75.0, 100.0], [140.0, 150.0]]


def picture(height: int, width: int, seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def labels(height: int, width: int, seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 3, (height, width), dtype=np.uint8))


def pixels_of(image: PIL.Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


# ---- lookups ----------------------------------------------------------------------------------------------------
def test_sizes_and_statistics_come_from_the_processor_and_default_to_the_model_inputs():
    processor = FaceptorImageProcessor()
    assert processor.crop_size("pixel_values") == INPUT_SIZE_OF["pixel_values"] == 112
    assert processor.crop_size("dense_pixel_values") == INPUT_SIZE_OF["dense_pixel_values"] == 512
    assert processor.normalization("pixel_values") == ([0.5] * 3, [0.5] * 3)
    assert processor.normalization("dense_pixel_values") == (CLIP_MEAN, CLIP_STD)
    crops = torch.rand(2, 3, 8, 8)
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(processor.normalize(crops, "dense_pixel_values"), (crops - mean) / std)
    custom = FaceptorImageProcessor(size={"height": 56, "width": 56}, image_mean=[0.0] * 3, image_std=[0.25] * 3)
    assert custom.crop_size("pixel_values") == 56 and custom.normalization("pixel_values") == ([0.0] * 3, [0.25] * 3)
    with pytest.raises(ValueError, match="model_input must be one of"):
        processor.crop_size("depth_values")
    with pytest.raises(ValueError, match="must be square"):
        FaceptorImageProcessor(size={"height": 112, "width": 96}).crop_size("pixel_values")


def test_the_lookup_table_is_not_saved_with_the_processor(tmp_path):
    FaceptorImageProcessor().save_pretrained(tmp_path)
    text = (tmp_path / "preprocessor_config.json").read_text()
    assert "ATTRIBUTES_OF_INPUT" not in text and '"height": 112' in text and '"height": 512' in text
    assert FaceptorImageProcessor.from_pretrained(tmp_path).crop_size("dense_pixel_values") == 512


def test_the_package_path_of_the_row_geometry_still_imports_the_same_functions():
    assert geometry.row_matrix is row_matrix and geometry.warp_image is warp_image


# ---- crops ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_input", ["pixel_values", "dense_pixel_values"])
@pytest.mark.parametrize("hints", [{"face_keypoints": KEYPOINTS}, {"face_box": BOX}, {}])
def test_a_row_crop_is_the_rule_s_warp_normalized(hints, model_input):
    processor = FaceptorImageProcessor()
    image = pixels_of(picture(160, 150, 1))
    row = {"image": image, **hints}
    pixels, matrix = processor.crop_row(row, model_input, zoom=0.8, dense_face_scale=0.9)
    size = INPUT_SIZE_OF[model_input]
    expected_matrix = row_matrix(row, model_input, (160, 150), zoom=0.8, dense_face_scale=0.9)
    assert torch.equal(matrix, expected_matrix) and matrix.dtype == torch.float64
    crop = warp_image(image, expected_matrix, size, whole_image=not hints)
    assert pixels.shape == (3, size, size) and pixels.dtype == torch.float32
    assert torch.equal(pixels, processor.normalize(crop, model_input))
    # Any image value load_image reads gives the same crop as the decoded tensor.
    assert torch.equal(processor.crop_row({**row, "image": picture(160, 150, 1)}, model_input, zoom=0.8,
                                          dense_face_scale=0.9)[0], pixels)


def test_a_custom_crop_size_scales_the_template():
    processor = FaceptorImageProcessor(size={"height": 56, "width": 56})
    row = {"image": pixels_of(picture(160, 150, 1)), "face_keypoints": KEYPOINTS}
    pixels, matrix = processor.crop_row(row, "pixel_values")
    assert pixels.shape == (3, 56, 56)
    torch.testing.assert_close(matrix, row_matrix(row, "pixel_values", (160, 150), size=56))
    torch.testing.assert_close(matrix, row_matrix(row, "pixel_values", (160, 150)) / 2)  # the template halves


def test_the_tanh_warp_replaces_the_plain_warp():
    processor = FaceptorImageProcessor()
    image = pixels_of(picture(160, 150, 2))
    row = {"image": image, "face_keypoints": KEYPOINTS}
    pixels, matrix = processor.crop_row(row, "dense_pixel_values", warp_factor=0.8)
    expected = tanh_warp_image(image, row_matrix(row, "dense_pixel_values", (160, 150)), 512, 0.8)
    assert torch.equal(pixels, processor.normalize(expected, "dense_pixel_values"))
    with pytest.raises(ValueError, match="warp_factor must lie in"):
        processor.crop_row(row, "dense_pixel_values", warp_factor=1.0)


def test_augmentation_matrices_compose_in_order_and_the_photometric_step_precedes_normalization():
    processor = FaceptorImageProcessor()
    image = pixels_of(picture(96, 96, 3))
    row = {"image": image, "face_box": [8.0, 8.0, 88.0, 88.0]}
    plain, base = processor.crop_row(row, "dense_pixel_values")
    flipped, matrix = processor.crop_row(row, "dense_pixel_values", crop_transforms=[horizontal_flip(512)])
    assert torch.equal(matrix, compose(horizontal_flip(512), base))
    torch.testing.assert_close(flipped, plain.flip(-1), atol=1e-5, rtol=0)
    turn = center_similarity(512, 0.9, 0.2)
    _, matrix = processor.crop_row(row, "dense_pixel_values", crop_transforms=[turn, horizontal_flip(512)])
    assert torch.equal(matrix, compose(horizontal_flip(512), compose(turn, base)))
    seen = []
    darkened, _ = processor.crop_row(row, "pixel_values", augment_crop=lambda crop: seen.append(crop) or crop * 0)
    assert 0.0 <= seen[0].min() and seen[0].max() <= 1.0  # the step sees the [0, 1] crop
    torch.testing.assert_close(darkened, torch.full((3, 112, 112), -1.0))


def test_an_already_cropped_image_takes_the_training_resize_on_request():
    processor = FaceptorImageProcessor()
    image = picture(109, 89, 4)
    row = {"image": image}
    trained, matrix = processor.crop_row(row, "pixel_values", training_resize=True)
    reference = image.crop((0, 10, 89, 99)).resize((112, 112), PIL.Image.BICUBIC)
    torch.testing.assert_close(trained * 0.5 + 0.5, pixels_of(reference), atol=1e-6, rtol=0)
    assert torch.equal(matrix, row_matrix(row, "pixel_values", (109, 89), training=True))


def test_unusable_hints_raise_value_errors():
    processor = FaceptorImageProcessor()
    image = pixels_of(picture(64, 64, 5))
    with pytest.raises(FaceInputError, match="no usable crop"):
        processor.crop_row({"image": image, "face_keypoints": np.full((5, 2), np.nan)}, "pixel_values")
    with pytest.raises(ValueError, match="has no area"):
        processor.crop_row({"image": image, "face_box": [10.0, 10.0, 10.0, 30.0]}, "dense_pixel_values")


# ---- unchanged outputs of the training builder and the evaluation preparer -----------------------------------------
TASKS = {
    "landmarks": make_task("align_x", type="align", num_queries=4, flip_pairs=[[0, 1]]),
    "mask": make_task("parsing_x", type="parsing", labels=["background", "left_eye", "right_eye"]),
    "age": make_task("age_morph2"),
    "attributes": make_task("biattr_x", type="biattr", labels=["left_a", "right_a", "c"], flip_pairs=[[0, 1]]),
    "identity": make_task("recog_ms1mv3"),
    "expression": make_task("affect_affectnet"),
}
FLIP_LANDMARKS = dataclasses.replace(aug.LANDMARK_AUGMENTATION, flip_probability=1.0)
FLIP_PARSING = dataclasses.replace(aug.PARSING_AUGMENTATION, flip_probability=1.0)
LAPA_ROW = {"image": picture(160, 150, 2), "face_keypoints": KEYPOINTS, "mask": labels(160, 150, 3)}
# name: (task, builder options, row, seed)
BUILDER_CASES = {
    "lm_box_train_flip": ("landmarks", dict(train=True, zoom=0.8, augmentation=FLIP_LANDMARKS),
                          {"image": picture(160, 150, 1), "face_box": BOX, "landmarks": LANDMARKS}, 0),
    "lm_box_train_default": ("landmarks", dict(train=True, zoom=0.8),
                             {"image": picture(160, 150, 1), "face_box": BOX, "landmarks": LANDMARKS}, 3),
    "lm_kp_train": ("landmarks", dict(train=True, dense_face_scale=0.9),
                    {"image": picture(160, 150, 1), "face_keypoints": KEYPOINTS, "landmarks": LANDMARKS}, 4),
    "lm_box_eval": ("landmarks", dict(train=False, zoom=0.8),
                    {"image": picture(160, 150, 1), "face_box": BOX, "landmarks": LANDMARKS}, 0),
    "mask_kp_tanh_train": ("mask", dict(train=True, warp_factor=0.8), LAPA_ROW, 5),
    "mask_kp_tanh_eval": ("mask", dict(train=False, warp_factor=0.8), LAPA_ROW, 0),
    "mask_whole_train_flip": ("mask", dict(train=True, augmentation=FLIP_PARSING),
                              {"image": picture(640, 640, 4), "mask": labels(640, 640, 5)}, 6),
    "mask_whole_eval": ("mask", dict(train=False), {"image": picture(640, 600, 4), "mask": labels(640, 600, 5)}, 0),
    "age_kp_train": ("age", dict(train=True), {"image": picture(160, 150, 7), "face_keypoints": KEYPOINTS,
                                               "age": 40.0}, 7),
    "age_whole_eval": ("age", dict(train=False), {"image": picture(109, 89, 8), "age": 40.0}, 0),
    "attr_whole_train": ("attributes", dict(train=True), {"image": picture(109, 89, 9), "attributes": [1, 0, -1]}, 8),
    "attr_whole_train2": ("attributes", dict(train=True), {"image": picture(109, 89, 9), "attributes": [1, 0, -1]},
                          11),
    "id_whole_train": ("identity", dict(train=True), {"image": picture(100, 90, 10), "identity": 3}, 9),
    "expr_box_train": ("expression", dict(train=True), {"image": picture(160, 150, 11), "face_box": BOX,
                                                        "expression": 2}, 10),
}
# name: (protocol, model input, image columns, dataset columns)
PREPARER_CASES = {
    "300w": ("dense_pixel_values", ("image",), {"image": [picture(160, 150, 1), picture(120, 130, 2)],
                                                "face_box": [BOX, [10.0, 10.0, 100.0, 110.0]]}),
    "lapa": ("dense_pixel_values", ("image",), {"image": [picture(160, 150, 2)], "face_keypoints": [KEYPOINTS]}),
    "celebamask-hq": ("dense_pixel_values", ("image",), {"image": [picture(640, 640, 4)]}),
    "morph2": ("pixel_values", ("image",), {"image": [picture(160, 150, 7)] * 2, "face_keypoints": [KEYPOINTS, None]}),
    "rafdb": ("pixel_values", ("image",), {"image": [picture(100, 90, 8)]}),
    "lfw": ("pixel_values", ("image_a", "image_b"), {"image_a": [picture(112, 112, 1)],
                                                     "image_b": [picture(120, 100, 2)]}),
}
# Recorded from the builder and preparer before they called crop_row (their own warps and normalization): per case,
# (sum, position-weighted sum) of the pixels, then of the target (builder) or the crop matrices (preparer).
RECORDED = {
    "lm_box_train_flip": (-626763.144675, -30088383.7701, 1706.46764, 6337.1276),
    "lm_box_train_default": (131366.431853, 6305086.1222, 2281.711395, 10291.1506),
    "lm_kp_train": (-520728.284301, -24979820.0686, 2452.026398, 9898.1496),
    "lm_box_eval": (152683.203424, 7314199.1129, 2388.974197, 10614.6648),
    "mask_kp_tanh_train": (-25744.782096, -1235469.6566, 164161.0, 7861928.0),
    "mask_kp_tanh_eval": (-438719.726303, -21062279.2684, 156686.0, 7508652.0),
    "mask_whole_train_flip": (-675870.232293, -32448461.4344, 214242.0, 10294053.0),
    "mask_whole_eval": (148843.291229, 7146871.2652, 262401.0, 12591574.0),
    "age_kp_train": (-176.777915, -6186.569, 40.0, 0.0),
    "age_whole_eval": (-117.669717, -8357.1897, 40.0, 0.0),
    "attr_whole_train": (-31.348753, 3241.8151, 0.0, -1.0),
    "attr_whole_train2": (185.346724, 7022.8908, 0.0, -1.0),
    "id_whole_train": (-163.136385, -8892.8996, 3.0, 0.0),
    "expr_box_train": (56.259909, 2241.2836, 2.0, 0.0),
    "300w/image": (235658.381803, 11312773.9997, -166.750222, -504.0649),
    "lapa/image": (-438719.726303, -21062279.2684, 52.040558, 135.7707),
    "celebamask-hq/image": (148573.866416, 7111490.2713, 1.4, 2.5),
    "morph2/image": (62.657561, 3304.0157, -26.475368, -94.3918),
    "rafdb/image": (-102.908928, -5622.5698, 2.546667, 5.0244),
    "lfw/image_a": (234.094686, 12847.5409, 2.0, 4.0),
    "lfw/image_b": (-6.14812, 117.1256, 2.08, 3.6867),
}
# PIL's bilinear resize rounds differently before Pillow 13: a quarter of the pixels of the 120x100 -> 112 resize come
# out one uint8 level apart (the crop matrices are equal). gradio (the demo extra) requires Pillow < 13, so both
# versions are pinned: the values under Pillow 12.3.
if int(PIL.__version__.split(".")[0]) < 13:
    RECORDED["lfw/image_b"] = (-5.967728, 78.2472, 2.08, 3.6867)


def checksum(values: torch.Tensor) -> tuple[float, float]:
    """(sum, sum weighted by flat position mod 97) in float64: moves with any change of value, flip or shift."""
    flat = values.double().flatten()
    return flat.sum().item(), (flat * (torch.arange(flat.numel(), dtype=torch.float64) % 97)).sum().item()


def assert_recorded(name: str, pixels: torch.Tensor, other: torch.Tensor):
    # The tolerance absorbs last-bit differences of another CPU's float kernels, not a changed crop.
    assert checksum(pixels) + checksum(other) == pytest.approx(RECORDED[name], rel=1e-6, abs=0.05), name


@pytest.mark.parametrize("name", list(BUILDER_CASES))
def test_training_examples_are_those_of_the_implementation_before_crop_row(name):
    task, options, row, seed = BUILDER_CASES[name]
    example = TaskExampleBuilder(TASKS[task], **options)(row, np.random.default_rng(seed))
    assert_recorded(name, example["pixel_values"], example["target"])


@pytest.mark.parametrize("name", list(PREPARER_CASES))
def test_evaluation_crops_are_those_of_the_implementation_before_crop_row(name):
    model_input, columns, data = PREPARER_CASES[name]
    dataset = Dataset.from_dict(data)
    preparer = BatchPreparer(dataset, columns, model_input, PROTOCOLS[name], FaceptorImageProcessor(), "test")
    prepared = preparer(list(range(len(dataset))))
    for column in columns:
        assert_recorded(f"{name}/{column}", prepared.pixels[column], prepared.matrices[column])
