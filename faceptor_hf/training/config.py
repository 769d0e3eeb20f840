"""The training configuration file: model, tasks and run settings, validated before anything heavy starts.

    model: {preset: base, encoder_init: FaRL-Base-Patch16-LAIONFace20M-ep64.pth}
                                   # or {pretrained: DIR_OR_HUB_ID, overrides: {...}} or {config: {...}}
    tasks:
      affect_rafdb: {dataset: data/rafdb, split: train, batch_size: 8}
      align_300w:   {dataset: data/300w,  split: train, batch_size: 2, loss_weight: 1000}
    run: {output_dir: runs/x, max_steps: 1000, learning_rate: 5.0e-5, warmup_steps: 100, save_steps: 500, seed: 0}

A recognition task may split its CosFace classifier over the processes (Partial FC, ``training.partial_fc``):
``recog_ms1mv3: {dataset: ..., classifier: {sharded: true, sample_rate: 1.0}}``.

A task entry takes the fields of the model config's task list (``type``, ``labels`` or ``num_queries``, ...), so a
task the model lacks is declared here and added to the model. Every key is checked: a misspelt one is an error that
names it and lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field

from ..configuration_faceptor import PRESET_NAMES

# "fp16_grads" is what the official ``fp16: True`` did: an fp32 forward and backward with a GradScaler, gradients
# all-reduced in fp16 between processes. "fp16" / "bf16" are autocast mixed precision.
PRECISIONS = ("no", "fp16_grads", "bf16", "fp16")
SAMPLING = ("lockstep", "probability")
STREAM_SPLITS = ("auto", "shards", "examples")  # datasets.distributed.split_dataset_by_node's strategies
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
        loss_weight: relative weight in the combined loss (None: the model task's own ``loss_weight``: the official
            recipe's for presets and converted official checkpoints, 1.0 for a new task).
        sampling_weight: relative probability of drawing this task in a step when ``run.sampling`` is
            ``probability``.
        eval_dataset, eval_split: held-out data for periodic evaluation (default: the training dataset's
            ``eval_split`` when given).
        eval_protocol: a native dataset name whose evaluation protocol applies (e.g. ``300w``).
        zoom, dense_face_scale: crop rule of ``dataset_crops.row_matrix`` (box crops: 0.8 for 300W/WFLW/COFW).
        warp_factor: FaRL's tanh-warp on top of the crop (LaPa: 0.8), for image and labels alike.
        num_identities: size of the CosFace classifier of a recognition task (default: 1 + the largest id; required
            with ``streaming``, a stream cannot be scanned for it).
        streaming: read ``dataset`` as a stream (``training.streaming``) instead of opening it whole.
        shuffle_buffer_size: with ``streaming``, rows per shuffle window of each process.
        stream_split: with ``streaming``, how processes share the stream: ``auto`` (by shard when the shard count is
            a multiple of the process count, else by example), ``shards`` or ``examples``.
        classifier: a recognition task's CosFace classifier (``ClassifierSpec``); YAML ``{sharded: true,
            sample_rate: 1.0}``.
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
    streaming: bool = False
    shuffle_buffer_size: int = 1000
    stream_split: str = "auto"
    classifier: dict | ClassifierSpec | None = None
    task_fields: dict = field(default_factory=dict)


@dataclass
class ClassifierSpec:
    """How a recognition task holds its CosFace classifier.

    Attributes:
        sharded: split the (K, D) matrix over the processes, each holding a block of ceil(K / W) classes (Partial
            FC, ``training.partial_fc``); False keeps the whole matrix on every process.
        sample_rate: share of its block's classes each process scores per step, in (0, 1] (the labels of the
            global batch always among them); below 1 only with ``sharded``.
    """

    sharded: bool = False
    sample_rate: float = 1.0


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
    sync_batchnorm: bool = False
    save_steps: int | None = None
    save_total_limit: int | None = 3
    # Several machines without a shared filesystem: each machine's first process writes that machine's part of
    # every checkpoint to its own disk (``training.checkpointing``); false: one shared output_dir, as on one machine.
    save_on_each_node: bool = False
    eval_steps: int | None = None
    eval_limit: int | None = 512
    logging_steps: int = 10
    seed: int = 0
    sampling: str = "lockstep"
    # Substrings of the training model's parameter names: ``faceptor.encoder.`` (the published model's weights
    # are under ``faceptor.``), ``layer_attention``, ``classifiers.`` (CosFace).
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
    data: dict = field(default_factory=dict, repr=False)

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


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def _as_number(value, names: list[str]):
    """YAML 1.1 (PyYAML) reads ``5e-5`` and ``1e4`` as strings: numbers written so are taken as numbers, an
    integral one also where an ``int`` is expected."""
    if isinstance(value, bool) or not isinstance(value, (str, float)):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    if "float" in names:
        return number
    if "int" in names and number.is_integer():
        return int(number)
    return value


def _check_types(section: str, spec) -> None:
    """Each field's value against its annotation (``int``, ``float | None``, ...): a wrong type such as
    ``batch_size: eight`` is named here, not met as a ``TypeError`` deep in the run."""
    for item in dataclasses.fields(spec):
        value = getattr(spec, item.name)
        names = [part.strip() for part in str(item.type).split("|")]
        if value is None and "None" in names:
            continue
        allowed = tuple(kind for name in names for kind in _TYPES.get(name.split("[")[0], ()))
        if not allowed:
            continue
        if "int" in names or "float" in names:
            value = _as_number(value, names)
            setattr(spec, item.name, value)
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            raise TrainingConfigError(f"{section}.{item.name} must be {' or '.join(names)}, got "
                                      f"{type(value).__name__} {value!r}")


def parse_config(data: dict, source: str | None = None) -> TrainingConfig:
    """Validate a config mapping (as read from YAML) and build a ``TrainingConfig``; errors name the file (when
    ``source`` is given), section and key."""
    try:
        return _parse(data, source)
    except TrainingConfigError as error:
        if source and not str(error).startswith(f"{source}: "):
            raise TrainingConfigError(f"{source}: {error}") from error
        raise


def _parse(data: dict, source: str | None) -> TrainingConfig:
    if not isinstance(data, dict):
        raise TrainingConfigError(
            f"a training config is a mapping with model, tasks and run; got {type(data).__name__}")
    _check_keys("top level", data, ("model", "tasks", "run"))
    for key in ("model", "tasks", "run"):
        if key not in data:
            raise TrainingConfigError(f"the config lacks its {key!r} section")
    model = data["model"] or {}
    if not isinstance(model, dict):
        raise TrainingConfigError(f"model: a mapping (preset, pretrained or config, ...), got {model!r}")
    _check_keys("model", model, ("preset", "pretrained", "config", "overrides", "revision", "encoder_init"))
    sources = [key for key in ("preset", "pretrained", "config") if key in model]
    if len(sources) != 1:
        raise TrainingConfigError(f"model: give exactly one of preset, pretrained or config (got {sources or 'none'})")
    if "preset" in model and model["preset"] not in PRESET_NAMES:
        raise TrainingConfigError(f"model.preset {model['preset']!r} is not one of {', '.join(PRESET_NAMES)}")
    if "encoder_init" in model:
        if "pretrained" in model:
            raise TrainingConfigError("model.encoder_init starts a fresh model's encoder from FaRL / CLIP; a "
                                      "pretrained model brings its own encoder (drop one of the two)")
        if not isinstance(model["encoder_init"], str) or not model["encoder_init"]:
            raise TrainingConfigError(f"model.encoder_init must be a path or Hub id, got {model['encoder_init']!r}")
    for key in ("overrides", "config"):
        if key in model and not isinstance(model[key], dict):
            raise TrainingConfigError(f"model.{key} must be a mapping of FaceptorConfig fields, got {model[key]!r}")
    tasks_section = data["tasks"]
    if not isinstance(tasks_section, dict) or not tasks_section:
        raise TrainingConfigError("tasks: give at least one task as `name: {dataset: ..., batch_size: ...}`")
    spec_keys = [name for name in _field_names(TaskSpec) if name not in ("name", "task_fields")]
    tasks = []
    for name, entry in tasks_section.items():
        if entry is not None and not isinstance(entry, dict):
            raise TrainingConfigError(
                f"tasks.{name}: a mapping such as {{dataset: ..., batch_size: ...}}, got {entry!r}")
        entry = dict(entry or {})
        _check_keys(f"tasks.{name}", entry, spec_keys + list(TASK_FIELDS))
        if "dataset" not in entry:
            raise TrainingConfigError(f"tasks.{name}: no dataset given")
        task_fields = {key: entry.pop(key) for key in TASK_FIELDS if key in entry}
        spec = TaskSpec(name=name, task_fields=task_fields, **entry)
        _check_types(f"tasks.{name}", spec)
        task_checks = [
            (spec.batch_size >= 1, "batch_size must be at least 1"),
            (spec.loss_weight is None or 0 < spec.loss_weight < float("inf"), "loss_weight must be positive"),
            (spec.sampling_weight >= 0, "sampling_weight must not be negative"),
            (spec.zoom > 0 and spec.dense_face_scale > 0, "zoom and dense_face_scale must be positive"),
            (0 <= spec.warp_factor < 1, "warp_factor must lie in [0, 1)"),
            (spec.num_identities is None or spec.num_identities >= 1, "num_identities must be at least 1"),
            (spec.shuffle_buffer_size >= 1, "shuffle_buffer_size must be at least 1"),
            (spec.stream_split in STREAM_SPLITS, f"stream_split must be one of {', '.join(STREAM_SPLITS)}"),
            (spec.streaming or not {"shuffle_buffer_size", "stream_split"} & set(entry),
             "shuffle_buffer_size and stream_split apply only with streaming: true"),
        ]
        for ok, message in task_checks:
            if not ok:
                raise TrainingConfigError(f"tasks.{name}: {message}")
        spec.classifier = _classifier_spec(f"tasks.{name}.classifier", spec.classifier)
        tasks.append(spec)
    if data["run"] is not None and not isinstance(data["run"], dict):
        raise TrainingConfigError(f"run: a mapping of run settings, got {data['run']!r}")
    run = dict(data["run"] or {})
    _check_keys("run", run, _field_names(RunSpec))
    for key in ("output_dir", "max_steps"):
        if key not in run:
            raise TrainingConfigError(f"run: {key} is required")
    run_spec = RunSpec(**run)
    _check_types("run", run_spec)
    checks = [
        (run_spec.max_steps >= 1, "run.max_steps must be at least 1"),
        (run_spec.precision in PRECISIONS, f"run.precision must be one of {PRECISIONS}"),
        (run_spec.sampling in SAMPLING, f"run.sampling must be one of {SAMPLING}"),
        (run_spec.on_nonfinite in ("stop", "skip"), "run.on_nonfinite must be 'stop' or 'skip'"),
        (run_spec.gradient_accumulation_steps >= 1, "run.gradient_accumulation_steps must be at least 1"),
        (run_spec.report_to in ("tensorboard", "none"), "run.report_to must be 'tensorboard' or 'none'"),
        (0 <= run_spec.warmup_steps <= run_spec.max_steps, "run.warmup_steps must lie in 0..run.max_steps"),
        (run_spec.learning_rate > 0, "run.learning_rate must be positive"),
        (run_spec.warmup_start_lr >= 0, "run.warmup_start_lr must not be negative"),
        (run_spec.weight_decay >= 0, "run.weight_decay must not be negative"),
        (run_spec.max_grad_norm is None or run_spec.max_grad_norm > 0, "run.max_grad_norm must be positive or null"),
        (run_spec.logging_steps >= 1, "run.logging_steps must be at least 1"),
        (run_spec.save_steps is None or run_spec.save_steps >= 1, "run.save_steps must be at least 1 or null"),
        (run_spec.eval_steps is None or run_spec.eval_steps >= 1, "run.eval_steps must be at least 1 or null"),
        (run_spec.num_workers >= 0, "run.num_workers must not be negative"),
        (run_spec.save_total_limit is None or run_spec.save_total_limit >= 1,
         "run.save_total_limit must be at least 1 or null"),
        (bool(run_spec.output_dir), "run.output_dir must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainingConfigError(message)
    run_spec.freeze = _parameter_patterns("run.freeze", run_spec.freeze)
    if run_spec.trainable is not None:
        run_spec.trainable = _parameter_patterns("run.trainable", run_spec.trainable)
    return TrainingConfig(model=model, tasks=tasks, run=run_spec, source=source, data=data)


def _classifier_spec(section: str, given: dict | ClassifierSpec | None) -> ClassifierSpec | None:
    """A task entry's ``classifier`` mapping, checked; None where not given."""
    if given is None or isinstance(given, ClassifierSpec):
        return given
    _check_keys(section, given, _field_names(ClassifierSpec))
    spec = ClassifierSpec(**given)
    _check_types(section, spec)
    if not 0.0 < spec.sample_rate <= 1.0:
        raise TrainingConfigError(f"{section}.sample_rate must lie in (0, 1], got {spec.sample_rate}")
    if spec.sample_rate < 1.0 and not spec.sharded:
        raise TrainingConfigError(f"{section}.sample_rate {spec.sample_rate} samples the classes of a sharded "
                                  "classifier: set sharded: true, or sample_rate: 1.0")
    return spec


def _parameter_patterns(key: str, patterns: list) -> list[str]:
    """Parameter-name patterns as strings; ``model.`` at the start (configs written when the training model held
    the published model as ``model``) reads as ``faceptor.``."""
    wrong = [pattern for pattern in patterns if not isinstance(pattern, str) or not pattern]
    if wrong:
        raise TrainingConfigError(f"{key} must list parameter-name substrings, got {wrong}")
    return ["faceptor." + pattern[len("model."):] if pattern.startswith("model.") else pattern
            for pattern in patterns]


def with_run_overrides(config: TrainingConfig, **values) -> TrainingConfig:
    """``config`` with ``run`` settings replaced (None values are ignored), validated exactly as the YAML is: the
    command line's ``--max-steps`` / ``--output-dir`` meet the same checks as the file's."""
    values = {key: value for key, value in values.items() if value is not None}
    if not values:
        return config
    data = dict(config.data)
    data["run"] = {**(data.get("run") or {}), **values}
    return parse_config(data, source=config.source)


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


__all__ = ["ClassifierSpec", "RunSpec", "TaskSpec", "TrainingConfig", "TrainingConfigError", "load_config",
           "parse_config", "with_run_overrides"]
