"""``evaluate``: run a model over a dataset in the common schema with a protocol and score it.

    from faceptor_hf.evaluation import evaluate
    result = evaluate(model, load_native("300w", "/data/300W", split="test_common"), "300w", split="test_common")
    result["nme_inter_ocular"], result.paper, result.predictions[0]

Each row becomes the model's crop through the image processor (``FaceptorImageProcessor.crop_row``: the schema's
one rule, ``dataset_crops.row_matrix``) with the protocol's zoom and template scale (plus LaPa's tanh-warp),
normalized with the processor's statistics of that input.
Predictions are decoded by the task type (``TaskType.decode``) and mapped back to the original image by the task
type's metric (``TaskType.metric``, see ``task_metrics``), which scores them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..configuration_faceptor import make_task
from ..data.schema import FACE_BOX, FACE_KEYPOINTS, IMAGE
from ..image_loading import ImageLoadError, load_image
from ..image_processing_faceptor import FaceptorImageProcessor
from ..task_types import FaceptorTask, get_task_type
from .batch import EvaluationBatch
from .distributed import (
    Share,
    batch_on_cpu,
    batch_shard,
    can_merge,
    failure_of,
    gather_and_compute,
    process_group,
)
from .protocols import PROTOCOLS, PaperFigure, Protocol, default_protocol, find_protocol


class EvaluationResult(dict):
    """The metrics, {name: float} (so ``dict(result)`` is what a training log wants), plus what was evaluated.

    Attributes:
        dataset: protocol name (native dataset or model task); split: the split's name (None if unknown);
        task: the model task evaluated; num_samples: rows scored; paper: the paper's figures for this split;
        predictions: one record per row (``index`` = row number, then the task type's fields);
        untrained: the model's weights were random.
    """

    def __init__(self, metrics: dict, dataset: str, split: str | None, task: str, num_samples: int,
                 paper: tuple[PaperFigure, ...], predictions: list[dict], untrained: bool):
        super().__init__(metrics)
        self.dataset, self.split, self.task, self.num_samples = dataset, split, task, num_samples
        self.paper, self.predictions, self.untrained = paper, predictions, untrained

    def to_dict(self) -> dict:
        """JSON-ready summary (without the per-row predictions)."""
        return {"dataset": self.dataset, "split": self.split, "task": self.task, "num_samples": self.num_samples,
                "metrics": dict(self), "untrained": self.untrained,
                "paper": [{"metric": f.metric, "label": f.label, "scale": f.scale, "faceptor_base": f.base,
                           "faceptor_full": f.full} for f in self.paper]}


def resolve_protocol(name: str, model_tasks: list[str]) -> Protocol:
    """A native dataset's protocol, or the default protocol of one of the model's tasks."""
    protocol = find_protocol(name)
    if protocol is not None:
        return protocol
    if name in model_tasks:
        return default_protocol(name)
    raise KeyError(f"{name!r} is neither a dataset with an evaluation protocol ({', '.join(sorted(PROTOCOLS))}) nor "
                   f"a task of the model ({', '.join(model_tasks)})")


def resolve_task(config, protocol: Protocol, task: str | None) -> FaceptorTask:
    """The model task to evaluate: ``task`` if given, else the protocol's; when the model names it differently, its
    only task of the same type and output count."""
    if task is not None:
        if task not in config.task_names:
            raise KeyError(f"the model has no task {task!r}; its tasks: {', '.join(config.task_names)}")
        return config.get_task(task)
    if protocol.task in config.task_names:
        return config.get_task(protocol.task)
    wanted = make_task(protocol.task)
    candidates = [t for t in config.tasks if t.type == wanted.type and t.num_queries == wanted.num_queries]
    if len(candidates) == 1:
        return candidates[0]
    raise KeyError(f"the model has no task {protocol.task!r} for {protocol.name} and "
                   f"{'several' if candidates else 'no'} tasks of type {wanted.type!r} with {wanted.num_queries} "
                   f"outputs ({', '.join(t.name for t in candidates) or 'none'}); name one with task=... / --task "
                   f"(the model's tasks: {', '.join(config.task_names)})")


@dataclass
class PreparedBatch:
    """Model inputs of one batch: per image column (3, S, S) crops, their matrices and the original sizes."""

    indices: list[int]
    pixels: dict[str, torch.Tensor]
    matrices: dict[str, torch.Tensor]
    image_sizes: dict[str, list[tuple[int, int]]]
    rows: dict[str, list]


class BatchPreparer:
    """Rows -> crops by ``processor.crop_row`` (a picklable ``collate_fn``, so decoding and warping can run in
    DataLoader workers)."""

    def __init__(self, dataset, image_columns: tuple[str, ...], model_input: str, protocol: Protocol,
                 processor: FaceptorImageProcessor, where: str):
        self.dataset, self.image_columns, self.model_input = dataset, image_columns, model_input
        self.protocol, self.processor, self.where = protocol, processor, where

    def crop(self, image, hints: dict, index: int, column: str):
        try:
            pixels = load_image(image, index)
        except ImageLoadError as error:
            raise ImageLoadError(f"{self.where}, row {index}, column {column!r}: {error}") from error
        try:
            crop, matrix = self.processor.crop_row({IMAGE: pixels, **hints}, self.model_input, zoom=self.protocol.zoom,
                                                   dense_face_scale=self.protocol.dense_face_scale,
                                                   warp_factor=self.protocol.warp_factor)
        except ValueError as error:
            raise ValueError(f"{self.where}, row {index}: {error}") from error
        return crop, matrix, tuple(pixels.shape[-2:])

    def __call__(self, indices: list[int]) -> PreparedBatch:
        rows = self.dataset[list(indices)]
        pixels, matrices, sizes = {}, {}, {}
        for column in self.image_columns:
            crops, column_matrices, column_sizes = [], [], []
            for position, index in enumerate(indices):
                # Alignment hints describe the `image` column; verification pairs are aligned crops already.
                hints = ({key: rows[key][position] for key in (FACE_KEYPOINTS, FACE_BOX) if key in rows}
                         if column == IMAGE else {})
                crop, matrix, size = self.crop(rows[column][position], hints, index, column)
                crops.append(crop)
                column_matrices.append(matrix)
                column_sizes.append(size)
            pixels[column] = torch.stack(crops)
            matrices[column] = torch.stack(column_matrices)
            sizes[column] = column_sizes
        others = {key: values for key, values in rows.items() if key not in self.image_columns}
        return PreparedBatch(list(indices), pixels, matrices, sizes, others)


def _model_parts(model):
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def protocol_metric(config, name: str, task: str | None = None) -> tuple[Protocol, FaceptorTask, object]:
    """The protocol ``name`` names, the model task it scores and a fresh metric accumulator for it (the task
    type's metric with the protocol's options). Raises ``KeyError`` for an unknown name or task, or a task type
    without a metric."""
    protocol = resolve_protocol(name, list(config.task_names))
    model_task = resolve_task(config, protocol, task)
    task_type = get_task_type(model_task)
    if task_type.metric is None:
        raise KeyError(f"task type {task_type.name!r} of task {model_task.name!r} has no metric; attach one with "
                       "faceptor_hf.task_types.attach_task_part(type_name, 'metric', factory)")
    return protocol, model_task, task_type.metric(model_task, **protocol.metric_options)


def check_metric_columns(dataset, model_task: FaceptorTask, accumulator, where: str) -> None:
    """Raise ``KeyError`` naming the task, ``where`` and the missing columns when ``dataset`` lacks a column the
    metric reads (its image and target columns)."""
    columns = accumulator.image_columns + accumulator.target_columns
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise KeyError(f"task {model_task.name!r}: {where} lacks column(s) {missing} (it has {dataset.column_names}); "
                       f"its {model_task.type} metric reads {list(columns)}")


def evaluate(model, dataset, name: str, *, task: str | None = None, split: str | None = None,
             processor: FaceptorImageProcessor | None = None, batch_size: int = 32, device=None,
             limit: int | None = None, num_workers: int = 0, progress: bool = False,
             keep_predictions: bool = True, distributed: bool | None = None) -> EvaluationResult:
    """Score ``model`` on ``dataset`` with the protocol ``name``.

    Args:
        model: a ``FaceptorModel`` (its mode is restored afterwards).
        dataset: a ``datasets.Dataset`` in the common schema (``load_native``, ``faceptor-hf prepare-data``, or a
            user's own), or a ``DatasetDict`` with ``split``.
        name: a native dataset name with a protocol (``300w``, ``lapa``, ``lfw``, ...: ``protocols.PROTOCOLS``), or
            one of the model's task names (the schema's crop rule and the type's default metric).
        task: the model task to evaluate when it is not the protocol's official one.
        split: the split's name (picks the paper's figures; needed to pick from a ``DatasetDict``).
        processor: cuts and normalizes the crops (``crop_row``; default ``FaceptorImageProcessor()``).
        batch_size, device (default: the model's; the model is moved there), limit (first rows only),
        num_workers (DataLoader workers decoding and warping), progress (a progress bar),
        keep_predictions (per-row records in ``result.predictions``).
        distributed: split the rows over the processes of an ``accelerate launch`` / ``torchrun`` run (every
            process must call ``evaluate`` alike); ``None`` (default) does so when there are several processes,
            ``False`` scores every row in this process alone (``evaluation.distributed``: whole batches per process,
            results gathered on the main process, the metrics computed once and sent to every process).

    Returns an ``EvaluationResult``: {metric: value} plus the dataset, split, task, paper figures and predictions.
    With several processes every process gets the same metrics; ``predictions`` holds every row on the main
    process (rank 0), in row order as in one process, and this process's own rows elsewhere.
    Raises ``KeyError`` for an unknown name, task, split or missing column (naming the task and the columns),
    ``ValueError``/``ImageLoadError`` naming the row of a bad sample.
    """
    protocol, model_task, accumulator = protocol_metric(model.config, name, task)
    if isinstance(dataset, dict):  # a DatasetDict
        if split is None or split not in dataset:
            raise KeyError(f"{protocol.name}: pick one of the splits {list(dataset)} with split=...")
        dataset = dataset[split]
    where = f"{protocol.name}" + (f" {split}" if split else "")
    check_metric_columns(dataset, model_task, accumulator, where)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"{where}: the dataset has no rows")

    processor = processor or FaceptorImageProcessor()
    preparer = BatchPreparer(dataset, accumulator.image_columns, model_task.model_input, protocol, processor, where)
    rank, world_size = process_group(distributed)
    numbers, batches = batch_shard(len(dataset), batch_size, rank, world_size)
    loader = torch.utils.data.DataLoader(range(len(dataset)), batch_sampler=batches, collate_fn=preparer,
                                         num_workers=num_workers)
    if device is not None:
        model.to(device)
    device, dtype = _model_parts(model)
    flip_sum = accumulator.flip_sum if protocol.flip_sum is None else protocol.flip_sum
    # With several processes an accumulator that cannot merge states is fed every batch on the main process.
    deferred = world_size > 1 and not can_merge(accumulator)
    batch_records: list[list[dict]] = []
    evaluated: list[EvaluationBatch] = []
    failure = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for prepared in tqdm(loader, desc=f"evaluate {where}", unit="batch", disable=not progress,
                                 file=sys.stderr):
                batch = _run_model(model, model_task, prepared, device, dtype, flip_sum, protocol,
                                   processor.crop_size(model_task.model_input))
                if deferred:
                    evaluated.append(batch_on_cpu(batch))
                    continue
                records = accumulator.update(batch)
                if keep_predictions:
                    batch_records.append([{"index": index, **record}
                                          for index, record in zip(prepared.indices, records)])
    except Exception as error:
        if world_size == 1:
            raise
        failure = error  # the other processes learn of it in the gather below instead of waiting there
    finally:
        model.train(was_training)
    if world_size == 1:
        metrics = accumulator.compute()
    else:
        share = (failure_of(failure, rank) if failure is not None else
                 Share(rank, numbers, batch_records, state=None if deferred else accumulator.state(),
                       batches=evaluated if deferred else None))
        metrics, batch_records = gather_and_compute(accumulator, share, rank, world_size, failure)
        if deferred and keep_predictions and rank == 0:
            batch_records = [[{"index": index, **record} for index, record in zip(batch, records)]
                             for batch, records in zip(batch_shard(len(dataset), batch_size, 0, 1)[1],
                                                       batch_records)]
        elif deferred:
            batch_records = []
    predictions = [record for records in batch_records for record in records]
    return EvaluationResult(metrics, protocol.name, split, model_task.name, len(dataset),
                            protocol.paper.get(split, ()) if split else (), predictions,
                            bool(getattr(model, "is_untrained", False)))


def _run_model(model, task: FaceptorTask, prepared: PreparedBatch, device, dtype, flip_sum: bool,
               protocol: Protocol, crop_size: int) -> EvaluationBatch:
    raw, points = {}, {}
    for column, pixels in prepared.pixels.items():
        pixels = pixels.to(device, dtype)
        output = model(**{task.model_input: pixels}, tasks=[task.name])
        raw[column] = output.task_logits[task.name]
        points[column] = (output.landmarks or {}).get(task.name)
        if flip_sum:
            # The official verification protocol sums the raw outputs of the face and its mirror in float64.
            mirrored = model(**{task.model_input: pixels.flip(-1)}, tasks=[task.name]).task_logits[task.name]
            raw[column] = raw[column].double() + mirrored.double()
            points[column] = None
    return EvaluationBatch(task=task, raw=raw, rows=prepared.rows, matrices=prepared.matrices,
                           image_sizes=prepared.image_sizes, crop_size=crop_size,
                           indices=prepared.indices, warp_factor=protocol.warp_factor,
                           score_size=protocol.score_size, normalized_points=points)


__all__ = ["EvaluationResult", "evaluate", "resolve_protocol", "resolve_task"]
