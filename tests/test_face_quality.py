"""Face quality (faceptor_hf/face_quality.py) on its own and in the pipeline's ``quality`` output: blur lowers
sharpness monotonically, a mirrored face flips the yaw sign, rotating the photo changes roll by the rotation,
parsing gives the visible fraction, and ``min_quality`` in ``verify``."""

import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest
import torch
from transformers import pipeline

from faceptor_hf import FaceAnalysisError
from faceptor_hf.face_quality import (
    check_min_quality,
    combined_score,
    head_pose,
    laplacian_variance,
    passes_quality,
    visible_fraction,
)

from conftest import IMAGES

ASTRONAUT_KEYPOINTS = np.array([[204.7, 101.0], [247.3, 103.4], [223.6, 129.4], [202.6, 138.2], [244.4, 140.4]])


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return pipeline("face-analysis", model=str(checkpoint))


def test_blur_lowers_sharpness_monotonically(pipe):
    photo = PIL.Image.open(IMAGES / "astronaut.png").convert("RGB")
    radii = [0, 0.5, 1, 2, 4]
    blurred = [np.asarray(photo.filter(PIL.ImageFilter.GaussianBlur(radius))) for radius in radii]
    faces = pipe(blurred, face_keypoints=[ASTRONAUT_KEYPOINTS] * len(radii), tasks=["age_morph2"])
    sharpness = [found[0]["quality"]["sharpness"] for found in faces]
    assert all(a > b for a, b in zip(sharpness, sharpness[1:])), sharpness
    assert sharpness[-1] < sharpness[0] / 5


def test_laplacian_variance_of_flat_and_checkered_crops():
    flat = torch.full((1, 3, 16, 16), 0.5)
    checkered = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float().expand(1, 3, 16, 16)
    values = laplacian_variance(torch.cat([flat, checkered]))
    assert values[0] == 0
    # every interior response is +-4 (a pixel against its 4 opposite neighbors): variance 16
    assert values[1] == pytest.approx(16.0)


def test_mirrored_keypoints_flip_yaw_and_roll():
    keypoints = torch.tensor([[[30.0, 40.0], [70.0, 44.0], [60.0, 60.0], [38.0, 80.0], [66.0, 82.0]]])
    yaw, roll = head_pose(keypoints)
    mirrored = keypoints.clone()
    mirrored[..., 0] = 100 - mirrored[..., 0]
    mirrored = mirrored[:, [1, 0, 2, 4, 3]]  # image-left eye first again, as a detector reports them
    yaw_m, roll_m = head_pose(mirrored)
    assert yaw.item() > 5
    assert yaw_m.item() == pytest.approx(-yaw.item(), abs=1e-4)
    assert roll_m.item() == pytest.approx(-roll.item(), abs=1e-4)
    frontal = torch.tensor([[[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]]])
    assert head_pose(frontal)[0].item() == pytest.approx(0.0, abs=1e-6)


def test_mirrored_photo_flips_the_yaw_sign(pipe):
    """Through the pipeline on a mirrored photo. The keypoints are the detector's on the photo, mirrored with it:
    RetinaFace's own keypoints on the mirrored photo carry a bias of ~3 degrees of yaw (seen: -5.4 on the photo,
    -2.8 on its mirror), as large as this nearly frontal face's yaw."""
    photo = PIL.Image.open(IMAGES / "grace_hopper.jpg").convert("RGB")
    detected = np.array(pipe(photo, tasks=["age_morph2"])[0]["keypoints"])
    mirrored_points = detected.copy()
    mirrored_points[:, 0] = photo.width - 1 - mirrored_points[:, 0]
    mirrored_points = mirrored_points[[1, 0, 2, 4, 3]]  # image-left eye first, as the detector reports them
    plain, mirrored = pipe([photo, photo.transpose(PIL.Image.FLIP_LEFT_RIGHT)],
                           face_keypoints=[detected[None], mirrored_points[None]], tasks=["age_morph2"])
    yaw, yaw_mirrored = plain[0]["quality"]["yaw"], mirrored[0]["quality"]["yaw"]
    assert abs(yaw) > 2, yaw  # turned a little, so the sign means something
    assert yaw_mirrored == pytest.approx(-yaw, abs=0.05)
    assert mirrored[0]["quality"]["roll"] == pytest.approx(-plain[0]["quality"]["roll"], abs=0.05)
    # about the same sharpness (the ArcFace template is not exactly symmetric, so the crops differ slightly)
    assert mirrored[0]["quality"]["sharpness"] == pytest.approx(plain[0]["quality"]["sharpness"], rel=0.1)


@pytest.mark.parametrize("angle", [-25, 15])
def test_rotated_photo_changes_roll_by_the_rotation(pipe, angle):
    photo = PIL.Image.open(IMAGES / "grace_hopper.jpg").convert("RGB")
    # PIL rotates counterclockwise on screen: the eye line's angle (y down) changes by -angle.
    plain, rotated = pipe([photo, photo.rotate(angle, resample=PIL.Image.BICUBIC, expand=True)],
                          tasks=["age_morph2"])
    roll, roll_rotated = plain[0]["quality"]["roll"], rotated[0]["quality"]["roll"]
    assert roll_rotated == pytest.approx(roll - angle, abs=2.0)


def test_visible_fraction_counts_face_parts_in_the_face_area():
    points = torch.tensor([[[20.0, 24.0], [44.0, 24.0], [32.0, 34.0], [23.0, 45.0], [41.0, 45.0]]]).expand(3, 5, 2)
    face_part = torch.tensor([False, True])  # class 0: background/occluder, class 1: skin
    labels = torch.ones(3, 64, 64, dtype=torch.long)
    labels[1, :, 32:] = 0  # the right half hidden
    labels[2] = 0
    fractions = visible_fraction(labels, face_part, points)
    assert fractions[0] == 1.0 and fractions[2] == 0.0
    assert fractions[1] == pytest.approx(0.5, abs=0.06)


def test_pipeline_quality_fields(pipe):
    with_parsing = pipe(str(IMAGES / "astronaut.png"), tasks=["parsing_celebam", "age_morph2"])[0]["quality"]
    without = pipe(str(IMAGES / "astronaut.png"), tasks=["age_morph2"])[0]["quality"]
    assert 0 <= with_parsing["visible_fraction"] <= 1 and "visible_fraction" not in without
    assert without["detector_score"] > 0.9 and 90 < without["face_size"] < 100
    assert 0 <= without["score"] <= 1 and without["score"] == pytest.approx(combined_score(without), abs=1e-4)
    given = pipe(str(IMAGES / "astronaut.png"), face_keypoints=[ASTRONAUT_KEYPOINTS], tasks=["age_morph2"])
    assert given[0]["quality"]["detector_score"] == 1.0  # given faces are not detected


def test_min_quality_thresholds():
    quality = {"detector_score": 0.9, "face_size": 40.0, "sharpness": 0.01, "yaw": -30.0, "roll": 5.0,
               "score": 0.5}
    assert passes_quality(quality, None) and passes_quality(quality, 0.5) and not passes_quality(quality, 0.6)
    assert passes_quality(quality, {"max_yaw": 30, "face_size": 40}) and not passes_quality(quality, {"max_yaw": 20})
    assert not passes_quality(quality, {"visible_fraction": 0.1})  # no parsing ran: the threshold cannot pass
    for bad in (1.5, -0.1, "high", {"blur": 1}, {"score": "x"}):
        with pytest.raises(ValueError, match="min_quality"):
            check_min_quality(bad)


def test_verify_refuses_faces_below_min_quality(pipe):
    astronaut = str(IMAGES / "astronaut.png")
    assert pipe.verify(astronaut, astronaut, min_quality=0.5)["similarity"] > 0.999
    with pytest.raises(FaceAnalysisError, match="astronaut.png: face quality .* below min_quality"):
        pipe.verify(astronaut, astronaut, min_quality={"face_size": 500})
