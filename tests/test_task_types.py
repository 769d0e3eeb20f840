"""The task-type registry and the tensor decoders: every type complete, decoders pinned to the official formulas,
flip permutations, and a user-registered type going through config, model, processor and captions."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from faceptor_hf import FaceptorConfig, FaceptorImageProcessor, FaceptorModel, register_task_type
from faceptor_hf import task_decoding as decoding
from faceptor_hf.configuration_faceptor import CELEBAMASK_HQ_LABELS, LAPA_LABELS, OFFICIAL_TASKS, make_task
from faceptor_hf.task_types import LANDMARK_FLIP_PAIRS, TASK_TYPES, get_task_type
from faceptor_hf.visualization import face_caption

from conftest import tiny_config


@pytest.mark.parametrize("name", sorted(TASK_TYPES))
def test_every_registered_type_has_every_part(name):
    task_type = TASK_TYPES[name]
    assert task_type.name == name
    task_type.validate()
    for part in ("decode", "to_json", "summarize", "describe_labels", "default_labels", "flip_permutation"):
        assert callable(getattr(task_type, part)), part
    labels = task_type.default_labels(3)
    assert isinstance(labels, list) and (labels == [] if task_type.readout == "embedding" else len(labels) == 3)


def test_every_official_task_has_a_registered_type_and_round_trips_through_json():
    config = FaceptorConfig.faceptor_full()
    assert {task.type for task in config.tasks} <= set(TASK_TYPES)
    assert [t.name for t in config.tasks] == list(OFFICIAL_TASKS)
    restored = FaceptorConfig(**json.loads(config.to_json_string()))
    assert restored.tasks == config.tasks
    assert {t.model_input for t in config.tasks if t.type in ("parsing", "align")} == {"dense_pixel_values"}
    assert all(t.input_size == 112 for t in config.tasks if t.model_input == "pixel_values")


def test_older_configs_with_input_size_still_load():
    old = {"name": "age_x", "type": "age", "readout": "value", "input_size": 112, "num_queries": 101,
           "labels": [str(i) for i in range(101)]}
    task = FaceptorConfig(tasks=[old]).tasks[0]
    assert task.model_input == "pixel_values" and task.num_queries == 101


# ---- decoders: the official formulas on small hand-computed cases -------------------------------------------------
def test_expected_age_is_the_sigmoid_l1_expectation():
    logits = torch.tensor([[0.0, 0.0, 0.0], [30.0, -30.0, -30.0], [-30.0, -30.0, 30.0]])
    # bins 0, 1, 2: equal weights -> 1; all mass on bin 0 -> ~0; all mass on bin 2 -> 2
    torch.testing.assert_close(decoding.expected_age(logits), torch.tensor([1.0, 0.0, 2.0]), atol=1e-4, rtol=0)
    z = torch.tensor([[0.3, -1.2, 2.0, 0.5]])
    p = torch.sigmoid(z) / torch.sigmoid(z).sum()
    torch.testing.assert_close(decoding.expected_age(z), (p * torch.arange(4.0)).sum(-1))
    assert decoding.expected_age(z.to(torch.bfloat16)).dtype == torch.float32


def test_attributes_present_only_above_zero_and_classes_by_argmax():
    logits = torch.tensor([[-1.0, 0.0, 1e-3]])
    assert decoding.attribute_presence(logits).tolist() == [[False, False, True]]  # round(sigmoid(0)) = 0
    torch.testing.assert_close(decoding.attribute_probabilities(logits), torch.sigmoid(logits))
    scores = torch.tensor([[0.1, 2.0, -1.0], [3.0, 2.0, 1.0]])
    assert decoding.class_predictions(scores).tolist() == [1, 0]
    torch.testing.assert_close(decoding.class_probabilities(scores).sum(-1), torch.ones(2))


def test_landmark_points_in_crop_pixels():
    logits = torch.full((1, 1, 8, 8), -30.0)
    logits[0, 0, 2, 5] = 30.0  # one confident pixel at row 2, column 5 of an 8x8 map
    normalized = decoding.heatmap_centroids(logits)
    torch.testing.assert_close(normalized[0, 0], torch.tensor([5.5 / 8, 2.5 / 8]))
    # p = value * size - 0.5: heatmap pixel (5, 2) of an 8-px map covers crop pixels 320..383 / 128..191 at 512
    torch.testing.assert_close(decoding.landmark_points(normalized, (512, 512))[0, 0], torch.tensor([351.5, 159.5]))


def test_parsing_labels_and_embedding_similarity():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 0, 1] = 5.0
    logits[0, 1, 1, 0] = 5.0
    assert decoding.parsing_labels(decoding.upsampled_mask_logits(logits, (2, 2))).tolist() == [[[0, 2], [1, 0]]]
    assert decoding.upsampled_mask_logits(logits, (4, 4)).shape == (1, 3, 4, 4)
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([6.0, 8.0])
    assert float(decoding.embedding_similarity(a, b)) == pytest.approx(1.0)
    assert float(decoding.embedding_similarity(a, torch.tensor([-4.0, 3.0]))) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("mask_format", ["list", "numpy", "rle"])
def test_mask_encodings_round_trip(mask_format):
    mask = np.random.default_rng(0).integers(0, 19, size=(7, 5)).astype(np.uint8)
    encoded = decoding.encode_mask(mask, mask_format)
    json.dumps(encoded if mask_format != "numpy" else [])
    np.testing.assert_array_equal(decoding.decode_mask(encoded), mask)


# ---- flips ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", sorted(LANDMARK_FLIP_PAIRS))
def test_landmark_flip_permutations_are_involutions(count):
    task = make_task(f"align_{count}", type="align", num_queries=count)
    order = get_task_type(task).flip_permutation(task)
    assert sorted(order) == list(range(count)) and [order[i] for i in order] == list(range(count))


def test_flipping_300w_swaps_eye_corners_and_keeps_the_nose_tip():
    order = get_task_type("align").flip_permutation(make_task("align_300w"))
    assert order[36] == 45 and order[45] == 36 and order[30] == 30 and order[0] == 16 and order[8] == 8


def test_parsing_flip_swaps_left_and_right_classes():
    for labels in (CELEBAMASK_HQ_LABELS, LAPA_LABELS):
        task = make_task("parsing_x", type="parsing", labels=labels)
        order = get_task_type(task).flip_permutation(task)
        for i, label in enumerate(labels):
            expected = label.replace("left", "@").replace("right", "left").replace("@", "right")
            assert labels[order[i]] == expected, label


def test_signed_regression_cannot_be_flipped_by_reordering():
    task = make_task("pose_biwi", type="regression", labels=["yaw", "pitch", "roll"])
    assert get_task_type(task).flip_permutation(task) is None


# ---- a user's own type -------------------------------------------------------------------------------------------
def test_a_registered_user_type_runs_end_to_end():
    gaze = dataclasses.replace(TASK_TYPES["regression"], name="gaze_test",
                               summarize=lambda task, result: f"pitch {result['values']['pitch']:+.1f}")
    register_task_type(gaze, exist_ok=True)
    with pytest.raises(ValueError, match="already registered"):
        register_task_type(gaze)
    config = tiny_config(tasks=[{"name": "gaze_mpii", "type": "gaze_test", "labels": ["pitch", "yaw"]},
                                "affect_rafdb"])
    model = FaceptorModel(config).eval()
    processor = FaceptorImageProcessor()
    inputs = processor(torch.rand(3, 60, 60), return_dense_pixel_values=False)
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"])
    face = processor.post_process_face_analysis(out, inputs, model.config)[0][0]
    assert face["tasks"]["gaze_mpii"]["type"] == "gaze_test"
    assert set(face["tasks"]["gaze_mpii"]["values"]) == {"pitch", "yaw"}
    assert face["untrained"] is True
    captions = face_caption(face)
    assert any(line.startswith("gaze_mpii: pitch ") for line in captions)
    assert any(line.startswith("affect_rafdb: ") for line in captions)


def test_unregistered_type_with_a_readout_still_runs_generically():
    config = tiny_config(tasks=[{"name": "pose_biwi", "type": "pose_unregistered", "readout": "value",
                                 "labels": ["yaw", "pitch", "roll"]}])
    task = config.tasks[0]
    assert get_task_type(task).readout == "value" and task.model_input == "pixel_values"
    with pytest.raises(ValueError, match="unknown task type"):
        tiny_config(tasks=[{"name": "pose_biwi", "type": "pose_unregistered", "num_queries": 3}])


def test_bad_task_types_are_refused_at_registration():
    broken = dataclasses.replace(TASK_TYPES["age"], name="broken_test", readout="pixels")
    with pytest.raises(ValueError, match="readout"):
        register_task_type(broken)
    broken = dataclasses.replace(TASK_TYPES["age"], name="broken_test", decode=None)
    with pytest.raises(ValueError, match="lacks"):
        register_task_type(broken)


def test_asking_for_a_loss_without_training_code_says_what_to_import():
    """The shipped registry imports no training code, and never answers None for a loss."""
    import subprocess
    import sys

    probe = ("import sys\nimport faceptor_hf\nfrom faceptor_hf.task_types import get_task_type\n"
             "assert not any(name.startswith('faceptor_hf.training') for name in sys.modules)\n"
             "try:\n    get_task_type('age').loss\nexcept LookupError as error:\n    print(error)\n"
             "import faceptor_hf.training\nprint(get_task_type('age').loss.__name__)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    message, attached = result.stdout.strip().splitlines()[-2:]
    assert "'age'" in message and "import faceptor_hf.training" in message
    assert attached == "<lambda>"


def test_task_names_from_command_line_style_lists():
    config = tiny_config()
    assert config.named_tasks(["age_tiny,align_tiny", "age_tiny", " parsing_tiny "]) == [
        "age_tiny", "align_tiny", "parsing_tiny"]
    assert config.named_tasks("recog_ms1mv3") == ["recog_ms1mv3"] and config.named_tasks([","]) == []
    with pytest.raises(KeyError, match=r"unknown task 'nope', 'zip'; this model's tasks are: recog_ms1mv3"):
        config.named_tasks("nope,age_tiny,zip")
