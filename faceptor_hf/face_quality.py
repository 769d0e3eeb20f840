"""Face quality: cheap per-face signals that tell a usable gallery or query face from a bad one.

``pipeline("face-analysis")`` adds a ``quality`` dict to every face:

- ``detector_score``: the detector's confidence (1.0 for faces given by ``face_keypoints`` / ``face_boxes``);
- ``face_size``: the shorter side of the face box, in photo pixels;
- ``sharpness``: the variance of the 3x3 Laplacian of the gray 112-px aligned crop (intensities in [0, 1]); it
  falls as the face gets blurrier (a sharp photo's faces give about 1e-2, a Gaussian blur of sigma 2 px at
  112 px about 1e-3);
- ``yaw`` / ``roll``: head rotation in degrees estimated from the 5 keypoints. ``roll`` is the angle of the line
  from the image-left eye to the image-right eye (positive when it descends to the right on screen, i.e. the head
  leans clockwise); ``yaw`` comes from how far the nose sits off the eye/mouth midline (positive when the nose
  points to the image right), 0 for a frontal face;
- ``visible_fraction`` (only when a parsing task ran): the share of the canonical face area of the aligned crop
  (an ellipse around the template's eyes, nose and mouth) that parsing labels as skin, brows, eyes, nose, lips or
  mouth; hands, masks, hair, hats and sunglasses over the face lower it;
- ``score``: all of the above combined into [0, 1] (``combined_score``), the number ``min_quality=`` thresholds.

Shipped with a saved model (the pipeline imports it): imports only torch and the standard library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Sharpness at which the combined score stops rewarding more (a face this sharp counts as fully sharp).
SHARP_ENOUGH = 4e-3
# Face size (shorter box side, pixels) from which size stops lowering the combined score: recognition crops are
# 112 px, and faces much smaller than that are upsampled.
LARGE_ENOUGH = 64.0
# Labels of a parsing task that show the face itself (CelebAMask-HQ and LaPa names); everything else inside the
# face area (background, hair, hat, eyeglasses, cloth) hides it.
FACE_PART_LABELS = frozenset({
    "skin", "nose", "right_brow", "left_brow", "left_eyebrow", "right_eyebrow", "right_eye", "left_eye",
    "inner_mouth", "lower_lip", "upper_lip",
})
# Named thresholds ``min_quality`` accepts as a dict, and the quality field each one bounds.
NAMED_THRESHOLDS = {"score": ("score", "min"), "detector_score": ("detector_score", "min"),
                    "face_size": ("face_size", "min"), "sharpness": ("sharpness", "min"),
                    "visible_fraction": ("visible_fraction", "min"), "max_yaw": ("yaw", "max_abs"),
                    "max_roll": ("roll", "max_abs")}


def laplacian_variance(crops: torch.Tensor) -> torch.Tensor:
    """Sharpness of face crops: variance of the 3x3 Laplacian of their gray image, over the interior pixels.

    crops: (F, 3, H, W) RGB in [0, 1] -> (F,) float32.
    """
    crops = crops.float()
    gray = (0.299 * crops[:, 0] + 0.587 * crops[:, 1] + 0.114 * crops[:, 2]).unsqueeze(1)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=gray.device)
    response = F.conv2d(gray, kernel.view(1, 1, 3, 3))  # no padding: the crop's border would add false edges
    return response.flatten(1).var(dim=1, unbiased=False)


def head_pose(keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(yaw, roll) in degrees from 5 keypoints (image-left eye, image-right eye, nose, left and right mouth corners).

    keypoints: (F, 5, 2) pixel coordinates -> yaw (F,), roll (F,). See the module docstring for the signs. Yaw
    treats the nose tip as a point half an eye distance in front of the eye/mouth plane, so a nose offset of
    ``d`` eye distances from the midline reads as ``asin(2 d)``: a rough estimate, good for filtering profiles.
    """
    points = keypoints.to(torch.float64)
    eye_vector = points[:, 1] - points[:, 0]
    roll = torch.atan2(eye_vector[:, 1], eye_vector[:, 0])
    # Undo the roll about the eye center, so the nose offset is measured along the eye line.
    cos, sin = torch.cos(-roll), torch.sin(-roll)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (F, 2, 2)
    center = points[:, :2].mean(1, keepdim=True)
    upright = (points - center) @ rotation.transpose(1, 2)
    eye_distance = upright[:, 1, 0] - upright[:, 0, 0]
    midline = (upright[:, :2, 0].mean(1) + upright[:, 3:, 0].mean(1)) / 2
    offset = (upright[:, 2, 0] - midline) / eye_distance.abs().clamp_min(1e-6)
    yaw = torch.asin((2 * offset).clamp(-1.0, 1.0))
    return torch.rad2deg(yaw).float(), torch.rad2deg(roll).float()


def canonical_face_area(height: int, width: int, points: torch.Tensor) -> torch.Tensor:
    """(height, width) bool: the ellipse where an aligned face shows skin and features, from its 5 keypoints in
    crop pixels (eyes, nose, mouth corners): centered between eyes and mouth, as wide as the eyes are apart and
    reaching from above the brows to below the lips (measured along the face's own axes)."""
    points = points.to(torch.float64)
    eyes, mouth = points[:2].mean(0), points[3:].mean(0)
    center = (eyes + mouth) / 2
    across = points[1] - points[0]
    half_width = across.norm().clamp_min(1e-6) * 0.8
    axis_x = across / across.norm().clamp_min(1e-6)
    axis_y = torch.stack([-axis_x[1], axis_x[0]])
    half_height = (mouth - eyes).norm().clamp_min(1e-6) * 0.9
    ys = torch.arange(height, dtype=torch.float64).view(-1, 1) - center[1]
    xs = torch.arange(width, dtype=torch.float64).view(1, -1) - center[0]
    along_x = xs * axis_x[0] + ys * axis_x[1]
    along_y = xs * axis_y[0] + ys * axis_y[1]
    return (along_x / half_width) ** 2 + (along_y / half_height) ** 2 <= 1.0


def visible_fraction(labels: torch.Tensor, face_part: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Share of each face's canonical face area (``canonical_face_area``) labeled as a face part.

    labels: (F, h, w) class ids in the aligned crop; face_part: (C,) bool, True for the classes of
    ``FACE_PART_LABELS``; points: (F, 5, 2) each face's keypoints in (h, w) crop pixels -> (F,) in [0, 1].
    """
    fractions = []
    for face in range(labels.shape[0]):
        area = canonical_face_area(labels.shape[-2], labels.shape[-1], points[face]).to(labels.device)
        visible = face_part.to(labels.device)[labels[face].long()] & area
        fractions.append(visible.sum().float() / area.sum().clamp_min(1).float())
    return torch.stack(fractions) if fractions else torch.zeros(0)


def combined_score(quality: dict) -> float:
    """One number in [0, 1]: detector score x size factor (``face_size / LARGE_ENOUGH``, at most 1) x sharpness
    factor (``sharpness / SHARP_ENOUGH``, at most 1) x pose factor (``cos(yaw)``) x ``visible_fraction`` when
    present. Roll does not count: alignment undoes it."""
    size = min(1.0, quality["face_size"] / LARGE_ENOUGH)
    sharp = min(1.0, quality["sharpness"] / SHARP_ENOUGH)
    pose = max(0.0, math.cos(math.radians(quality["yaw"])))
    score = quality["detector_score"] * size * sharp * pose * quality.get("visible_fraction", 1.0)
    return min(1.0, max(0.0, score))


def face_quality(boxes: torch.Tensor, keypoints: torch.Tensor, scores: torch.Tensor | None,
                 sharpness: torch.Tensor, visible: torch.Tensor | None = None) -> list[dict]:
    """The ``quality`` dict of each face (module docstring).

    boxes (F, 4) [x1, y1, x2, y2], keypoints (F, 5, 2), scores (F,) or None (faces given, not detected),
    sharpness (F,), visible (F,) or None.
    """
    boxes = boxes.detach().float().cpu().reshape(-1, 4)
    sizes = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    yaw, roll = head_pose(keypoints.detach().cpu().reshape(-1, 5, 2))
    scores = torch.ones(len(boxes)) if scores is None else scores.detach().float().cpu().reshape(-1)
    sharpness = sharpness.detach().float().cpu().reshape(-1)
    out = []
    for face in range(len(boxes)):
        quality = {"detector_score": round(float(scores[face]), 4), "face_size": round(float(sizes[face]), 1),
                   "sharpness": round(float(sharpness[face]), 6), "yaw": round(float(yaw[face]), 2),
                   "roll": round(float(roll[face]), 2)}
        if visible is not None:
            quality["visible_fraction"] = round(float(visible[face]), 4)
        quality["score"] = round(combined_score(quality), 4)
        out.append(quality)
    return out


def check_min_quality(min_quality) -> None:
    """Raise ``ValueError`` unless ``min_quality`` is None, a number in [0, 1] or a dict of ``NAMED_THRESHOLDS``."""
    if min_quality is None:
        return
    if isinstance(min_quality, dict):
        unknown = sorted(set(min_quality) - set(NAMED_THRESHOLDS))
        if unknown:
            raise ValueError(f"min_quality: unknown threshold(s) {unknown}; known: {sorted(NAMED_THRESHOLDS)}")
        for name, value in min_quality.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"min_quality[{name!r}] must be a number, got {value!r}")
        return
    if isinstance(min_quality, bool) or not isinstance(min_quality, (int, float)) or not 0 <= min_quality <= 1:
        raise ValueError(f"min_quality must be a combined score in [0, 1] or a dict of named thresholds "
                         f"{sorted(NAMED_THRESHOLDS)}, got {min_quality!r}")


def passes_quality(quality: dict | None, min_quality) -> bool:
    """Whether a face's ``quality`` meets ``min_quality``: a number thresholds ``quality["score"]``; a dict applies
    each named threshold (``max_yaw`` / ``max_roll`` bound the absolute angle, the others are minimums). A
    threshold on a field the face lacks (``visible_fraction`` without parsing) fails; None passes everything."""
    if min_quality is None:
        return True
    if quality is None:
        return False
    thresholds = min_quality if isinstance(min_quality, dict) else {"score": min_quality}
    for name, bound in thresholds.items():
        field, kind = NAMED_THRESHOLDS[name]
        value = quality.get(field)
        if value is None:
            return False
        if kind == "min" and value < bound:
            return False
        if kind == "max_abs" and abs(value) > bound:
            return False
    return True


__all__ = ["FACE_PART_LABELS", "NAMED_THRESHOLDS", "check_min_quality", "combined_score", "face_quality",
           "head_pose", "laplacian_variance", "passes_quality", "visible_fraction"]
