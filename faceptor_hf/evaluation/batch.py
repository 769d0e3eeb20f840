"""One evaluated batch: a task's raw model outputs, the dataset rows they came from, and the crop geometry that maps
predictions back to the original images. Task-type metrics (``task_metrics``) read it.

Shapes: B = rows of the batch, S = crop side (112 or 512), N = landmarks, C = classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..dataset_crops import unwarp_points
from ..face_alignment import compose, resize_matrix
from ..tanh_warp import tanh_unwarp_map, untanh_warp_points
from ..task_decoding import parsing_labels, upsampled_mask_logits
from ..task_types import FaceptorTask, get_task_type


@dataclass
class EvaluationBatch:
    """Model outputs of one batch of dataset rows, per image column (``image``, or ``image_a``/``image_b`` of
    verification pairs).

    Attributes:
        task: the model task evaluated.
        raw: image column -> raw head output (``FaceptorOutput.task_logits`` form; with flip-sum, the sum of the
            outputs of the crop and of its mirror image).
        normalized_points: image column -> (B, N, 2) landmarks the model already decoded (None if not).
        rows: column -> list of B values: every dataset column other than the image columns (targets, boxes,
            masks as PIL images, ids).
        matrices: image column -> (B, 2, 3) float64 image -> aligned-crop matrices.
        image_sizes: image column -> B (height, width) of the original images.
        crop_size: S.
        warp_factor: tanh-warp on top of the crop (0 = none).
        score_size: side of the frame parsing is scored in (None = the target mask's size).
        indices: B row numbers in the evaluated dataset.
    """

    task: FaceptorTask
    raw: dict[str, torch.Tensor]
    rows: dict[str, list]
    matrices: dict[str, torch.Tensor]
    image_sizes: dict[str, list[tuple[int, int]]]
    crop_size: int
    indices: list[int]
    warp_factor: float = 0.0
    score_size: int | None = None
    normalized_points: dict[str, torch.Tensor | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def decoded(self, column: str = "image") -> dict[str, torch.Tensor]:
        """The task type's decoded predictions (``TaskType.decode``) of one image column, in crop space."""
        return get_task_type(self.task).decode(self.task, self.raw[column], crop_size=(self.crop_size,) * 2,
                                               normalized_points=self.normalized_points.get(column))

    def points_in_image(self, points: torch.Tensor, column: str = "image") -> torch.Tensor:
        """(B, N, 2) crop points -> (B, N, 2) float64 CPU points of the original images (inverse tanh-warp, then
        the inverse crop matrix)."""
        aligned = untanh_warp_points(points.detach().double().cpu(), self.crop_size, self.warp_factor)
        return unwarp_points(aligned, self.matrices[column])

    def labels_in_frame(self, index: int, frame_size: tuple[int, int], column: str = "image") -> torch.Tensor:
        """(H, W) int64 CPU class map of row ``index`` in a frame of ``frame_size`` (height, width) that spans the
        original image (its own size, or a resized copy such as CelebAMask-HQ's 512 frame): the mask logits are
        upsampled to the crop, warped back bilinearly (zero logits outside the crop), then argmax'd."""
        logits = upsampled_mask_logits(self.raw[column][index:index + 1], (self.crop_size,) * 2)[0]
        matrix = self.matrices[column][index]
        image_height, image_width = self.image_sizes[column][index]
        if tuple(frame_size) != (image_height, image_width):
            matrix = compose(matrix, resize_matrix(frame_size[0], frame_size[1], image_height, image_width))
        restored = tanh_unwarp_map(logits, matrix, tuple(frame_size), self.warp_factor)
        return parsing_labels(restored).cpu()


__all__ = ["EvaluationBatch"]
