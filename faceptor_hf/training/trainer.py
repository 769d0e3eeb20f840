"""Joint multi-task training of Faceptor on Accelerate.

One optimizer step draws one batch from every task (the official lockstep; or a random subset with
``run.sampling: probability``); the batches of all tasks reading the same input (112 or 512 px) go through the
encoder once and each task's head reads only its own rows (``FaceptorModel.forward_task_batches``). Losses come
from the task-type registry, are combined as the official loss holder does (sum of w * L over sum of w) and
computed in fp32 whatever the autocast precision.

State that makes a resume exact: model, optimizer, scheduler and RNG states (``accelerator.save_state``), the
number of samples each task's stream has handed out, and the step; every sample's augmentation is seeded by its
stream position, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import warnings
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from ..configuration_faceptor import FaceptorConfig
from ..data.schema import check_columns
from ..image_processing_faceptor import FaceptorImageProcessor
from ..modeling_faceptor import FaceptorModel
from ..task_types import get_task_type
from .config import TrainingConfig, TrainingConfigError
from .datasets import TaskDataError, open_dataset
from .sampling import TaskStream, choose_tasks

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, broken checkpoint); the message names step, task or file."""


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------
def build_model(config: TrainingConfig) -> tuple[FaceptorModel, list[str]]:
    """The model to train and the names of parameters that start from random values.

    ``preset``/``config`` build a fresh model, whose encoder comes from ``encoder_init`` (FaRL / CLIP, as the paper
    starts) where given; ``pretrained`` loads one and, where ``overrides`` or new tasks change its architecture
    (Layer-Attention levels for stage 2, a task it lacks), carries every matching weight into the new architecture.
    Tasks of the run that the model lacks are added from their task fields. A task's ``loss_weight`` in the run
    replaces the model task's own (kept in the config, so the saved model records what it was trained with)."""
    spec = config.model
    pretrained = None
    if "pretrained" in spec:
        try:
            pretrained = FaceptorModel.from_pretrained(spec["pretrained"], revision=spec.get("revision"))
        except OSError as error:
            raise TrainingConfigError(f"model.pretrained {spec['pretrained']!r} cannot be loaded: "
                                      f"{str(error).splitlines()[0]}") from error
        model_config = FaceptorConfig(**pretrained.config.to_dict())
    else:
        try:
            model_config = (FaceptorConfig.from_preset(spec["preset"]) if "preset" in spec
                            else FaceptorConfig(**spec["config"]))
        except (TypeError, ValueError, KeyError) as error:
            raise TrainingConfigError(f"model: {str(error).strip(chr(39))}") from error
    changes = dict(spec.get("overrides") or {})
    known = set(model_config.task_names)
    tasks = [task.to_dict() for task in model_config.tasks]
    weights = {t.name: t.loss_weight for t in config.tasks if t.loss_weight is not None}
    for task_spec in config.tasks:
        if task_spec.name in known:
            if task_spec.task_fields:
                current = model_config.get_task(task_spec.name).to_dict()
                clash = {k: v for k, v in task_spec.task_fields.items() if current.get(k) != v}
                if clash:
                    raise TrainingConfigError(
                        f"tasks.{task_spec.name}: the model already has this task with other fields {sorted(clash)}; "
                        "rename the task to add a new one")
            continue
        tasks.append({"name": task_spec.name, **task_spec.task_fields})
    for entry in tasks:
        if entry["name"] in weights:
            entry["loss_weight"] = weights[entry["name"]]
    if tasks != [task.to_dict() for task in model_config.tasks]:
        changes["tasks"] = tasks
    if not changes and pretrained is not None:
        return pretrained, []
    try:
        new_config = FaceptorConfig(**{**model_config.to_dict(), **changes})
    except (TypeError, ValueError) as error:
        raise TrainingConfigError(f"model: {error}") from error
    if pretrained is None:
        model = FaceptorModel(new_config)
        if not spec.get("encoder_init"):
            return model, [name for name, _ in model.named_parameters()]
        from ..convert_farl_encoder_to_hf import EncoderCheckpointError, load_encoder_checkpoint

        try:
            load_encoder_checkpoint(model, spec["encoder_init"])
        except EncoderCheckpointError as error:
            raise TrainingConfigError(f"model.encoder_init: {error}") from error
        return model, [name for name, _ in model.named_parameters() if not name.startswith("encoder.")]
    architecture = {k: v for k, v in changes.items() if k != "tasks"}
    if not architecture and [t["name"] for t in tasks] == model_config.task_names:
        pretrained.config.tasks = new_config.tasks  # only loss weights changed: keep the loaded model as it is
        return pretrained, []
    model = FaceptorModel(new_config)
    result = model.load_state_dict(pretrained.state_dict(), strict=False)
    if result.unexpected_keys:
        raise TrainingConfigError(
            f"model.overrides remove weights of the pretrained model: {result.unexpected_keys[:5]}")
    return model, list(result.missing_keys)


class TrainingModule(nn.Module):
    """The model plus training-only state: one CosFace classifier (K, D) per recognition task. The classifiers are
    saved in checkpoints, never in the released model."""

    def __init__(self, model: FaceptorModel, classifier_sizes: dict[str, tuple[int, int]]):
        super().__init__()
        self.model = model
        self.classifiers = nn.ParameterDict()
        for name, (classes, width) in classifier_sizes.items():
            bound = 1.0 / math.sqrt(width)
            self.classifiers[name] = nn.Parameter(torch.empty(classes, width).uniform_(-bound, bound))

    def forward(self, batches: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """-> (raw outputs per task, classifier weights per recognition task). The classifiers pass through
        forward so that DDP sees them used in the step's graph (a parameter touched only outside forward would be
        reported ready twice)."""
        raw = self.model.forward_task_batches(batches)
        return raw, {name: weight.view_as(weight) for name, weight in self.classifiers.items() if name in raw}


def parameter_groups(module: TrainingModule, run) -> list[dict]:
    """AdamW groups: encoder, heads (decoder and all task heads) and CosFace classifiers, each with its learning-
    rate multiplier; weight decay on every parameter as officially. ``freeze`` / ``trainable`` name substrings of
    parameter names (e.g. ``encoder``, or ``layer_attention`` for stage 2)."""
    multipliers = {"encoder": run.encoder_lr_multiplier, "heads": run.head_lr_multiplier,
                   "classifiers": run.classifier_lr_multiplier}
    groups = {key: [] for key in multipliers}
    for name, parameter in module.named_parameters():
        trainable = not any(pattern in name for pattern in run.freeze)
        if run.trainable is not None:
            trainable = any(pattern in name for pattern in run.trainable)
        parameter.requires_grad_(trainable)
        if not trainable:
            continue
        key = "classifiers" if name.startswith("classifiers.") else (
            "encoder" if name.startswith("model.encoder.") else "heads")
        groups[key].append(parameter)
    out = [{"params": params, "lr": run.learning_rate * multipliers[key], "weight_decay": run.weight_decay,
            "name": key, "multiplier": multipliers[key]} for key, params in groups.items() if params]
    if not out:
        raise TrainingConfigError("run.freeze / run.trainable leave no parameter to train")
    return out


def schedule(run):
    """Multiplier of each group's peak learning rate at optimizer step t: official warmup from warmup_start_lr,
    then cosine to 0 at max_steps (the update of step t uses the value at t)."""
    start = run.warmup_start_lr / run.learning_rate if run.learning_rate else 0.0

    def factor(step: int) -> float:
        if step < run.warmup_steps:
            return start + (step / run.warmup_steps) * (1.0 - start)
        span = max(1, run.max_steps - run.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - run.warmup_steps, span) / span))

    return factor


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
class TaskRows(torch.utils.data.Dataset):
    """Dataset rows -> examples; indexed by ``(stream position, row)`` so augmentation is seeded by position."""

    def __init__(self, rows, builder, seed: int, task_index: int):
        self.rows, self.builder, self.seed, self.task_index = rows, builder, seed, task_index

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, item):
        position, index = item
        generator = np.random.default_rng([self.seed, self.task_index, position])
        return self.builder(self.rows[index], generator, index=index)


class _Batches(torch.utils.data.Sampler):
    """Groups a ``TaskStream`` into lists of ``batch_size`` items (a batch sampler over an infinite stream)."""

    def __init__(self, stream: TaskStream, batch_size: int):
        self.stream, self.batch_size = stream, batch_size

    def __iter__(self):
        items = iter(self.stream)
        while True:
            yield [next(items) for _ in range(self.batch_size)]


def _integer_range(rows, column: str) -> tuple[int | None, int | None]:
    """(min, max) of an integer label column read from the Arrow table without decoding any image; (None, None)
    for other columns (their values are checked row by row by the example builder)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in rows.column_names:
        return None, None
    values = rows.select_columns([column]).with_format("arrow")[:][column]
    if not pa.types.is_integer(values.type) or len(values) == 0:
        return None, None
    extremes = pc.min_max(values).as_py()
    return extremes["min"], extremes["max"]


# ---------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------
class FaceptorTrainer:
    """Builds everything from a ``TrainingConfig`` and trains: ``FaceptorTrainer(config).train(resume_from=None)``.

    ``resume_from``: a ``checkpoint-<k>`` folder, or ``"latest"`` (the highest complete checkpoint of
    ``output_dir``). Returns the output folder, which then holds the trained model (``save_pretrained``), its
    processor, ``checkpoint-<k>/`` folders and tensorboard logs.
    """

    def __init__(self, config: TrainingConfig):
        from accelerate import Accelerator
        from accelerate.utils import DDPCommunicationHookType, DistributedDataParallelKwargs, set_seed

        from . import losses  # noqa: F401 - registers the loss of every task type

        self.config, run = config, config.run
        if run.precision == "fp16" and not torch.cuda.is_available():
            raise TrainingConfigError("run.precision fp16 needs a GPU; use bf16 (or no) on the CPU")
        log_with = None
        if run.report_to == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError as error:
                raise TrainingConfigError("run.report_to tensorboard needs the tensorboard package "
                                          "(pip install tensorboard), or set report_to: none") from error
            log_with = "tensorboard"
        # Accelerate keeps one process-wide state; a second trainer in the same process (a notebook, the tests,
        # stage 1 then stage 2) with another precision would be refused. The process group itself is kept.
        from accelerate.state import AcceleratorState

        autocast = run.precision if run.precision in ("bf16", "fp16") else "no"
        if AcceleratorState._shared_state and AcceleratorState().mixed_precision != autocast:
            AcceleratorState._reset_state(reset_partial_state=False)
        # find_unused_parameters: tasks drawn by probability, frozen parts and stage-2 selections leave parameters
        # without gradients. fp16_grads all-reduces gradients in fp16, as the official DDP hook did.
        ddp = DistributedDataParallelKwargs(
            find_unused_parameters=True,
            comm_hook=DDPCommunicationHookType.FP16 if run.precision == "fp16_grads" else DDPCommunicationHookType.NO)
        self.accelerator = Accelerator(mixed_precision=autocast, log_with=log_with, project_dir=run.output_dir,
                                       kwargs_handlers=[ddp])
        set_seed(run.seed)
        self.model, self.new_parameters = build_model(config)
        self.tasks = [self.model.config.get_task(spec.name) for spec in config.tasks]
        self.specs = {spec.name: spec for spec in config.tasks}
        self.processor = FaceptorImageProcessor()
        self._open_datasets()
        self._check_evaluation_data()
        self.weights = {task.name: task.loss_weight for task in self.tasks}
        self.sync_batchnorm = self._convert_sync_batchnorm()
        widths = {t.name: t.embedding_size for t in self.tasks if t.readout == "embedding"}
        classifier_sizes = {name: (self.num_identities[name], width) for name, width in widths.items()}
        self.module = TrainingModule(self.model, classifier_sizes)
        if run.gradient_checkpointing:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        groups = parameter_groups(self.module, run)
        self.optimizer = torch.optim.AdamW(groups, lr=run.learning_rate, weight_decay=run.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule(run))
        self.module, self.optimizer = self.accelerator.prepare(self.module, self.optimizer)
        # Stepped once per optimizer step on every process (not prepared: accelerate would step it per process).
        self.accelerator.register_for_checkpointing(self.scheduler)
        # The official fp16 run scaled an fp32 loss (GradScaler, growth every 100 steps) without autocast: steps
        # whose gradients overflow (in the fp16 all-reduce) are skipped and the scale shrinks.
        self.scaler = None
        if run.precision == "fp16_grads":
            self.scaler = torch.amp.GradScaler(self.accelerator.device.type, growth_interval=100)
            self.accelerator.register_for_checkpointing(self.scaler)
        self.step, self.consumed, self.skipped_steps, self.overflow_steps = 0, {t.name: 0 for t in self.tasks}, 0, 0

    # ---- setup ----------------------------------------------------------------------------------------------
    def _open_datasets(self):
        from .examples import TaskExampleBuilder

        self.rows, self.builders, self.num_identities = {}, {}, {}
        for task in self.tasks:
            spec = self.specs[task.name]
            rows = open_dataset(task.name, spec.dataset, spec.split)
            if len(rows) == 0:
                raise TaskDataError(f"task {task.name!r}: dataset {spec.dataset!r} split {spec.split!r} is empty")
            where = f"dataset {spec.dataset!r} split {spec.split!r}"
            try:
                check_columns(rows, task, where)
            except KeyError as error:
                raise TaskDataError(str(error).strip(chr(34))) from error
            column = get_task_type(task).label_column
            low, high = _integer_range(rows, column)
            if task.readout == "embedding":
                self.num_identities[task.name] = spec.num_identities or (high + 1 if high is not None else 1)
            limit = self.num_identities.get(task.name) or (len(task.labels) if column in ("expression", "label")
                                                           else None)
            if low is not None and (low < 0 or (limit is not None and high >= limit)):
                bad = low if low < 0 else high
                raise TaskDataError(f"task {task.name!r}: {where} column {column!r} holds {bad}, outside 0 .. "
                                    f"{(limit - 1) if limit is not None else 'any'}")
            try:
                builder = TaskExampleBuilder(task, train=True, processor=self.processor, zoom=spec.zoom,
                                             dense_face_scale=spec.dense_face_scale, warp_factor=spec.warp_factor,
                                             num_identities=self.num_identities.get(task.name))
            except ValueError as error:
                raise TrainingConfigError(f"tasks.{task.name}: {error}") from error
            # Label problems (counts, ranges, columns) surface now, not hours into the run.
            for index in range(min(len(rows), 4)):
                builder(rows[index], np.random.default_rng(index), index=index)
            self.rows[task.name], self.builders[task.name] = rows, builder

    def _check_evaluation_data(self):
        """Open every task's held-out data and check its columns (and protocol) now, on every process: a mistake
        found at the first evaluation would stop rank 0 while the other processes wait in a collective."""
        from ..evaluation.evaluate import check_metric_columns, protocol_metric

        self.eval_rows = {}
        for task in self.tasks:
            spec = self.specs[task.name]
            if spec.eval_dataset is None and spec.eval_split is None:
                continue
            location, split = spec.eval_dataset or spec.dataset, spec.eval_split or "test"
            rows = open_dataset(task.name, location, split)
            where = f"evaluation dataset {location!r} split {split!r}"
            if len(rows) == 0:
                raise TaskDataError(f"task {task.name!r}: {where} is empty")
            accumulator = None
            if spec.eval_protocol:
                try:
                    _, _, accumulator = protocol_metric(self.model.config, spec.eval_protocol, task.name)
                except KeyError as error:
                    message = str(error).strip(chr(34))
                    raise TrainingConfigError(f"tasks.{task.name}.eval_protocol: {message}") from error
            try:  # the columns the protocol's metric reads, or the schema's columns for the mean loss
                if accumulator is not None:
                    check_metric_columns(rows, task, accumulator, where)
                else:
                    check_columns(rows, task, where)
            except KeyError as error:
                raise TaskDataError(str(error).strip(chr(34))) from error
            self.eval_rows[task.name] = rows

    def _convert_sync_batchnorm(self) -> str:
        """Naive Faceptor's UPerNet heads use SyncBatchNorm officially; ``run.sync_batchnorm`` converts their
        BatchNorms where statistics can be synchronised (several CUDA processes: torch's SyncBatchNorm has no CPU
        kernel). Returns what was done, for the plan."""
        if not self.config.run.sync_batchnorm:
            return "off"
        heads = getattr(self.model, "naive_dense_heads", None)
        if heads is None or not len(heads):
            return "on, but the model has no Naive dense heads (nothing to synchronise)"
        if self.accelerator.num_processes < 2:
            return "on, one process: plain BatchNorm (nothing to synchronise)"
        if self.accelerator.device.type != "cuda":
            return "on, but SyncBatchNorm needs CUDA: plain BatchNorm per process"
        for name, head in list(heads.items()):
            heads[name] = nn.SyncBatchNorm.convert_sync_batchnorm(head)
        return "on: SyncBatchNorm in the Naive dense heads"

    def _loader(self, task_index: int, task) -> "torch.utils.data.DataLoader":
        from .examples import collate_examples

        spec, run = self.specs[task.name], self.config.run
        state = self.accelerator.state
        stream = TaskStream(len(self.rows[task.name]), seed=run.seed * 1000 + task_index, rank=state.process_index,
                            world_size=state.num_processes, start=self.consumed[task.name])
        rows = TaskRows(self.rows[task.name], self.builders[task.name], run.seed, task_index)
        # Own generator: building loaders must not draw from the global RNG, which a resume restores.
        return torch.utils.data.DataLoader(
            rows, batch_sampler=_Batches(stream, spec.batch_size), collate_fn=collate_examples,
            num_workers=run.num_workers, persistent_workers=run.num_workers > 0,
            generator=torch.Generator().manual_seed(run.seed), pin_memory=torch.cuda.is_available())

    # ---- the plan -------------------------------------------------------------------------------------------
    def plan(self) -> dict:
        """What the run will do, as ``faceptor-hf train --dry-run`` prints it: per task its data, batch size and
        effective loss weight; the parameter groups with their peak learning rates; steps and precision."""
        run, accelerator = self.config.run, self.accelerator
        config = self.model.config
        tasks = []
        for task in self.tasks:
            spec = self.specs[task.name]
            entry = {"name": task.name, "type": task.type, "input": task.model_input, "dataset": spec.dataset,
                     "split": spec.split, "rows": len(self.rows[task.name]), "batch_size": spec.batch_size,
                     "loss_weight": self.weights[task.name]}
            if task.name in self.num_identities:
                entry["identities"] = self.num_identities[task.name]
            if task.name in self.eval_rows:
                entry["evaluation"] = {"dataset": spec.eval_dataset or spec.dataset,
                                       "split": spec.eval_split or "test", "rows": len(self.eval_rows[task.name]),
                                       "protocol": spec.eval_protocol, "every_steps": run.eval_steps}
            tasks.append(entry)
        groups = [{"name": group["name"], "peak_learning_rate": run.learning_rate * group["multiplier"],
                   "tensors": len(group["params"]), "parameters": sum(p.numel() for p in group["params"])}
                  for group in self.optimizer.param_groups]
        encoder_init = getattr(config, "encoder_init", None)
        return {
            "config": self.config.source,
            "model": {"variant": config.variant_name, "parameters": sum(p.numel() for p in self.model.parameters()),
                      "fresh_tensors": len(self.new_parameters), "encoder_init": encoder_init,
                      "drop_path": {"rate": config.drop_path_rate, "mode": config.drop_path_mode},
                      "attention": config._attn_implementation},
            "tasks": tasks,
            "parameter_groups": groups,
            "steps": run.max_steps, "warmup_steps": run.warmup_steps,
            "gradient_accumulation_steps": run.gradient_accumulation_steps,
            "samples_per_step": sum(s.batch_size for s in self.specs.values()) * run.gradient_accumulation_steps
            * accelerator.num_processes,
            "precision": run.precision, "sync_batchnorm": self.sync_batchnorm,
            "processes": accelerator.num_processes, "device": str(accelerator.device),
            "num_workers": run.num_workers, "report_to": run.report_to, "output_dir": run.output_dir,
        }

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, str]]:
        """Complete checkpoints of output_dir as (step, folder), oldest first."""
        root = self.config.run.output_dir
        found = []
        if os.path.isdir(root):
            for name in os.listdir(root):
                match = CHECKPOINT_PATTERN.match(name)
                if match and os.path.isfile(os.path.join(root, name, STATE_FILE)):
                    found.append((int(match.group(1)), os.path.join(root, name)))
        return sorted(found)

    def save_checkpoint(self):
        accelerator, root = self.accelerator, self.config.run.output_dir
        final = os.path.join(root, f"checkpoint-{self.step}")
        partial = final + ".partial"
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(partial)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            # The state file is written last: a folder without it (killed mid-save) is never resumed from.
            with open(os.path.join(partial, STATE_FILE), "w") as handle:
                json.dump({"step": self.step, "consumed": self.consumed, "skipped_steps": self.skipped_steps,
                           "gradient_overflow_steps": self.overflow_steps,
                           "tasks": [t.name for t in self.tasks], "world_size": accelerator.num_processes}, handle)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            limit = self.config.run.save_total_limit
            if limit:
                for _, old in self.checkpoints()[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def resume(self, where: str):
        if where == "latest":
            found = self.checkpoints()
            if not found:
                raise TrainingError(f"--resume-from-checkpoint latest: no complete checkpoint-<step> folder in "
                                    f"{self.config.run.output_dir!r}")
            where = found[-1][1]
        if not os.path.isdir(where):
            raise TrainingError(f"checkpoint {where!r} does not exist")
        state_path = os.path.join(where, STATE_FILE)
        if not os.path.isfile(state_path):
            raise TrainingError(f"checkpoint {where!r} is incomplete (no {STATE_FILE}: the run was stopped while "
                                "saving it); resume from an earlier checkpoint")
        with open(state_path) as handle:
            state = json.load(handle)
        names = [t.name for t in self.tasks]
        if state.get("tasks") != names:
            raise TrainingError(f"checkpoint {where!r} trained tasks {state.get('tasks')}, this run has {names}")
        if state.get("world_size") != self.accelerator.num_processes:
            raise TrainingError(f"checkpoint {where!r} was written by {state.get('world_size')} processes; resume "
                                f"with the same number (now {self.accelerator.num_processes}) to continue exactly")
        try:
            self.accelerator.load_state(where)
        except Exception as error:  # noqa: BLE001 - safetensors/pickle/torch raise many types for damaged files
            raise TrainingError(f"checkpoint {where!r} cannot be loaded ({type(error).__name__}: "
                                f"{str(error).splitlines()[0] if str(error) else ''}); it is damaged") from error
        self.step, self.consumed = state["step"], dict(state["consumed"])
        self.skipped_steps = state.get("skipped_steps", 0)
        self.overflow_steps = state.get("gradient_overflow_steps", 0)
        self.accelerator.print(f"resumed from {where} at step {self.step}")

    # ---- one step -------------------------------------------------------------------------------------------
    def _micro_batch(self, iterators, names):
        batches, targets, ranges = {}, {}, {}
        for name in names:
            example = next(iterators[name])
            self.consumed[name] += self.specs[name].batch_size
            task = self.model.config.get_task(name)
            ranges.setdefault(task.model_input, []).append((name, example["pixel_values"]))
            targets[name] = example["target"]
        device = self.accelerator.device
        for model_input, parts in ranges.items():
            pixels, spans, start = [], [], 0
            for name, tensor in parts:
                pixels.append(tensor)
                spans.append((name, start, start + tensor.shape[0]))
                start += tensor.shape[0]
            batches[model_input] = (torch.cat(pixels).to(device, non_blocking=True), spans)
        return batches, {name: value.to(device, non_blocking=True) for name, value in targets.items()}

    def _losses(self, raw, targets, classifiers=None) -> dict[str, torch.Tensor]:
        if classifiers is None:
            classifiers = self.accelerator.unwrap_model(self.module).classifiers
        losses = {}
        for name, output in raw.items():
            task = self.model.config.get_task(name)
            state = {"classifier_weight": classifiers[name]} if name in classifiers else {}
            losses[name] = get_task_type(task).loss(task, output.float(), targets[name], state)
        return losses

    def train_step(self, iterators) -> dict[str, float]:
        """One optimizer step (``gradient_accumulation_steps`` micro-batches); returns the mean loss per task."""
        from .losses import combine_task_losses

        run, accelerator = self.config.run, self.accelerator
        names = [t.name for t in self.tasks]
        totals: dict[str, float] = {}
        finite = True
        for micro in range(run.gradient_accumulation_steps):
            chosen = names if run.sampling == "lockstep" else choose_tasks(
                names, [self.specs[n].sampling_weight for n in names], self.step * 1000 + micro, run.seed)
            batches, targets = self._micro_batch(iterators, chosen)
            last = micro == run.gradient_accumulation_steps - 1
            with accelerator.no_sync(self.module) if not last else nullcontext():
                with accelerator.autocast():
                    raw, classifiers = self.module(batches)
                losses = self._losses(raw, targets, classifiers)
                total = combine_task_losses(losses, {n: self.weights[n] for n in losses})
                bad = [name for name, value in losses.items() if not torch.isfinite(value)]
                flag = torch.tensor([0.0 if bad else 1.0], device=accelerator.device)
                if accelerator.num_processes > 1:
                    flag = accelerator.reduce(flag, reduction="sum") / accelerator.num_processes
                if flag.item() < 1.0:
                    finite = False
                    if run.on_nonfinite == "stop":
                        where = f"task(s) {bad}" if bad else "another process's task(s)"
                        raise TrainingError(f"step {self.step}: non-finite loss in {where} "
                                            f"({ {n: float(losses[n].detach()) for n in bad} }); "
                                            "set run.on_nonfinite: skip "
                                            "to skip such steps")
                    continue
                scaled = total / run.gradient_accumulation_steps
                accelerator.backward(self.scaler.scale(scaled) if self.scaler is not None else scaled)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / run.gradient_accumulation_steps
        if finite and self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
            if run.max_grad_norm:
                accelerator.clip_grad_norm_(self.module.parameters(), run.max_grad_norm)
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped where a gradient overflowed
            self.scaler.update()
            self.overflow_steps += int(self.scaler.get_scale() < scale)
        elif finite:
            if run.max_grad_norm:
                accelerator.clip_grad_norm_(self.module.parameters(), run.max_grad_norm)
            self.optimizer.step()
        else:
            self.skipped_steps += 1
        with warnings.catch_warnings():
            # a skipped step still advances the schedule (it counts as a step); torch warns about that order
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return totals

    # ---- evaluation -----------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Metrics on each task's held-out data (the evaluation protocol where one exists, mean loss otherwise)."""
        results = {}
        model = self.accelerator.unwrap_model(self.module).model
        was_training = model.training
        model.eval()
        try:
            for task in self.tasks:
                if task.name in self.eval_rows:
                    results.update(self._evaluate_task(model, task, self.specs[task.name], self.eval_rows[task.name]))
        finally:
            model.train(was_training)
        return results

    def _evaluate_task(self, model, task, spec, rows) -> dict[str, float]:
        limit = self.config.run.eval_limit
        if limit:
            rows = rows.select(range(min(limit, len(rows))))
        if spec.eval_protocol:
            from ..evaluation import evaluate as run_evaluation

            metrics = run_evaluation(model, rows, spec.eval_protocol, task=task.name, device=self.accelerator.device,
                                     batch_size=max(1, spec.batch_size), keep_predictions=False)
            return {f"eval/{task.name}/{key}": float(value) for key, value in metrics.items()
                    if isinstance(value, (int, float)) and not isinstance(value, bool)}
        from .examples import TaskExampleBuilder, collate_examples

        builder = TaskExampleBuilder(task, train=False, processor=self.processor, zoom=spec.zoom,
                                     dense_face_scale=spec.dense_face_scale, warp_factor=spec.warp_factor)
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(rows), spec.batch_size):
                examples = [builder(rows[i], np.random.default_rng(i))
                            for i in range(start, min(len(rows), start + spec.batch_size))]
                batch = collate_examples(examples)
                pixels = batch["pixel_values"].to(self.accelerator.device)
                raw = model.forward_task_batches({task.model_input: (pixels, [(task.name, 0, len(examples))])})
                loss = self._losses(raw, {task.name: batch["target"].to(self.accelerator.device)})[task.name]
                total, count = total + float(loss) * len(examples), count + len(examples)
        return {f"eval/{task.name}/loss": total / max(count, 1)}

    # ---- the loop -------------------------------------------------------------------------------------------
    def train(self, resume_from: str | None = None) -> str:
        from tqdm.auto import tqdm

        run, accelerator = self.config.run, self.accelerator
        if resume_from:
            self.resume(resume_from)
        if accelerator.is_main_process:
            os.makedirs(run.output_dir, exist_ok=True)
        if run.report_to != "none":
            accelerator.init_trackers("faceptor", config={"max_steps": run.max_steps,
                                                          "learning_rate": run.learning_rate,
                                                          "tasks": ",".join(t.name for t in self.tasks)})
        iterators = {t.name: iter(self._loader(i, t)) for i, t in enumerate(self.tasks)}
        self.module.train()
        bar = tqdm(total=run.max_steps, initial=self.step, desc="train", unit="step",
                   disable=not accelerator.is_local_main_process)
        window, window_start, window_samples = {}, time.perf_counter(), 0
        per_step_samples = sum(s.batch_size for s in self.specs.values()) * run.gradient_accumulation_steps \
            * accelerator.num_processes
        while self.step < run.max_steps:
            losses = self.train_step(iterators)
            for name, value in losses.items():
                window.setdefault(name, []).append(value)
            window_samples += per_step_samples
            bar.update(1)
            if self.step % run.logging_steps == 0 or self.step == run.max_steps:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                logs = {f"loss/{name}": sum(v) / len(v) for name, v in window.items()}
                logs.update({f"lr/{group['name']}": group["lr"] for group in self.optimizer.param_groups})
                logs["samples_per_second"] = window_samples / elapsed
                if run.report_to != "none":
                    accelerator.log(logs, step=self.step)
                bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in logs.items() if k.startswith("loss/")})
                window, window_start, window_samples = {}, time.perf_counter(), 0
            if run.eval_steps and self.step % run.eval_steps == 0 and accelerator.is_main_process:
                metrics = self.evaluate()
                if metrics and run.report_to != "none":
                    accelerator.log(metrics, step=self.step)
                if metrics:
                    accelerator.print(json.dumps({"step": self.step, **metrics}))
            if run.save_steps and (self.step % run.save_steps == 0 or self.step == run.max_steps):
                self.save_checkpoint()
        bar.close()
        self.finish()
        return run.output_dir

    def weights_checksum(self) -> float:
        """Sum of |w| over the model's weights, in float64: equal on every process when DDP kept them in step."""
        model = self.accelerator.unwrap_model(self.module).model
        return float(sum(p.detach().double().abs().sum() for p in model.parameters()))

    def finish(self):
        """Check every process holds the same weights, then write the trained model and its processor into
        output_dir (as transformers' Trainer does) with a ``training_summary.json``."""
        accelerator, run = self.accelerator, self.config.run
        accelerator.wait_for_everyone()
        checksum = torch.tensor([self.weights_checksum()], dtype=torch.float64, device=accelerator.device)
        checksums = accelerator.gather(checksum).tolist() if accelerator.num_processes > 1 else checksum.tolist()
        if max(checksums) - min(checksums) > 1e-9 * max(1.0, abs(checksums[0])):
            raise TrainingError(f"processes ended with different weights (checksums {checksums}); the run is broken")
        if accelerator.is_main_process:
            with open(os.path.join(run.output_dir, "training_summary.json"), "w") as handle:
                json.dump({"steps": self.step, "skipped_steps": self.skipped_steps,
                           "gradient_overflow_steps": self.overflow_steps, "processes": len(checksums),
                           "weights_checksum_per_process": checksums, "tasks": [t.name for t in self.tasks],
                           "loss_weights": self.weights, "samples_per_task": self.consumed,
                           "new_parameters": len(self.new_parameters)}, handle, indent=1)
            model = accelerator.unwrap_model(self.module).model
            model.is_untrained = False
            model.save_pretrained(run.output_dir)
            self.processor.save_pretrained(run.output_dir)
            if run.push_to_hub:
                from ..hub import push_to_hub

                push_to_hub(run.push_to_hub, model=model, processor=self.processor,
                            commit_message=f"Trained {run.max_steps} steps on {', '.join(self.specs)}")
        # Every process waits for the save before any tracker closes, and nothing collective follows: closing the
        # trackers with ``accelerator.end_training()`` would also destroy the process group, and a collective after
        # it made every multi-process run exit 1 after its model was written. The group stays up for a next trainer
        # in the same processes (stage 1 then stage 2); the entry point destroys it before exiting.
        accelerator.wait_for_everyone()
        if run.report_to != "none":
            for tracker in accelerator.trackers:
                tracker.finish()


__all__ = ["FaceptorTrainer", "TrainingError", "TrainingModule", "build_model", "parameter_groups", "schedule"]
