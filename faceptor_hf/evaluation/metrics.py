"""The official Faceptor metrics as pure functions on numpy arrays or tensors (docs/datasets-and-evaluation.md §5).

Scales follow the official evaluators' logs, with one rule for accuracies:
* fractions: NME, failure rate, AUC, parsing F1 (the paper prints NME and F1 x 100);
* years: age MAE;
* percent: every accuracy (expression, attributes, verification) and the age cumulative score. The official
  verification log is a fraction; it is percent here so that all accuracies share one scale (and the paper's).

A class absent from both predictions and targets has F1 0/0 = NaN, and a mean over it is NaN, as officially.
Shapes: N = images (or pairs), L = landmarks, C = classes, A = attributes, D = embedding width.
"""

from __future__ import annotations

import numpy as np
import torch

from ..task_decoding import attribute_probabilities


def _array(values, dtype=np.float64) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = values.float() if values.dtype in (torch.bfloat16, torch.float16) else values
        values = values.numpy()
    return np.asarray(values, dtype=dtype)


def _same_length(name: str, first: np.ndarray, second: np.ndarray):
    if len(first) != len(second):
        raise ValueError(f"{name}: {len(first)} predictions for {len(second)} targets")


# ---- landmarks ----------------------------------------------------------------------------------------------------
# Normalizer points (0-based) of the official landmark sets, by point count (docs/datasets-and-evaluation.md §5.1).
# A pair of index lists means the distance between the means of the two lists (300W's inter-pupil uses eye centroids).
NORMALIZER_POINTS = {
    "inter_ocular": {68: ([36], [45]), 98: ([60], [72]), 29: ([8], [9]), 19: ([6], [11])},
    "inter_pupil": {68: ([36, 37, 38, 39, 40, 41], [42, 43, 44, 45, 46, 47]), 98: ([96], [97]), 19: ([7], [10])},
}
BOX_NORMALIZERS = ("box", "box_diagonal")
NORMALIZERS = tuple(NORMALIZER_POINTS) + BOX_NORMALIZERS


def landmark_normalizers(name: str, targets, boxes=None, points=None) -> np.ndarray:
    """Per-image NME normalizer d (N,) float64.

    Args:
        name: ``inter_ocular`` / ``inter_pupil`` (distance between the dataset's eye points, chosen by the point
            count: 300W 68, WFLW 98, COFW 29, AFLW-19 19), ``box`` (sqrt(w * h) of ``boxes``) or ``box_diagonal``
            (sqrt(w^2 + h^2)).
        targets: (N, L, 2) ground-truth points.
        boxes: (N, 4) x1, y1, x2, y2 (only the side lengths matter); needed by the box normalizers.
        points: ``(left_indices, right_indices)`` for a landmark set the table does not know.
    """
    targets = _array(targets)
    if targets.ndim != 3 or targets.shape[-1] != 2:
        raise ValueError(f"targets must have shape (N, L, 2), got {targets.shape}")
    if name in BOX_NORMALIZERS:
        if boxes is None:
            raise ValueError(f"the {name!r} normalizer needs face boxes (x1, y1, x2, y2 per image)")
        boxes = _array(boxes)
        if boxes.shape != (len(targets), 4):
            raise ValueError(f"boxes must have shape ({len(targets)}, 4), got {boxes.shape}")
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return np.sqrt(width * height) if name == "box" else np.sqrt(width * width + height * height)
    if name not in NORMALIZER_POINTS:
        raise ValueError(f"unknown NME normalizer {name!r}; known: {', '.join(NORMALIZERS)}")
    count = targets.shape[1]
    if points is None:
        if count not in NORMALIZER_POINTS[name]:
            raise ValueError(f"no {name} points are known for {count}-point landmarks (known for "
                             f"{sorted(NORMALIZER_POINTS[name])} points); pass points=(left, right) or use a box "
                             "normalizer")
        points = NORMALIZER_POINTS[name][count]
    left, right = (list(np.atleast_1d(side)) for side in points)
    return np.linalg.norm(targets[:, left].mean(1) - targets[:, right].mean(1), axis=-1)


def landmark_nme(predictions, targets, normalizers) -> np.ndarray:
    """Per-image NME (N,) float64: the mean over all L points (visible or not) of ||p_hat - p|| / d, predictions
    and targets (N, L, 2) in original-image pixels, normalizers d (N,)."""
    predictions, targets, normalizers = _array(predictions), _array(targets), _array(normalizers)
    if predictions.shape != targets.shape:
        raise ValueError(f"landmark predictions {predictions.shape} and targets {targets.shape} differ in shape")
    _same_length("landmark_nme", normalizers, targets)
    return (np.linalg.norm(predictions - targets, axis=-1) / normalizers[:, None]).mean(-1)


def _old_simpson(y: np.ndarray, x: np.ndarray) -> float:
    """Composite Simpson's rule on samples (x, y) with SciPy's pre-1.11 ``simps(..., even="avg")`` treatment of an
    even sample count: the mean of (Simpson on the first N-1 samples + trapezoid on the last interval) and
    (trapezoid on the first interval + Simpson on the last N-1 samples). Spacings may differ per interval."""
    count = len(y)
    if count < 3:
        return float(0.5 * (x[1] - x[0]) * (y[0] + y[1])) if count == 2 else 0.0

    def simpson(start: int, stop: int) -> float:
        h = np.diff(x)
        h0, h1 = h[start:stop:2], h[start + 1:stop + 1:2]
        y0, y1, y2 = y[start:stop:2], y[start + 1:stop + 1:2], y[start + 2:stop + 2:2]
        total, ratio = h0 + h1, h0 / h1
        return float(np.sum(total / 6.0 * (y0 * (2.0 - 1.0 / ratio) + y1 * (total * (total / (h0 * h1)))
                                           + y2 * (2.0 - ratio))))

    if count % 2:
        return simpson(0, count - 2)
    first = simpson(0, count - 3) + 0.5 * (x[-1] - x[-2]) * (y[-1] + y[-2])
    last = simpson(1, count - 2) + 0.5 * (x[1] - x[0]) * (y[1] + y[0])
    return 0.5 * (first + last)


def failure_rate_auc(nmes, threshold: float, step: float = 1e-4) -> tuple[float, float]:
    """(failure rate, AUC) of per-image NMEs at ``threshold``, both fractions.

    The cumulative error distribution CED(x) = fraction of images with NME <= x is sampled at
    ``numpy.arange(0, threshold + step, step)`` (at 0.07 that grid has 702 points ending at 0.0701, an artifact the
    official evaluation has and this keeps); AUC = Simpson integral of the CED / threshold (pre-1.11 SciPy rule),
    failure rate = 1 - CED at the last grid point."""
    nmes = np.sort(_array(nmes).reshape(-1))
    if nmes.size == 0:
        raise ValueError("failure_rate_auc needs at least one NME")
    grid = np.arange(0.0, threshold + step, step)
    ced = np.searchsorted(nmes, grid, side="right") / nmes.size
    return float(1.0 - ced[-1]), float(_old_simpson(ced, grid) / threshold)


# ---- parsing ------------------------------------------------------------------------------------------------------
def parsing_confusion(predictions, targets, num_classes: int) -> np.ndarray:
    """(C, C) int64 pixel counts H[target, prediction] summed over images. ``predictions`` and ``targets`` are two
    lists of (H, W) integer masks (or two (N, H, W) arrays); sizes may differ between images, not within a pair."""
    if isinstance(predictions, (np.ndarray, torch.Tensor)) and np.ndim(predictions) == 2:
        predictions, targets = [predictions], [targets]
    if len(predictions) != len(targets):
        raise ValueError(f"parsing_confusion: {len(predictions)} predicted masks for {len(targets)} targets")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for index, (prediction, target) in enumerate(zip(predictions, targets)):
        prediction, target = _array(prediction, np.int64), _array(target, np.int64)
        if prediction.shape != target.shape:
            raise ValueError(f"image {index}: predicted mask {prediction.shape} and target {target.shape} differ "
                             "in size")
        for name, mask in (("prediction", prediction), ("target", target)):
            if mask.size and (mask.min() < 0 or mask.max() >= num_classes):
                raise ValueError(f"image {index}: {name} holds class ids outside 0..{num_classes - 1} "
                                 f"(min {mask.min()}, max {mask.max()})")
        confusion += np.bincount(target.reshape(-1) * num_classes + prediction.reshape(-1),
                                 minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return confusion


def parsing_f1(confusion, labels, background: str | None = "background") -> dict[str, float]:
    """{label: F1, ..., "mean": mean F1 over every label except ``background``} (fractions) from pooled pixel
    counts: F1_c = 2 H[c, c] / (sum_j H[j, c] + sum_j H[c, j]); NaN for a class in neither targets nor
    predictions, which makes the mean NaN too."""
    confusion = _array(confusion, np.float64)
    labels = list(labels)
    if confusion.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix {confusion.shape} does not match {len(labels)} labels")
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2.0 * np.diag(confusion) / (confusion.sum(0) + confusion.sum(1))
    scores = {label: float(value) for label, value in zip(labels, f1)}
    foreground = [float(value) for label, value in zip(labels, f1) if label != background]
    scores["mean"] = float(np.mean(foreground)) if foreground else float("nan")
    return scores


# ---- age ----------------------------------------------------------------------------------------------------------
def age_mae(predicted_ages, ages) -> float:
    """Mean absolute error in years."""
    predicted, ages = _array(predicted_ages).reshape(-1), _array(ages).reshape(-1)
    _same_length("age_mae", predicted, ages)
    return float(np.abs(predicted - ages).mean())


def cumulative_score(predicted_ages, ages, years: float = 5) -> float:
    """Percent of images whose absolute age error is at most ``years`` (CS@5 officially)."""
    predicted, ages = _array(predicted_ages).reshape(-1), _array(ages).reshape(-1)
    _same_length("cumulative_score", predicted, ages)
    return float((np.abs(predicted - ages) <= years).mean() * 100.0)


# ---- classification -----------------------------------------------------------------------------------------------
def classification_accuracy(predicted_labels, labels) -> float:
    """Top-1 accuracy in percent over all images (not the mean of per-class accuracies)."""
    predicted, labels = _array(predicted_labels, np.int64).reshape(-1), _array(labels, np.int64).reshape(-1)
    _same_length("classification_accuracy", predicted, labels)
    return float((predicted == labels).mean() * 100.0)


def attribute_predictions(logits) -> torch.Tensor:
    """(N, A) logits -> (N, A) int64 0/1: the official ``round(sigmoid(logit))`` (float32 sigmoid, round half to
    even, so a logit whose sigmoid rounds to exactly 0.5 counts as absent)."""
    logits = torch.as_tensor(_array(logits, np.float32))
    return attribute_probabilities(logits).round().long()


def attribute_accuracy(logits, targets) -> np.ndarray:
    """Per-attribute accuracy (A,) in percent; the mean accuracy is its mean.

    A prediction is ``attribute_predictions`` (the official rounding of the sigmoid). Targets are 1 / 0, and -1
    (unknown in the common schema) is left out of that attribute's count; an attribute with no known target is
    NaN. (The official evaluator counts a -1 target as an error; CelebA has none.)"""
    predicted = attribute_predictions(logits).numpy()
    targets = _array(targets, np.int64)
    if predicted.shape != targets.shape or predicted.ndim != 2:
        raise ValueError(f"attribute logits {predicted.shape} and targets {targets.shape} must both be (N, A)")
    known = targets >= 0
    correct = ((predicted == targets) & known).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return correct / known.sum(0) * 100.0


# ---- verification -------------------------------------------------------------------------------------------------
VERIFICATION_THRESHOLDS = np.arange(0, 4, 0.01)


def _fold_ids(count: int, folds) -> np.ndarray:
    """Per-pair fold index: an int k = contiguous blocks in pair order (the first count % k blocks one longer, as
    sklearn's unshuffled KFold), or an explicit (count,) array of fold ids."""
    if np.ndim(folds) == 0:
        folds = int(folds)
        if not 2 <= folds <= count:
            raise ValueError(f"{folds} folds need at least {folds} pairs and at least 2 folds; got {count} pairs")
        sizes = np.full(folds, count // folds)
        sizes[: count % folds] += 1
        return np.repeat(np.arange(folds), sizes)
    ids = _array(folds, np.int64).reshape(-1)
    if len(ids) != count:
        raise ValueError(f"{len(ids)} fold ids for {count} pairs")
    if len(np.unique(ids)) < 2:
        raise ValueError("verification needs at least 2 folds")
    return ids


def pair_distances(embeddings) -> np.ndarray:
    """(2P, D) embeddings with pair i in rows 2i and 2i+1 -> (P,) squared L2 distances, used as given."""
    embeddings = _array(embeddings)
    if embeddings.ndim != 2 or len(embeddings) % 2:
        raise ValueError(f"embeddings must be (2 * pairs, D) with pairs interleaved, got {embeddings.shape}")
    return np.square(embeddings[0::2] - embeddings[1::2]).sum(1)


def verification_accuracy(embeddings, is_same, folds=10) -> tuple[float, float]:
    """(mean, std) of the k-fold verification accuracy in percent.

    ``embeddings`` (2P, D) hold pair i in rows 2i and 2i+1 and are used as given (the protocol passes the
    L2-normalized flip-summed embeddings); ``is_same`` (P,) bool; ``folds`` = k contiguous folds in pair order
    or a (P,) array of fold ids. Per fold, the threshold t of 0, 0.01, ..., 3.99 with the best accuracy of
    "same iff squared L2 distance < t" on the other folds (the first one on ties) is scored on the fold;
    std is the population std over folds."""
    distances = pair_distances(embeddings)
    same = _array(is_same, bool).reshape(-1)
    _same_length("verification_accuracy", distances, same)
    fold = _fold_ids(len(same), folds)
    predicted = distances[None, :] < VERIFICATION_THRESHOLDS[:, None]  # (T, P)
    correct = predicted == same[None, :]
    accuracies = []
    for index in np.unique(fold):
        held_out = fold == index
        best = int(np.argmax(correct[:, ~held_out].mean(1)))
        accuracies.append(correct[best, held_out].mean())
    accuracies = np.asarray(accuracies) * 100.0
    return float(accuracies.mean()), float(accuracies.std())


__all__ = [
    "BOX_NORMALIZERS",
    "NORMALIZERS",
    "NORMALIZER_POINTS",
    "VERIFICATION_THRESHOLDS",
    "age_mae",
    "attribute_accuracy",
    "attribute_predictions",
    "classification_accuracy",
    "cumulative_score",
    "failure_rate_auc",
    "landmark_nme",
    "landmark_normalizers",
    "pair_distances",
    "parsing_confusion",
    "parsing_f1",
    "verification_accuracy",
]
