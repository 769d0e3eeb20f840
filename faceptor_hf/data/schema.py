"""The common dataset schema (``docs/datasets-and-evaluation.md`` §S): column names and feature types.

Converters write these columns, training and evaluation read them, and a user's own data in this schema needs no
converter. Which column holds a task's targets is the task type's ``label_column`` (task-type registry); this
module only knows columns.
"""

from __future__ import annotations

from datasets import Array2D, ClassLabel, Features, Image, List, Value

from ..task_types import FaceptorTask, get_task_type

IMAGE, FACE_BOX, FACE_KEYPOINTS = "image", "face_box", "face_keypoints"
VERIFICATION_COLUMNS = ("image_a", "image_b", "is_same", "fold")


def geometry_features() -> dict:
    """``image`` plus the optional alignment hints every task may carry (None where absent)."""
    return {
        IMAGE: Image(),
        FACE_BOX: List(Value("float32"), length=4),
        FACE_KEYPOINTS: Array2D((5, 2), "float32"),
    }


def label_feature(column: str, task: FaceptorTask):
    """Feature type of a target column for ``task`` (its labels fix class names and lengths)."""
    count = len(task.labels)
    if column == "identity":
        return Value("int64")
    if column == "age":
        return Value("float32")
    if column == "attributes":
        return List(Value("int8"), length=count)
    if column in ("expression", "label"):
        return ClassLabel(names=list(task.labels))
    if column == "mask":
        return Image()
    if column == "landmarks":
        return Array2D((count, 2), "float32")
    if column == "values":
        return List(Value("float32"), length=count)
    raise KeyError(f"no feature type is defined for target column {column!r}")


def task_features(task: FaceptorTask, extra: dict | None = None) -> Features:
    """Features of a dataset for ``task``: image, face_box, face_keypoints, the task type's target column, and
    any ``extra`` dataset-specific columns (native ids, subset flags)."""
    column = get_task_type(task).label_column
    return Features({**geometry_features(), column: label_feature(column, task), **(extra or {})})


def verification_features(extra: dict | None = None) -> Features:
    """Features of face-verification pairs: one pair per row, ``fold`` 0-9 of the 10-fold protocol."""
    return Features({"image_a": Image(), "image_b": Image(), "is_same": Value("bool"), "fold": Value("int8"),
                     **(extra or {})})


def target_column(task: FaceptorTask) -> str:
    return get_task_type(task).label_column


def check_columns(dataset, task: FaceptorTask, where: str):
    """Raise ``KeyError`` naming the task, the missing column(s) and the columns the dataset has."""
    needed = [IMAGE, target_column(task)]
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise KeyError(f"task {task.name!r}: {where} lacks column(s) {missing} (it has {dataset.column_names}); "
                       f"a {task.type} task reads {needed}")


__all__ = ["FACE_BOX", "FACE_KEYPOINTS", "IMAGE", "VERIFICATION_COLUMNS", "check_columns", "geometry_features",
           "label_feature", "target_column", "task_features", "verification_features"]
