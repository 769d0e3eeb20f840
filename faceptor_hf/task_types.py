"""Tasks and the one registry of task types.

A *task* (``FaceptorTask``) is one entry of the model's task list: a name, a type, its query count and label map.
A *task type* (``TaskType``) holds everything that differs between kinds of tasks: how the model reads it out
(``readout``), which input it sees (``model_input``), how raw head outputs become predictions (``decode``, built
on ``task_decoding``), how predictions become JSON (``to_json``), a one-line caption (``summarize``), how its labels
are described on a model card, its typed columns in a results table (``table_columns``), which outputs swap
under a horizontal flip (``flip_permutation``), and — attached by the training and evaluation packages — its
``loss`` and ``metric``. No other module switches on a type name: they
ask the registry. Shipped with a saved model, this file imports no training code: asking a type for its ``loss``
before ``faceptor_hf.training`` is imported is an error that says so.

    register_task_type(TaskType(name="pose", readout="value", ...))     # once, then use it in any config

Official types (the prefix of every official task name): ``recog``, ``age``, ``biattr``, ``affect``, ``parsing``,
``align``; generic ones for new tasks: ``classification`` (softmax classes), ``regression`` (one raw value per
label). A saved config records each task's readout and input, so a model whose task type is not registered in the
loading process still runs (its outputs are then formatted generically by readout).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch

from .task_decoding import (
    attribute_presence,
    attribute_probabilities,
    class_predictions,
    class_probabilities,
    encode_mask,
    expected_age,
    heatmap_centroids,
    landmark_points,
    normalized_embedding,
    parsing_labels,
    upsampled_mask_logits,
)

READOUTS = ("embedding", "value", "map")
# Identity/attribute tasks read 112x112 ArcFace-aligned crops; dense tasks read 512x512 FaRL-aligned crops. The one
# definition of the crop sides: the image processor's default sizes and the row crops derive from it.
MODEL_INPUTS = ("pixel_values", "dense_pixel_values")
INPUT_SIZE_OF = {"pixel_values": 112, "dense_pixel_values": 512}


@dataclass
class FaceptorTask:
    """One task of a model: JSON-serializable (``to_dict``) and stored in the config.

    Attributes:
        name: unique task name, e.g. ``"align_300w"``.
        type: task-type name in the registry, e.g. ``"align"``.
        readout: ``"embedding"`` (pooled encoder tokens), ``"value"`` (one logit per query) or ``"map"`` (one
            map per query).
        model_input: ``"pixel_values"`` (112-px crops) or ``"dense_pixel_values"`` (512-px crops).
        num_queries: decoder queries = outputs (0 for embeddings).
        labels: one name per output (empty for embeddings).
        embedding_size: output width of an embedding task (None otherwise).
        flip_pairs: output index pairs that swap under a horizontal flip, overriding the type's own rule (e.g. for
            a landmark set the registry does not know); None to use the type's rule.
        loss_weight: weight w of this task in joint training, where the total loss is sum(w * L) / sum(w) over the
            tasks of a step (the official LossesHolder). The presets and converted official checkpoints carry the
            official recipe's weights (landmarks 1000 in Faceptor-Base); a new task defaults to 1.0; a training
            config's ``loss_weight`` overrides it.
    """

    name: str
    type: str
    readout: str
    model_input: str
    num_queries: int
    labels: list[str] = field(default_factory=list)
    embedding_size: int | None = None
    flip_pairs: list[list[int]] | None = None
    loss_weight: float = 1.0

    @property
    def input_size(self) -> int:
        """Crop side of this task's input: 112 or 512."""
        return INPUT_SIZE_OF[self.model_input]

    @property
    def task_type(self) -> "TaskType":
        return get_task_type(self)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if data["embedding_size"] is None:
            del data["embedding_size"]
        if data["flip_pairs"] is None:
            del data["flip_pairs"]
        return data


TABLE_COLUMN_KINDS = ("float32", "float32_array", "unit_vector", "string", "scores", "mask")


@dataclass(frozen=True)
class TableColumn:
    """One typed column of a task's results in the per-face results table (``faceptor-hf analyze
    --output-format parquet``, ``faceptor_hf.results_dataset``).

    Attributes:
        key: the field of the task's formatted result (``to_json``) the column holds; the column is named
            ``<task name>.<key>``, the way ``datasets.Dataset.flatten`` names struct fields.
        kind: ``"float32"`` (one number), ``"float32_array"`` (float32 of fixed ``shape``), ``"unit_vector"``
            (float32 of ``shape``, L2-normalized again after the rounding of the JSON record), ``"string"``,
            ``"scores"`` (a struct of float32, one field per name in ``names``) or ``"mask"`` (a class-id mask,
            stored as an 8-bit PNG).
        shape: the fixed shape of an array kind, e.g. ``(68, 2)`` for 68 XY points.
        names: the struct fields of ``"scores"`` (the task's labels).
        face_column: a name the column takes instead for the first task of a table that has it, a column that
            describes the face as a whole (``"embedding"``: the identity embedding that face search reads).
    """

    key: str
    kind: str
    shape: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    face_column: str | None = None

    def __post_init__(self):
        if self.kind not in TABLE_COLUMN_KINDS:
            raise ValueError(f"table column {self.key!r}: kind must be one of {list(TABLE_COLUMN_KINDS)}, "
                             f"got {self.kind!r}")


@dataclass
class TaskType:
    """Everything that differs between kinds of tasks. Function parts take the task first.

    Attributes:
        name: registry key, also the official task-name prefix for official types.
        readout, model_input: see ``FaceptorTask``.
        decode: ``(task, raw, **hints) -> {name: tensor}``: raw head output (see ``FaceptorOutput.task_logits``)
            -> batched prediction tensors. Hints: ``crop_size`` (H, W) of the model input, ``normalized_points``
            (already decoded landmarks, so they are not decoded twice).
        to_json: ``(task, decoded, mask_format) -> list[dict]``: batched predictions (in image space) -> one
            JSON-ready dict per face.
        summarize: ``(task, result) -> str | None``: one caption line from a face's formatted result.
        describe_labels: ``(task) -> str``: the label column of a model card's task table.
        default_labels: ``(count) -> list[str]``: labels when a config gives only ``num_queries``.
        flip_permutation: ``(task) -> list[int] | None``: output order after a horizontal flip (identity where
            nothing swaps); None where a flip cannot be expressed by reordering (e.g. signed yaw) — augmentation
            must not flip such tasks.
        label_column: the column of the common dataset schema that holds this type's targets (``identity``,
            ``age``, ``attributes``, ``expression``, ``mask``, ``landmarks``, ...); training and evaluation read it.
        spatial: None, ``"points"`` (``decode`` gives ``points`` in crop pixels that the processor maps back to the
            image) or ``"mask"`` (the processor warps the raw logits back to the image before ``parsing_labels``).
        table_columns: ``(task) -> list[TableColumn]``: the typed columns of the task's results in the per-face
            results table; None (a user type that does not say) stores each result as one JSON string column.
        loss: (read-only; ``attach_task_part(name, "loss", fn)`` sets it) ``(task, raw, targets, state) -> fp32
            scalar``, ``state`` holding the training model's tensors (recognition: ``classifier_weight``). Importing
            ``faceptor_hf.training`` attaches the loss of every built-in type; asking for a loss that is not
            attached raises ``LookupError`` naming what to import or attach, never returns None.
        metric: ``(task, **protocol options) -> accumulator`` with ``image_columns``, ``target_columns``,
            ``flip_sum``, ``update(EvaluationBatch) -> per-row records`` and ``compute() -> {name: float}`` —
            attached by ``faceptor_hf.evaluation`` (``evaluation.task_metrics``).
    """

    name: str
    readout: str
    model_input: str
    decode: Callable
    to_json: Callable
    summarize: Callable
    describe_labels: Callable
    default_labels: Callable
    flip_permutation: Callable
    label_column: str
    spatial: str | None = None
    metric: Callable | None = None
    table_columns: Callable | None = None

    #: parts every registered type must have (``loss``/``metric`` join once training/evaluation attach them)
    REQUIRED_PARTS = ("readout", "model_input", "decode", "to_json", "summarize", "describe_labels",
                      "default_labels", "flip_permutation", "label_column")

    def validate(self):
        if self.readout not in READOUTS:
            raise ValueError(f"task type {self.name!r}: readout must be one of {list(READOUTS)}, got {self.readout!r}")
        if self.model_input not in MODEL_INPUTS:
            raise ValueError(f"task type {self.name!r}: model_input must be one of {list(MODEL_INPUTS)}, "
                             f"got {self.model_input!r}")
        if self.spatial not in (None, "points", "mask"):
            raise ValueError(f"task type {self.name!r}: spatial must be None, 'points' or 'mask'")
        missing = [part for part in self.REQUIRED_PARTS if getattr(self, part) is None]
        if missing:
            raise ValueError(f"task type {self.name!r} lacks {missing}")

    @property
    def loss(self) -> Callable:
        """The training loss ``(task, raw, targets, state) -> fp32 scalar`` attached to this type."""
        # Kept out of the dataclass fields: a loss belongs to the type object it was attached to (a copy made with
        # dataclasses.replace starts without one) and never shows in repr / comparisons.
        loss = getattr(self, "_loss", None)
        if loss is not None:
            return loss
        if not any(getattr(task_type, "_loss", None) for task_type in TASK_TYPES.values()):
            raise LookupError(f"task type {self.name!r}: no training loss is loaded in this process; "
                              "`import faceptor_hf.training` attaches the loss of every built-in task type")
        raise LookupError(f"task type {self.name!r} has no loss; attach one with "
                          f"faceptor_hf.task_types.attach_task_part({self.name!r}, 'loss', fn)")


TASK_TYPES: dict[str, TaskType] = {}


def register_task_type(task_type: TaskType, exist_ok: bool = False) -> TaskType:
    """Add a task type to the registry (once per process, before building configs that use it)."""
    task_type.validate()
    if task_type.name in TASK_TYPES and not exist_ok:
        raise ValueError(f"task type {task_type.name!r} is already registered; pass exist_ok=True to replace it")
    TASK_TYPES[task_type.name] = task_type
    return task_type


def attach_task_part(type_name: str, part: str, function: Callable):
    """Set ``loss`` or ``metric`` of a registered type (used by the training and evaluation packages)."""
    if part not in ("loss", "metric"):
        raise ValueError(f"only 'loss' and 'metric' are attached after registration, not {part!r}")
    if type_name not in TASK_TYPES:
        raise KeyError(f"unknown task type {type_name!r}; register it first (registered: {sorted(TASK_TYPES)})")
    if part == "loss":
        TASK_TYPES[type_name]._loss = function
    else:
        TASK_TYPES[type_name].metric = function


def get_task_type(task: "FaceptorTask | str") -> TaskType:
    """The registered type of a task (or of a type name). A task of an unregistered type gets the generic type of
    its readout, so saved models with user-defined types still run and format their outputs."""
    name = task if isinstance(task, str) else task.type
    if name in TASK_TYPES:
        return TASK_TYPES[name]
    if isinstance(task, str):
        raise KeyError(f"unknown task type {name!r}; registered types: {sorted(TASK_TYPES)}")
    return _GENERIC_BY_READOUT[task.readout]


# ---------------------------------------------------------------------------------------------------------------
# Parts shared by several types
# ---------------------------------------------------------------------------------------------------------------
def _rounded(values: torch.Tensor, digits: int) -> list:
    # float64 (a Python float) before rounding: a rounded float32 prints as noise digits (-0.06594900041818619).
    return torch.round(values.detach().cpu().double(), decimals=digits).tolist()


def _numbered(prefix: str) -> Callable[[int], list[str]]:
    return lambda count: [f"{prefix}_{index}" for index in range(count)]


def _identity_flip(task: FaceptorTask) -> list[int]:
    """Nothing swaps under a flip unless the task names its own pairs (e.g. left/right attributes)."""
    return _permutation_from_pairs(task.num_queries, task.flip_pairs or [])


def _no_flip(task: FaceptorTask) -> None:
    return None


def _no_summary(task, result) -> None:
    return None


def _listed_labels(task: FaceptorTask) -> str:
    return ", ".join(task.labels)


def _permutation_from_pairs(count: int, pairs) -> list[int]:
    order = list(range(count))
    for a, b in pairs:
        order[a], order[b] = b, a
    return order


# ---- embedding -------------------------------------------------------------------------------------------------
def _decode_embedding(task, raw, **hints):
    return {"embedding": normalized_embedding(raw)}


def _format_embedding(task, decoded, mask_format):
    return [{"embedding": row} for row in _rounded(decoded["embedding"], 6)]


def _describe_embedding(task):
    return "—"


def _embedding_columns(task):
    return [TableColumn("embedding", "unit_vector", (task.embedding_size,), face_column="embedding")]


# ---- value tasks -----------------------------------------------------------------------------------------------
def _decode_age(task, raw, **hints):
    return {"age": expected_age(raw)}


def _format_age(task, decoded, mask_format):
    return [{"age": age} for age in _rounded(decoded["age"], 2)]


def _summarize_age(task, result):
    return f"age {result['age']:.0f}"


def _describe_age(task):
    return f"bins {task.labels[0]} … {task.labels[-1]} (years)"


def _age_columns(task):
    return [TableColumn("age", "float32")]


def _decode_attributes(task, raw, **hints):
    return {"probabilities": attribute_probabilities(raw), "present": attribute_presence(raw)}


def _format_attributes(task, decoded, mask_format):
    return [{"attributes": dict(zip(task.labels, row))} for row in _rounded(decoded["probabilities"], 4)]


def _attribute_columns(task):
    return [TableColumn("attributes", "scores", names=tuple(task.labels))]


def _summarize_attributes(task, result, top: int = 3):
    best = sorted(result["attributes"].items(), key=lambda item: -item[1])[:top]
    return ", ".join(f"{name} {value:.2f}" for name, value in best)


def _decode_classes(task, raw, **hints):
    return {"probabilities": class_probabilities(raw), "label": class_predictions(raw)}


def _format_classes(task, decoded, mask_format):
    return [{"label": task.labels[index], "scores": dict(zip(task.labels, row))}
            for index, row in zip(decoded["label"].tolist(), _rounded(decoded["probabilities"], 4))]


def _class_columns(task):
    return [TableColumn("label", "string"), TableColumn("scores", "scores", names=tuple(task.labels))]


def _summarize_classes(task, result):
    return f"{result['label']} {result['scores'][result['label']]:.2f}"


def _decode_values(task, raw, **hints):
    return {"values": raw.float() if raw.dtype not in (torch.float32, torch.float64) else raw}


def _format_values(task, decoded, mask_format):
    return [{"values": dict(zip(task.labels, row))} for row in _rounded(decoded["values"], 5)]


def _value_columns(task):
    return [TableColumn("values", "scores", names=tuple(task.labels))]


def _summarize_values(task, result):
    return ", ".join(f"{name} {value:.2f}" for name, value in list(result["values"].items())[:3])


# ---- map tasks -------------------------------------------------------------------------------------------------
# Mirror pairs (0-based) of the official landmark sets, by point count: 300W/iBUG 68, WFLW 98, COFW 29, AFLW 19.
LANDMARK_FLIP_PAIRS = {
    68: [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)],
    98: [(i, 32 - i) for i in range(16)] + [(33 + i, 46 - i) for i in range(5)]
    + [(38, 50), (39, 49), (40, 48), (41, 47)] + [(60 + i, 72 - i) for i in range(5)]
    + [(65, 75), (66, 74), (67, 73), (55, 59), (56, 58), (76, 82), (77, 81), (78, 80), (87, 83), (86, 84)]
    + [(88, 92), (89, 91), (95, 93), (96, 97)],
    29: [(0, 1), (4, 6), (2, 3), (5, 7), (8, 9), (10, 11), (12, 14), (16, 17), (13, 15), (18, 19), (22, 23)],
    19: [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17)],
}


def _decode_landmarks(task, raw, crop_size=(512, 512), normalized_points=None, **hints):
    normalized = normalized_points if normalized_points is not None else heatmap_centroids(raw)
    return {"points": landmark_points(normalized, crop_size)}


def _format_landmarks(task, decoded, mask_format):
    return [{"points": face} for face in _rounded(decoded["points"], 2)]


def _landmark_columns(task):
    return [TableColumn("points", "float32_array", (task.num_queries, 2))]


def _describe_landmarks(task):
    return f"{task.num_queries} landmarks (dataset order)"


def _flip_landmarks(task):
    pairs = task.flip_pairs if task.flip_pairs is not None else LANDMARK_FLIP_PAIRS.get(task.num_queries)
    return None if pairs is None else _permutation_from_pairs(task.num_queries, pairs)


def _decode_parsing(task, raw, crop_size=(512, 512), **hints):
    return {"labels": parsing_labels(upsampled_mask_logits(raw, crop_size))}


def _format_parsing(task, decoded, mask_format):
    masks = decoded["labels"].to(torch.uint8).cpu().numpy()
    return [{"mask": encode_mask(mask, mask_format), "labels": list(task.labels)} for mask in masks]


def _mask_columns(task):
    return [TableColumn("mask", "mask")]


def _flip_parsing(task):
    """Classes named left_* / right_* swap (CelebAMask-HQ ``left_eye``, LaPa ``left_eyebrow``, ...)."""
    if task.flip_pairs is not None:
        return _permutation_from_pairs(task.num_queries, task.flip_pairs)
    index = {label: i for i, label in enumerate(task.labels)}
    pairs = []
    for label, i in index.items():
        if "left" in label:
            mirrored = label.replace("left", "right")
            if mirrored in index:
                pairs.append((i, index[mirrored]))
    return _permutation_from_pairs(task.num_queries, pairs)


def _value_type(name, label_column, decode, to_json, summarize, default_labels, columns, flip=_identity_flip,
                describe=_listed_labels):
    return TaskType(name=name, readout="value", model_input="pixel_values", decode=decode, to_json=to_json,
                    summarize=summarize, describe_labels=describe, default_labels=default_labels,
                    flip_permutation=flip, label_column=label_column, table_columns=columns)


for _task_type in (
    TaskType(name="recog", readout="embedding", model_input="pixel_values", decode=_decode_embedding,
             to_json=_format_embedding, summarize=_no_summary, describe_labels=_describe_embedding,
             default_labels=lambda count: [], flip_permutation=_identity_flip, label_column="identity",
             table_columns=_embedding_columns),
    _value_type("age", "age", _decode_age, _format_age, _summarize_age, lambda count: [str(i) for i in range(count)],
                _age_columns, describe=_describe_age),
    _value_type("biattr", "attributes", _decode_attributes, _format_attributes, _summarize_attributes,
                _numbered("attribute"), _attribute_columns),
    _value_type("affect", "expression", _decode_classes, _format_classes, _summarize_classes, _numbered("class"),
                _class_columns),
    _value_type("classification", "label", _decode_classes, _format_classes, _summarize_classes, _numbered("class"),
                _class_columns),
    # A regression target may change sign under a flip (yaw, roll): flipping is left to the user's own type.
    _value_type("regression", "values", _decode_values, _format_values, _summarize_values, _numbered("value"),
                _value_columns, flip=_no_flip),
    TaskType(name="parsing", readout="map", model_input="dense_pixel_values", decode=_decode_parsing,
             to_json=_format_parsing, summarize=_no_summary, describe_labels=_listed_labels,
             default_labels=_numbered("class"), flip_permutation=_flip_parsing, label_column="mask",
             spatial="mask", table_columns=_mask_columns),
    TaskType(name="align", readout="map", model_input="dense_pixel_values", decode=_decode_landmarks,
             to_json=_format_landmarks, summarize=_no_summary, describe_labels=_describe_landmarks,
             default_labels=_numbered("point"), flip_permutation=_flip_landmarks, label_column="landmarks",
             spatial="points", table_columns=_landmark_columns),
):
    register_task_type(_task_type)

# Readout-level behavior for tasks whose type is not registered in this process (not registered themselves).
_GENERIC_BY_READOUT = {
    "embedding": dataclasses.replace(TASK_TYPES["recog"], name="embedding"),
    "value": dataclasses.replace(TASK_TYPES["regression"], name="value"),
    "map": dataclasses.replace(TASK_TYPES["parsing"], name="map", flip_permutation=_no_flip),
}


def make_task(name: str, task_type: str | None = None, num_queries: int | None = None, labels: list[str] | None = None,
              readout: str | None = None, model_input: str | None = None, embedding_size: int | None = None,
              flip_pairs=None, input_size: int | None = None, official: dict | None = None,
              loss_weight: float = 1.0) -> FaceptorTask:
    """Build one task; fields not given come from ``official`` (the official task of that name, if any) and from
    the task type. ``task_type`` is the type's name (the ``type`` field of the saved task). ``input_size`` (112 /
    512) is the older spelling of ``model_input``.

    Raises ``ValueError`` naming the task when its type is unknown and no ``readout`` is given, or when the label
    count and ``num_queries`` disagree.
    """
    official = official or {}
    type_name = task_type or official.get("type") or name.split("_", 1)[0]
    registered = TASK_TYPES.get(type_name)
    readout = readout or (registered.readout if registered else None)
    if readout is None:
        raise ValueError(f"task {name!r}: unknown task type {type_name!r} (registered: {sorted(TASK_TYPES)}); "
                         "register it with faceptor_hf.register_task_type, or give readout='embedding'|'value'|'map' "
                         "(and model_input) explicitly")
    if readout not in READOUTS:
        raise ValueError(f"task {name!r}: readout must be one of {list(READOUTS)}, got {readout!r}")
    if model_input is None and input_size is not None:
        model_input = "pixel_values" if int(input_size) <= 112 else "dense_pixel_values"
    if model_input is None:
        model_input = registered.model_input if registered else (
            "dense_pixel_values" if readout == "map" else "pixel_values")
    if model_input not in MODEL_INPUTS:
        raise ValueError(f"task {name!r}: model_input must be one of {list(MODEL_INPUTS)}, got {model_input!r}")
    pairs = [list(map(int, pair)) for pair in flip_pairs] if flip_pairs is not None else None
    try:
        loss_weight = float(loss_weight)
    except (TypeError, ValueError):
        raise ValueError(f"task {name!r}: loss_weight must be a number, got {loss_weight!r}") from None
    if not loss_weight > 0 or loss_weight == float("inf"):
        raise ValueError(f"task {name!r}: loss_weight must be positive and finite, got {loss_weight}")
    if readout == "embedding":
        size = int(embedding_size or official.get("embedding_size", 512))
        return FaceptorTask(name=name, type=type_name, readout=readout, model_input=model_input, num_queries=0,
                            labels=[], embedding_size=size, flip_pairs=pairs, loss_weight=loss_weight)
    official_labels = official.get("labels")
    if labels is None and official_labels is not None and num_queries in (None, len(official_labels)):
        labels = official_labels
    if labels is None:
        if num_queries is None:
            raise ValueError(f"task {name!r}: give num_queries or labels")
        labels = (registered or _GENERIC_BY_READOUT[readout]).default_labels(num_queries)
    if num_queries is not None and num_queries != len(labels):
        raise ValueError(f"task {name!r}: num_queries={num_queries} but {len(labels)} labels")
    if not labels:
        raise ValueError(f"task {name!r}: needs at least one output (label)")
    if pairs is not None and any(not 0 <= i < len(labels) for pair in pairs for i in pair):
        raise ValueError(f"task {name!r}: flip_pairs refer to outputs outside 0..{len(labels) - 1}")
    return FaceptorTask(name=name, type=type_name, readout=readout, model_input=model_input,
                        num_queries=len(labels), labels=list(labels), flip_pairs=pairs, loss_weight=loss_weight)


def task_from_dict(entry: dict, official: dict | None = None) -> FaceptorTask:
    """A task from its saved fields (``FaceptorTask.to_dict``, a config.json or YAML entry), where ``type`` names
    the task type; ``make_task`` takes it as ``task_type``. Raises ``ValueError`` when both are given and differ."""
    fields = dict(entry)
    if "type" in fields:
        saved = fields.pop("type")
        if fields.setdefault("task_type", saved) != saved:
            raise ValueError(f"task {fields.get('name')!r}: type {saved!r} and task_type {fields['task_type']!r} "
                             "differ")
    return make_task(official=official, **fields)


__all__ = [
    "FaceptorTask",
    "LANDMARK_FLIP_PAIRS",
    "MODEL_INPUTS",
    "READOUTS",
    "TABLE_COLUMN_KINDS",
    "TASK_TYPES",
    "TableColumn",
    "TaskType",
    "attach_task_part",
    "get_task_type",
    "make_task",
    "task_from_dict",
    "register_task_type",
]
