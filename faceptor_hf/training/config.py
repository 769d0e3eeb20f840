"""The training configuration file: model, tasks and run settings, validated before anything heavy starts.

    model: {preset: base}          # or {pretrained: DIR_OR_HUB_ID, overrides: {...}} or {config: {...}}
    tasks:
      affect_rafdb: {dataset: data/rafdb, split: train, batch_size: 8}
      align_300w:   {dataset: data/300w,  split: train, batch_size: 2, loss_weight: 1000}
    run: {output_dir: runs/x, max_steps: 1000, learning_rate: 5.0e-5, warmup_steps: 100, save_steps: 500, seed: 0}

A task entry takes the fields of the model config's task list (``type``, ``labels`` or ``num_queries``, ...), so a
task the model lacks is declared here and added to the model. Every key is checked: a misspelt one is an error that
names it and lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field

PRESETS = ("base", "full", "full_stage2", "naive")
PRECISIONS = ("no", "bf16", "fp16")
SAMPLING = ("lockstep", "probability")
# Fields of a model task (FaceptorTask / make_task) that a task entry may carry.
TASK_FIELDS = ("type", "labels", "num_queries", "readout", "model_input", "embedding_size", "flip_pairs")


class TrainingConfigError(ValueError):
    """The training configuration is inconsistent; the message names the section and key."""


@dataclass
class TaskSpec:
    """One task of a run.

    Attributes:
        name: the model task name (added to the model when ``task_fields`` declare a new task).
        dataset: a ``save_to_disk`` folder (of a Dataset or a DatasetDict), parquet file(s) or folder, or a Hub id.
        split: the split to train on.
        batch_size: per process and micro-step, as in the official recipes.
        loss_weight: relative weight in the combined loss (None: the official recipe's weight for official tasks
            of a preset, else 1.0).
        sampling_weight: relative probability of drawing this task in a step when ``run.sampling`` is
            ``probability``.
        eval_dataset, eval_split: held-out data for periodic evaluation (default: the training dataset's
            ``eval_split`` when given).
        eval_protocol: a native dataset name whose evaluation protocol applies (e.g. ``300w``).
        zoom, dense_face_scale: crop rule of ``data.geometry.row_matrix`` (box crops: 0.8 for 300W/WFLW/COFW).
        warp_factor: FaRL's tanh-warp on top of the crop (LaPa: 0.8), for image and labels alike.
        num_identities: size of the CosFace classifier of a recognition task (default: 1 + the largest id).
        task_fields: model task fields (type, labels, ...) for a task the model lacks.
    """

    name: str
    dataset: str
    split: str = "train"
    batch_size: int = 8
    loss_weight: float | None = None
    sampling_weight: float = 1.0
    eval_dataset: str | None = None
    eval_split: str | None = None
    eval_protocol: str | None = None
    zoom: float = 1.0
    dense_face_scale: float = 1.0
    warp_factor: float = 0.0
    num_identities: int | None = None
    task_fields: dict = field(default_factory=dict)


@dataclass
class RunSpec:
    """How to train. Learning rates follow the official schedule: linear warmup from ``warmup_start_lr`` to
    ``learning_rate`` over ``warmup_steps`` optimizer steps, then cosine to 0 at ``max_steps``; every module group
    scales both by its multiplier (official Faceptor: encoder 1, heads 10, CosFace classifier 10)."""

    output_dir: str
    max_steps: int
    learning_rate: float = 5e-5
    warmup_start_lr: float = 1e-6
    warmup_steps: int = 0
    encoder_lr_multiplier: float = 1.0
    head_lr_multiplier: float = 10.0
    classifier_lr_multiplier: float = 10.0
    weight_decay: float = 0.05
    max_grad_norm: float | None = 5.0
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    precision: str = "no"
    save_steps: int | None = None
    save_total_limit: int | None = 3
    eval_steps: int | None = None
    eval_limit: int | None = 512
    logging_steps: int = 10
    seed: int = 0
    sampling: str = "lockstep"
    freeze: list = field(default_factory=list)
    trainable: list | None = None
    on_nonfinite: str = "stop"
    num_workers: int = 2
    report_to: str = "tensorboard"
    push_to_hub: str | None = None


@dataclass
class TrainingConfig:
    model: dict
    tasks: list[TaskSpec]
    run: RunSpec
    source: str | None = None

    @property
    def output_dir(self) -> str:
        return self.run.output_dir


def _check_keys(section: str, given: dict, allowed) -> None:
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TrainingConfigError(f"{section}: unknown key {key!r}{hint}; valid keys: {', '.join(allowed)}")


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def parse_config(data: dict, source: str | None = None) -> TrainingConfig:
    """Validate a config mapping (as read from YAML) and build a ``TrainingConfig``."""
    if not isinstance(data, dict):
        raise TrainingConfigError(f"a training config is a mapping with model, tasks and run; got {type(data).__name__}")
    _check_keys("top level", data, ("model", "tasks", "run"))
    for key in ("model", "tasks", "run"):
        if key not in data:
            raise TrainingConfigError(f"the config lacks its {key!r} section")
    model = data["model"] or {}
    _check_keys("model", model, ("preset", "pretrained", "config", "overrides", "revision"))
    sources = [key for key in ("preset", "pretrained", "config") if key in model]
    if len(sources) != 1:
        raise TrainingConfigError(f"model: give exactly one of preset, pretrained or config (got {sources or 'none'})")
    if "preset" in model and model["preset"] not in PRESETS:
        raise TrainingConfigError(f"model.preset {model['preset']!r} is not one of {', '.join(PRESETS)}")
    tasks_section = data["tasks"]
    if not isinstance(tasks_section, dict) or not tasks_section:
        raise TrainingConfigError("tasks: give at least one task as `name: {dataset: ..., batch_size: ...}`")
    spec_keys = [name for name in _field_names(TaskSpec) if name not in ("name", "task_fields")]
    tasks = []
    for name, entry in tasks_section.items():
        entry = dict(entry or {})
        _check_keys(f"tasks.{name}", entry, spec_keys + list(TASK_FIELDS))
        if "dataset" not in entry:
            raise TrainingConfigError(f"tasks.{name}: no dataset given")
        task_fields = {key: entry.pop(key) for key in TASK_FIELDS if key in entry}
        spec = TaskSpec(name=name, task_fields=task_fields, **entry)
        if spec.batch_size < 1:
            raise TrainingConfigError(f"tasks.{name}: batch_size must be at least 1")
        tasks.append(spec)
    run = dict(data["run"] or {})
    _check_keys("run", run, _field_names(RunSpec))
    for key in ("output_dir", "max_steps"):
        if key not in run:
            raise TrainingConfigError(f"run: {key} is required")
    run_spec = RunSpec(**run)
    checks = [
        (run_spec.max_steps >= 1, "run.max_steps must be at least 1"),
        (run_spec.precision in PRECISIONS, f"run.precision must be one of {PRECISIONS}"),
        (run_spec.sampling in SAMPLING, f"run.sampling must be one of {SAMPLING}"),
        (run_spec.on_nonfinite in ("stop", "skip"), "run.on_nonfinite must be 'stop' or 'skip'"),
        (run_spec.gradient_accumulation_steps >= 1, "run.gradient_accumulation_steps must be at least 1"),
        (run_spec.report_to in ("tensorboard", "none"), "run.report_to must be 'tensorboard' or 'none'"),
        (0 <= run_spec.warmup_steps <= run_spec.max_steps, "run.warmup_steps must lie in 0..run.max_steps"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainingConfigError(message)
    return TrainingConfig(model=model, tasks=tasks, run=run_spec, source=source)


def load_config(path: str) -> TrainingConfig:
    """Read and validate a YAML training config; relative dataset and output paths stay as written (relative to
    the working directory, as the command line user typed them)."""
    import yaml

    if not os.path.isfile(path):
        raise TrainingConfigError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise TrainingConfigError(f"{path}: not valid YAML: {error}") from error
    return parse_config(data, source=path)


__all__ = ["RunSpec", "TaskSpec", "TrainingConfig", "TrainingConfigError", "load_config", "parse_config"]
