"""Training losses of every task type, equal to the official ones, and their weighting.

Each loss takes the raw head output exactly as ``FaceptorModel.forward`` returns it in ``task_logits`` and returns
a float32 scalar, computed in float32 with autocast switched off whatever the model's precision. This module
attaches one loss per built-in task type to the registry (``attach_task_part``) when it is imported, which
``import faceptor_hf.training`` (and every training module that computes a loss) does; the registry's ``loss`` is
``loss(task, raw, targets, state) -> fp32 scalar``: ``targets`` is the batched ``target`` of
``training.examples.collate_examples`` (``labels[task]`` of ``FaceptorForMultiTaskTraining``), ``state`` holds
tensors the training model owns (recognition: ``state["classifier_weight"]``, the (K, D) CosFace class matrix). A
user's own task type brings its loss the same way: ``attach_task_part("pose", "loss", my_loss)``.

Shapes: B = batch, D = embedding width, K = identities or age bins, A = attributes, C = classes, N = landmarks.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..configuration_faceptor import OFFICIAL_LOSS_RECIPES, LossRecipe, official_loss_weights
from ..task_decoding import expected_age, heatmap_centroids, upsampled_mask_logits
from ..task_types import FaceptorTask, attach_task_part, get_task_type


@contextlib.contextmanager
def _float32(*tensors: torch.Tensor):
    """Autocast off on the tensors' device; yields the tensors as float32 (losses are computed in fp32 as
    officially trained, also when the forward pass ran in bf16/fp16)."""
    device_type = tensors[0].device.type
    with torch.autocast(device_type=device_type, enabled=False):
        yield [tensor.float() for tensor in tensors]


# ---------------------------------------------------------------------------------------------------------------
# The official losses
# ---------------------------------------------------------------------------------------------------------------
def cosface_loss(embeddings: torch.Tensor, classifier_weight: torch.Tensor, labels: torch.Tensor,
                 scale: float = 64.0, margin: float = 0.4) -> torch.Tensor:
    """CosFace (official ``MarginCosineProductLoss``): mean cross-entropy of s * (cos - m * onehot).

    Args:
        embeddings: (B, D) raw recognition head output (not normalized).
        classifier_weight: (K, D) class centers.
        labels: (B,) int64 identity ids in 0 .. K-1.
    cos = (x . W_c) / max(|x| |W_c|, 1e-8), the clamp applied to the product of the norms as officially.
    """
    with _float32(embeddings, classifier_weight) as (x, weight):
        products = x @ weight.t()
        norms = torch.outer(x.norm(dim=1), weight.norm(dim=1)).clamp(min=1e-8)
        cosine = products / norms
        margins = F.one_hot(labels.long(), cosine.shape[1]).to(cosine.dtype) * margin
        return F.cross_entropy(scale * (cosine - margins), labels.long())


def age_label_distribution(ages: torch.Tensor, num_bins: int = 101, sigma: float = 2.0) -> torch.Tensor:
    """(B,) ages in years -> (B, num_bins) DLDL-v2 target: the Gaussian pdf with ``sigma`` around the age, taken at
    k = 0 .. num_bins - 1 and L1-normalized.

    As the official age datasets build it: pdf values in float64, stored as float32, then divided by their float32
    sum (``F.normalize(p=1)``). The official labels are integer years; the age here is used unrounded, which is the
    same target for integer ages and the natural one for fractional ages."""
    bins = torch.arange(num_bins, dtype=torch.float64, device=ages.device)
    centered = bins[None, :] - ages.to(torch.float64)[:, None]
    pdf = torch.exp(-centered**2 / (2 * sigma**2)) / (torch.sqrt(torch.tensor(2 * torch.pi, dtype=torch.float64))
                                                      * sigma)
    return F.normalize(pdf.float(), p=1, dim=1)


def age_loss(logits: torch.Tensor, ages: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """DLDL-v2 (official ``AgeLoss_DLDLV2``): KL(q || p) summed over bins and divided by B, plus the mean absolute
    error of the expected age.

    Args:
        logits: (B, K) age-bin logits; p = sigmoid(logits) L1-normalized over the K bins.
        ages: (B,) float years; q = ``age_label_distribution(ages, K, sigma)``.
    """
    with _float32(logits, ages) as (z, years):
        probabilities = F.normalize(torch.sigmoid(z), p=1, dim=1)
        target = age_label_distribution(years, z.shape[1], sigma)
        divergence = F.kl_div(probabilities.log(), target, reduction="sum") / z.shape[0]
        absolute_error = (expected_age(z) - years).abs().mean()
        return divergence + absolute_error


def attribute_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary attributes (official ``CEL_Sigmoid`` without sample weights): BCE-with-logits per attribute, entries
    whose target is -1 (unknown) left out, summed over attributes and batch and divided by B.

    Args:
        logits: (B, A); targets: (B, A) with 1 present, 0 absent, -1 unknown.
    """
    with _float32(logits) as (z,):
        known = targets != -1
        per_entry = F.binary_cross_entropy_with_logits(z, targets.clamp(min=0).float(), reduction="none")
        return (per_entry * known).sum() / z.shape[0]


def expression_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (official ``MyCrossEntropyLoss``; no label smoothing). logits (B, C), labels (B,) int."""
    with _float32(logits) as (z,):
        return F.cross_entropy(z, labels.long())


def parsing_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pixel-wise mean cross-entropy (official ``ParsingLoss``) after the official ``ParsingOutput`` upsampling.

    Args:
        logits: (B, C, h, w) raw parsing head output (``task_logits``), upsampled bilinearly to the mask size.
        masks: (B, H, W) int class ids; padding outside the source image is background (0), as officially.
    """
    with _float32(logits) as (z,):
        return F.cross_entropy(upsampled_mask_logits(z, tuple(masks.shape[-2:])), masks.long())


def landmark_heatmaps(normalized_points: torch.Tensor, heatmap_size: tuple[int, int],
                      radius: float = 5.0) -> torch.Tensor:
    """(B, N, 2) XY in [0, 1] -> (B, N, h, w) official heatmap targets (the CUDA ``p2i`` kernel,
    ``gaussian_awing`` kind, max-reduced, on a zero background, rewritten with tensor ops).

    Each point is at u = n * size - 0.5 in heatmap pixels; every pixel (x, y) within distance r <= ``radius`` of it
    gets exp(-r^2 * 16 / (2 radius^2)) (a Gaussian with sigma = radius / 4), all others 0. One channel per point,
    so the max over points never mixes two points."""
    height, width = heatmap_size
    points = normalized_points.float()
    u = points[..., 0] * width - 0.5
    v = points[..., 1] * height - 0.5
    xs = torch.arange(width, dtype=points.dtype, device=points.device)
    ys = torch.arange(height, dtype=points.dtype, device=points.device)
    dx = xs[None, None, None, :] - u[..., None, None]
    dy = ys[None, None, :, None] - v[..., None, None]
    distance = torch.sqrt(dx * dx + dy * dy)
    painted = torch.exp(-distance * distance * 16 / 2 / radius / radius)
    return torch.where(distance <= radius, painted, torch.zeros_like(painted))


def landmark_loss(heatmap_logits: torch.Tensor, points: torch.Tensor, crop_size: int = 512,
                  heatmap_radius: float = 5.0, heatmap_size: int = 128) -> torch.Tensor:
    """Landmarks (official ``AlignLoss``): point-distance term + heatmap BCE.

    Args:
        heatmap_logits: (B, N, h, w) raw landmark head output (``task_logits``).
        points: (B, N, 2) pixel-index XY in the ``crop_size`` crop; normalized as g = (p + 0.5) / crop_size.
        heatmap_size: the official loss resizes the logits to this size (bilinear, align_corners=False; a no-op
            for the 128 x 128 maps of Faceptor) before the BCE against ``landmark_heatmaps``.
    Distance term: mean over batch and points of |g - c|_2, c the official sigmoid-weighted centroid of the
    unresized logits (``task_decoding.heatmap_centroids``).
    """
    with _float32(heatmap_logits, points) as (z, pixels):
        target_points = (pixels + 0.5) / crop_size
        distance = (target_points - heatmap_centroids(z)).norm(dim=-1).mean()
        if tuple(z.shape[-2:]) != (heatmap_size, heatmap_size):
            z = F.interpolate(z, (heatmap_size, heatmap_size), mode="bilinear", align_corners=False)
        target = landmark_heatmaps(target_points, (heatmap_size, heatmap_size), heatmap_radius)
        return distance + F.binary_cross_entropy_with_logits(z, target)


def value_regression_loss(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Generic ``regression`` type (no official counterpart): mean absolute error over batch and values.
    values, targets (B, N)."""
    with _float32(values, targets) as (predicted, wanted):
        return F.l1_loss(predicted, wanted)


# ---------------------------------------------------------------------------------------------------------------
# Registry parts: loss(task, raw, targets, state)
# ---------------------------------------------------------------------------------------------------------------
def _recognition_part(task: FaceptorTask, raw, targets, state):
    if "classifier_weight" not in state:
        raise KeyError(f"task {task.name!r}: the CosFace loss needs state['classifier_weight'] (K, D), the class "
                       "matrix the training model owns")
    return cosface_loss(raw, state["classifier_weight"], targets)


def _landmark_part(task: FaceptorTask, raw, targets, state):
    return landmark_loss(raw, targets, crop_size=task.input_size)


def _labeled(function):
    return lambda task, raw, targets, state: function(raw, targets)


LOSS_OF_TYPE = {
    "recog": _recognition_part,
    "age": _labeled(age_loss),
    "biattr": _labeled(attribute_loss),
    "affect": _labeled(expression_loss),
    "classification": _labeled(expression_loss),
    "regression": _labeled(value_regression_loss),
    "parsing": _labeled(parsing_loss),
    "align": _landmark_part,
}
for _type_name, _loss in LOSS_OF_TYPE.items():
    attach_task_part(_type_name, "loss", _loss)


def task_loss(task: FaceptorTask, raw: torch.Tensor, targets: torch.Tensor, state: dict | None = None):
    """The registered loss of ``task``'s type; ``ValueError`` naming the task where its type has none."""
    task_type = get_task_type(task)
    if task_type.name != task.type:  # not registered here: the task runs as its readout's generic type
        raise ValueError(f"task {task.name!r}: task type {task.type!r} has no loss (it is not registered in this "
                         "process); register it with faceptor_hf.register_task_type and attach its loss with "
                         f"faceptor_hf.task_types.attach_task_part({task.type!r}, 'loss', fn)")
    try:
        loss = task_type.loss
    except LookupError as error:
        raise ValueError(f"task {task.name!r}: {error}") from None
    return loss(task, raw, targets, state or {})


# ---------------------------------------------------------------------------------------------------------------
# Weighting (the official recipes live with the task list, in the configuration: ``official_loss_weights``)
# ---------------------------------------------------------------------------------------------------------------
def combine_task_losses(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum_i w_i L_i / sum_i w_i over the tasks present in ``losses`` (the official ``LossesHolder``)."""
    if not losses:
        raise ValueError("combine_task_losses: no task losses given")
    missing = [name for name in losses if name not in weights]
    if missing:
        raise KeyError(f"no loss weight for task(s) {missing}; weights are given for {sorted(weights)}")
    total_weight = sum(float(weights[name]) for name in losses)
    if total_weight <= 0:
        raise ValueError(f"the loss weights of tasks {sorted(losses)} sum to {total_weight}; it must be positive")
    total = sum(float(weights[name]) * loss.float() for name, loss in losses.items())
    return total / total_weight


__all__ = [
    "LOSS_OF_TYPE",
    "LossRecipe",
    "OFFICIAL_LOSS_RECIPES",
    "age_label_distribution",
    "age_loss",
    "attribute_loss",
    "combine_task_losses",
    "cosface_loss",
    "expression_loss",
    "landmark_heatmaps",
    "landmark_loss",
    "official_loss_weights",
    "parsing_loss",
    "task_loss",
    "value_regression_loss",
]
