"""The ``metric`` part of every registered task type: an accumulator over evaluated batches.

Registry signature (``TaskType.metric``): ``metric(task, **options) -> accumulator``, where ``options`` are the
protocol's ``metric_options`` and the accumulator has

* ``image_columns``: the dataset's image columns the model runs on (``("image",)``; verification pairs
  ``("image_a", "image_b")``),
* ``target_columns``: the other columns it reads,
* ``flip_sum``: whether the evaluation adds the output of the mirrored crop (verification),
* ``update(batch: EvaluationBatch) -> list[dict]``: takes one batch, returns one JSON/parquet-ready prediction
  record per row,
* ``compute() -> {metric name: float}``: the metrics over every batch so far, on the scales of ``metrics``.

When several processes evaluate one split (``evaluation.distributed``), each accumulator scores its own batches and
the main process merges their states: ``batch_state`` names the attributes holding one entry per ``update`` (put
back in batch order, so ``compute`` sees the rows in one process's order) and ``summed_state`` those added over
batches (integer counts, so the sum is exact in any order). An accumulator that declares neither is fed every
process's batches on the main process instead (exact as well, but its ``update`` work is not shared).

    accumulator = TASK_TYPES["align"].metric(task, normalizers=("inter_ocular",))

A user-registered type attaches its own with ``attach_task_part(type_name, "metric", factory)``.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod

import numpy as np
import PIL.Image

from ..task_types import FaceptorTask, attach_task_part, get_task_type
from . import metrics
from .batch import EvaluationBatch


class TaskMetric(ABC):
    """Base of the accumulators: option checking, the column declarations and the interface."""

    image_columns: tuple[str, ...] = ("image",)
    flip_sum: bool = False
    options: tuple[str, ...] = ()
    batch_state: tuple[str, ...] = ()
    summed_state: tuple[str, ...] = ()

    def __init__(self, task: FaceptorTask, **options):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"task {task.name!r}: the {task.type} metric takes no option(s) {unknown}; it takes "
                             f"{list(self.options) or 'none'}")
        self.task = task

    @property
    def target_columns(self) -> tuple[str, ...]:
        return (get_task_type(self.task).label_column,)

    def _column(self, batch: EvaluationBatch, column: str) -> list:
        values = batch.rows.get(column)
        if values is None:
            raise KeyError(f"task {self.task.name!r}: the batch lacks column {column!r}")
        for index, value in zip(batch.indices, values):
            if value is None:
                raise ValueError(f"task {self.task.name!r}: row {index} has no {column!r}")
        return values

    def state(self) -> dict:
        """This accumulator's ``batch_state`` and ``summed_state`` attributes (picklable), for ``merge`` elsewhere."""
        return {name: getattr(self, name) for name in (*self.batch_state, *self.summed_state)}

    def merge(self, parts: list[tuple[list[int], dict]]) -> None:
        """Replace the state by that of every process: ``parts`` = [(the batch numbers a process scored, in the
        order it scored them, its ``state()``)]. Per-batch entries are ordered by batch number and summed
        states added, so ``compute`` then gives what one process that scored every batch would."""
        for name in self.batch_state:
            entries = [(number, entry) for numbers, state in parts for number, entry in zip(numbers, state[name])]
            setattr(self, name, [entry for _, entry in sorted(entries, key=lambda item: item[0])])
        for name in self.summed_state:
            total = None
            for _, state in parts:
                total = state[name].copy() if total is None else total + state[name]
            setattr(self, name, total)

    @abstractmethod
    def update(self, batch: EvaluationBatch) -> list[dict]:
        """Take one batch; one prediction record per row."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics over every batch taken so far."""


# ---- landmarks ----------------------------------------------------------------------------------------------------
class LandmarkMetric(TaskMetric):
    """NME per normalizer (``nme_<normalizer>``, fractions; the first normalizer is the reported one and each
    record's ``nme``) and optionally ``failure_rate_<normalizer>@<t>`` / ``auc_<normalizer>@<t>``, predictions
    mapped back to the original image and scored against the untouched ground truth.

    Options: ``normalizers`` (names of ``metrics.landmark_normalizers``; default inter-ocular where the point
    count is known, else the face box), ``failure_threshold`` and ``failure_normalizer`` (FR and AUC; none by
    default), ``points`` ((left, right) point indices for a landmark set the table does not know)."""

    options = ("normalizers", "failure_threshold", "failure_normalizer", "points")
    batch_state = ("predictions", "targets", "boxes")

    def __init__(self, task: FaceptorTask, normalizers=None, failure_threshold: float | None = None,
                 failure_normalizer: str | None = None, points=None):
        super().__init__(task)
        known = task.num_queries in metrics.NORMALIZER_POINTS["inter_ocular"] or points is not None
        self.normalizers = tuple(normalizers or (("inter_ocular",) if known else ("box",)))
        self.failure_threshold = failure_threshold
        self.failure_normalizer = failure_normalizer or self.normalizers[0]
        for name in (*self.normalizers, self.failure_normalizer):
            if name not in metrics.NORMALIZERS:
                raise ValueError(f"task {task.name!r}: unknown NME normalizer {name!r}; known: "
                                 f"{', '.join(metrics.NORMALIZERS)}")
        self.points = points
        self.predictions, self.targets, self.boxes = [], [], []

    @property
    def uses_boxes(self) -> bool:
        used = self.normalizers + ((self.failure_normalizer,) if self.failure_threshold else ())
        return any(name in metrics.BOX_NORMALIZERS for name in used)

    @property
    def target_columns(self) -> tuple[str, ...]:
        return ("landmarks",) + (("face_box",) if self.uses_boxes else ())

    def _normalizers(self, name: str, targets: np.ndarray, boxes) -> np.ndarray:
        return metrics.landmark_normalizers(name, targets, boxes, points=self.points)

    def update(self, batch: EvaluationBatch) -> list[dict]:
        predicted = batch.points_in_image(batch.decoded()["points"]).numpy()
        targets = np.stack([np.asarray(value, dtype=np.float64) for value in self._column(batch, "landmarks")])
        if targets.shape != predicted.shape:
            raise ValueError(f"task {self.task.name!r}: rows {batch.indices[0]}..{batch.indices[-1]} have landmarks "
                             f"{targets.shape[1:]} but the task predicts {predicted.shape[1:]}")
        boxes = (np.asarray(self._column(batch, "face_box"), dtype=np.float64) if self.uses_boxes else None)
        self.predictions.append(predicted)
        self.targets.append(targets)
        self.boxes.append(boxes)
        nmes = metrics.landmark_nme(predicted, targets, self._normalizers(self.normalizers[0], targets, boxes))
        return [{"points": points.tolist(), "nme": float(nme)} for points, nme in zip(predicted, nmes)]

    def compute(self) -> dict[str, float]:
        predicted, targets = np.concatenate(self.predictions), np.concatenate(self.targets)
        boxes = np.concatenate(self.boxes) if self.uses_boxes else None
        results, nmes = {}, {}
        for name in dict.fromkeys(self.normalizers + ((self.failure_normalizer,) if self.failure_threshold else ())):
            nmes[name] = metrics.landmark_nme(predicted, targets, self._normalizers(name, targets, boxes))
            if name in self.normalizers:
                results[f"nme_{name}"] = float(nmes[name].mean())
        if self.failure_threshold:
            failure, auc = metrics.failure_rate_auc(nmes[self.failure_normalizer], self.failure_threshold)
            suffix = f"{self.failure_normalizer}@{self.failure_threshold:g}"
            results[f"failure_rate_{suffix}"], results[f"auc_{suffix}"] = failure, auc
        return results


# ---- parsing ------------------------------------------------------------------------------------------------------
def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(mask.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class ParsingMetric(TaskMetric):
    """``f1_mean`` (mean F1 without the background label) and ``f1_<label>`` (fractions) from pixel counts pooled
    over the dataset, each prediction warped back to the target mask's frame (or the protocol's score frame)
    before the argmax. Records hold the predicted mask as PNG bytes (``mask_png``, pixel value = class id).

    Options: ``background``: the label left out of the mean (None = keep every label)."""

    options = ("background",)
    summed_state = ("confusion",)

    def __init__(self, task: FaceptorTask, background: str | None = "background"):
        super().__init__(task)
        self.background = background
        self.confusion = np.zeros((task.num_queries, task.num_queries), dtype=np.int64)

    def _target(self, mask, index: int, score_size: int | None) -> np.ndarray:
        """(H, W) class ids of a mask (PIL image or array), resized to the score frame by nearest sampling."""
        target = np.asarray(mask)
        if target.ndim != 2:
            raise ValueError(f"task {self.task.name!r}: row {index}: mask must be single-channel (PIL mode 'L'), "
                             f"got shape {target.shape}")
        if target.size and (target.min() < 0 or target.max() >= self.task.num_queries):
            raise ValueError(f"task {self.task.name!r}: row {index}: mask holds class ids {int(target.min())}.."
                             f"{int(target.max())}, but the task has classes 0..{self.task.num_queries - 1}")
        if score_size is not None and target.shape != (score_size, score_size):
            resized = PIL.Image.fromarray(target.astype(np.uint8)).resize((score_size, score_size), PIL.Image.NEAREST)
            target = np.asarray(resized)
        return target

    def update(self, batch: EvaluationBatch) -> list[dict]:
        records = []
        for position, (index, mask) in enumerate(zip(batch.indices, self._column(batch, "mask"))):
            target = self._target(mask, index, batch.score_size)
            predicted = batch.labels_in_frame(position, target.shape).numpy()
            self.confusion += metrics.parsing_confusion(predicted, target, self.task.num_queries)
            records.append({"mask_png": _png(predicted)})
        return records

    def compute(self) -> dict[str, float]:
        scores = metrics.parsing_f1(self.confusion, self.task.labels, self.background)
        return {"f1_mean": scores.pop("mean"), **{f"f1_{label}": value for label, value in scores.items()}}


# ---- value tasks --------------------------------------------------------------------------------------------------
class AgeMetric(TaskMetric):
    """``mae`` (years) and ``cs@<years>`` (percent) of the expected age. Options: ``cs_years`` (default 5)."""

    options = ("cs_years",)
    batch_state = ("predicted", "ages")

    def __init__(self, task: FaceptorTask, cs_years: float = 5):
        super().__init__(task)
        self.cs_years = cs_years
        self.predicted, self.ages = [], []

    def update(self, batch: EvaluationBatch) -> list[dict]:
        predicted = batch.decoded()["age"].double().cpu().numpy()
        self.predicted.append(predicted)
        self.ages.append(np.asarray(self._column(batch, "age"), dtype=np.float64))
        return [{"age": float(age)} for age in predicted]

    def compute(self) -> dict[str, float]:
        predicted, ages = np.concatenate(self.predicted), np.concatenate(self.ages)
        return {"mae": metrics.age_mae(predicted, ages),
                f"cs@{self.cs_years:g}": metrics.cumulative_score(predicted, ages, self.cs_years)}


class AttributeMetric(TaskMetric):
    """``mean_accuracy`` and ``accuracy_<attribute>`` (percent), prediction round(sigmoid(logit)); unknown (-1)
    targets are left out. Records: ``present`` (0/1 per attribute)."""

    batch_state = ("logits", "targets")

    def __init__(self, task: FaceptorTask):
        super().__init__(task)
        self.logits, self.targets = [], []

    def update(self, batch: EvaluationBatch) -> list[dict]:
        logits = batch.raw["image"].float().cpu()  # kept raw: the official rounding is applied to all at once
        self.logits.append(logits.numpy())
        self.targets.append(np.asarray(self._column(batch, "attributes"), dtype=np.int64))
        return [{"present": row} for row in metrics.attribute_predictions(logits).tolist()]

    def compute(self) -> dict[str, float]:
        accuracy = metrics.attribute_accuracy(np.concatenate(self.logits), np.concatenate(self.targets))
        return {"mean_accuracy": float(np.mean(accuracy)),
                **{f"accuracy_{label}": float(value) for label, value in zip(self.task.labels, accuracy)}}


class ClassificationMetric(TaskMetric):
    """``accuracy`` (percent, top-1 over all rows) on the task type's label column. Records: ``label``."""

    batch_state = ("predicted", "labels")

    def __init__(self, task: FaceptorTask):
        super().__init__(task)
        self.predicted, self.labels = [], []

    def update(self, batch: EvaluationBatch) -> list[dict]:
        predicted = batch.decoded()["label"].cpu().numpy()
        self.predicted.append(predicted)
        self.labels.append(np.asarray(self._column(batch, self.target_columns[0]), dtype=np.int64))
        return [{"label": int(label)} for label in predicted]

    def compute(self) -> dict[str, float]:
        return {"accuracy": metrics.classification_accuracy(np.concatenate(self.predicted),
                                                            np.concatenate(self.labels))}


class RegressionMetric(TaskMetric):
    """``mae`` over every value and ``mae_<label>`` per output. Records: ``values``."""

    batch_state = ("predicted", "values")

    def __init__(self, task: FaceptorTask):
        super().__init__(task)
        self.predicted, self.values = [], []

    def update(self, batch: EvaluationBatch) -> list[dict]:
        predicted = batch.decoded()["values"].double().cpu().numpy()
        self.predicted.append(predicted)
        self.values.append(np.asarray(self._column(batch, "values"), dtype=np.float64))
        return [{"values": row} for row in predicted.tolist()]

    def compute(self) -> dict[str, float]:
        predicted, values = np.concatenate(self.predicted), np.concatenate(self.values)
        per_label = [metrics.age_mae(predicted[:, i], values[:, i]) for i in range(predicted.shape[1])]
        return {"mae": metrics.age_mae(predicted, values),
                **{f"mae_{label}": value for label, value in zip(self.task.labels, per_label)}}


# ---- verification -------------------------------------------------------------------------------------------------
class VerificationMetric(TaskMetric):
    """``accuracy`` and ``accuracy_std`` (percent) of the 10-fold verification protocol on pairs (``image_a``,
    ``image_b``, ``is_same``; ``fold`` when present). The evaluation adds the raw embeddings of each crop and its
    mirror (flip-sum); ``decode`` L2-normalizes that sum. Records: ``distance`` (squared L2) of the pair."""

    image_columns = ("image_a", "image_b")
    flip_sum = True
    options = ("folds",)
    batch_state = ("embeddings", "same", "fold_ids")

    def __init__(self, task: FaceptorTask, folds: int = 10):
        super().__init__(task)
        self.folds = folds
        self.embeddings, self.same, self.fold_ids = [], [], []

    @property
    def target_columns(self) -> tuple[str, ...]:
        return ("is_same",)

    def update(self, batch: EvaluationBatch) -> list[dict]:
        first, second = (batch.decoded(column)["embedding"].double().cpu().numpy() for column in self.image_columns)
        pairs = np.stack([first, second], axis=1).reshape(-1, first.shape[1])
        self.embeddings.append(pairs)
        self.same.append(np.asarray(self._column(batch, "is_same"), dtype=bool))
        if "fold" in batch.rows:
            self.fold_ids.append(np.asarray(self._column(batch, "fold"), dtype=np.int64))
        return [{"distance": float(distance)} for distance in metrics.pair_distances(pairs)]

    def compute(self) -> dict[str, float]:
        same = np.concatenate(self.same)
        folds = np.concatenate(self.fold_ids) if len(self.fold_ids) == len(self.same) and self.fold_ids else self.folds
        mean, std = metrics.verification_accuracy(np.concatenate(self.embeddings), same, folds)
        return {"accuracy": mean, "accuracy_std": std}


# Keyed by the registry's type names; attached below so that ``TASK_TYPES[name].metric`` is set on import.
METRIC_OF_TYPE = {
    "recog": VerificationMetric,
    "age": AgeMetric,
    "biattr": AttributeMetric,
    "affect": ClassificationMetric,
    "classification": ClassificationMetric,
    "regression": RegressionMetric,
    "parsing": ParsingMetric,
    "align": LandmarkMetric,
}

for _type_name, _factory in METRIC_OF_TYPE.items():
    attach_task_part(_type_name, "metric", _factory)


__all__ = ["AgeMetric", "AttributeMetric", "ClassificationMetric", "LandmarkMetric", "METRIC_OF_TYPE",
           "ParsingMetric", "RegressionMetric", "TaskMetric", "VerificationMetric"]
