"""The pipeline and processor as Python users meet them: validated options, model objects, devices, the untrained
flag, and face verification."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from faceptor_hf import FaceAnalysisError, FaceptorImageProcessor, FaceptorModel

from conftest import tiny_config

IMAGES = Path(__file__).parent.parent / "examples" / "images"
TASKS = ["recog_ms1mv3", "age_morph2", "affect_rafdb", "parsing_celebam", "align_300w"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FaceptorModel(tiny_config(tasks=TASKS)).eval()


@pytest.fixture(scope="module")
def pipe(model):
    return pipeline("face-analysis", model=model)


def test_processor_names_an_unknown_option_and_the_valid_ones():
    processor = FaceptorImageProcessor()
    with pytest.raises(TypeError, match=r"'face_keypoint' \(did you mean 'face_keypoints'\?\).*valid options: "
                                        r"face_keypoints, face_boxes"):
        processor(torch.rand(3, 40, 40), face_keypoint=[[[1, 2]] * 5])
    with pytest.raises(ValueError, match="return_tensors"):
        processor(torch.rand(3, 40, 40), return_tensors="tf")
    with pytest.raises(Exception, match="return_pixel_values"):
        processor(torch.rand(3, 40, 40), return_pixel_values="yes")


def test_processor_returns_numpy_when_asked():
    out = FaceptorImageProcessor()(torch.rand(3, 40, 40), return_tensors="np")
    assert isinstance(out["pixel_values"], np.ndarray) and out["pixel_values"].shape == (1, 3, 112, 112)
    assert isinstance(out.geometry.dense_affine_matrices, np.ndarray) and set(out) == {"pixel_values",
                                                                                       "dense_pixel_values"}


def test_a_model_object_makes_a_pipeline_and_its_results_say_untrained(pipe):
    assert isinstance(pipe.image_processor, FaceptorImageProcessor)
    faces = pipe(str(IMAGES / "astronaut.png"), tasks=["age_morph2", "align_300w"])
    assert len(faces) == 1 and faces[0]["untrained"] is True
    assert faces[0]["tasks"]["age_morph2"]["type"] == "age" and faces[0]["tasks"]["align_300w"]["type"] == "align"
    json.dumps(faces)


def test_results_of_loaded_weights_carry_no_untrained_flag(model, tmp_path):
    trained = FaceptorModel(tiny_config(tasks=TASKS)).eval()
    trained.load_state_dict(model.state_dict())
    faces = pipeline("face-analysis", model=trained)(str(IMAGES / "astronaut.png"), tasks=["age_morph2"])
    assert "untrained" not in faces[0]


def test_pipeline_names_an_unknown_option(pipe):
    with pytest.raises(TypeError, match=r"'max_face' \(did you mean 'max_faces'\?\).*valid options"):
        pipe(str(IMAGES / "astronaut.png"), max_face=1)
    with pytest.raises(ValueError, match="on_error"):
        pipe(str(IMAGES / "astronaut.png"), on_error="ignore")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
@pytest.mark.parametrize("device", [0, "cuda", "cuda:1"])
def test_cuda_device_without_cuda_is_a_clear_error(model, device):
    with pytest.raises(ValueError, match="CUDA is not available"):
        pipeline("face-analysis", model=model, device=device)


def test_verify_same_photo_and_different_photos(pipe):
    astronaut, hopper = str(IMAGES / "astronaut.png"), str(IMAGES / "grace_hopper.jpg")
    same = pipe.verify(astronaut, astronaut)
    assert same["similarity"] == pytest.approx(1.0, abs=1e-5) and same["same"] is True
    assert same["untrained"] is True and len(same["faces"]) == 2
    other = pipe.verify(astronaut, hopper, threshold=1.0)
    assert -1.0 <= other["similarity"] < 1.0 - 1e-4 and other["same"] is False and other["threshold"] == 1.0


def test_verify_names_the_photo_without_a_face(pipe):
    blank = np.full((200, 200, 3), 127, dtype=np.uint8)
    with pytest.raises(FaceAnalysisError, match="image 1: no face found"):
        pipe.verify(str(IMAGES / "astronaut.png"), blank)
    with pytest.raises(ValueError, match="not a face-recognition"):
        pipe.verify(str(IMAGES / "astronaut.png"), str(IMAGES / "astronaut.png"), task="age_morph2")


def test_faces_of_several_photos_share_one_pass_per_encoder_input(model, pipe):
    """One model call per batch of faces, whichever photos they come from; a photo without a face or one that
    fails takes no place in the model's input and keeps its own result."""
    from transformers.pipelines.base import ChunkPipeline

    calls = []

    def counting_forward(**kwargs):
        calls.append({key: tuple(value.shape) for key, value in kwargs.items() if key.endswith("pixel_values")
                      and value is not None})
        return type(model).forward(model, **kwargs)

    photos = [str(IMAGES / "astronaut.png"), np.full((60, 80, 3), 127, np.uint8), str(IMAGES / "grace_hopper.jpg"),
              b"not an image"]
    model.forward = counting_forward
    try:
        results = pipe(photos, batch_size=8, on_error="return", tasks=["age_morph2", "parsing_celebam"])
        together = list(calls)
        calls.clear()
        pipe(photos[:3], batch_size=1, tasks=["age_morph2"])
    finally:
        del model.forward
    assert isinstance(pipe, ChunkPipeline)
    assert [len(faces) if isinstance(faces, list) else "error" for faces in results] == [1, 0, 1, "error"]
    assert together == [{"pixel_values": (2, 3, 112, 112), "dense_pixel_values": (2, 3, 512, 512)}]
    assert calls == [{"pixel_values": (1, 3, 112, 112)}] * 2
