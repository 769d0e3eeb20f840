"""The joint multi-task training loop of Faceptor on Accelerate: ``FaceptorTrainer(config).train()``.

One optimizer step draws one batch from every task (the official lockstep; or a random subset with
``run.sampling: probability``); the batches of all tasks reading the same input (112 or 512 px) go through the
encoder once and each task's head reads only its own rows. The model returns the loss itself
(``FaceptorForMultiTaskTraining``: each task's loss from the task-type registry, combined as the official loss holder
does, sum of w * L over sum of w, in fp32 whatever the autocast precision).

Where the rest lives: the model, optimizer, schedule and precision in ``model_setup``; checkpoint save, rotation and
resume in ``checkpointing``; the per-task batches in ``task_batches``; periodic evaluation is
``evaluation.evaluate``. State that makes a resume exact: the training model, optimizer, scheduler, gradient scaler
and RNG states (``accelerator.save_state``), the number of samples each task's stream has handed out, each process's
position in the stream of a ``streaming`` task (``training.streaming``), and the step; every sample's augmentation
is seeded by its stream position, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import gc
import json
import os
import re
import time
import warnings
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from ..data.schema import check_columns
from ..image_processing_faceptor import FaceptorImageProcessor
from ..task_types import get_task_type
from .checkpointing import resume_checkpoint, save_checkpoint
from .config import TrainingConfig, TrainingConfigError
from .datasets import TaskDataError, open_dataset, open_stream
from .errors import TrainingError
from .model_setup import AUTOCAST_DTYPES, build_model, build_optimizer, gradient_scaler, sharded_classifiers
from .modeling_training import FaceptorForMultiTaskTraining
from .partial_fc import clip_grad_norm_
from .sampling import choose_tasks
from .task_batches import integer_range, task_loader


class FaceptorTrainer:
    """Builds everything from a ``TrainingConfig`` and trains: ``FaceptorTrainer(config).train(resume_from=None)``.

    ``resume_from``: a ``checkpoint-<k>`` folder, or ``"latest"`` (the highest complete checkpoint of
    ``output_dir``). Returns the output folder, which then holds the trained model (``save_pretrained``), its
    processor, ``checkpoint-<k>/`` folders and tensorboard logs.

    Attributes: ``model`` the ``FaceptorModel`` being trained (what gets published); ``module`` the
    ``FaceptorForMultiTaskTraining`` around it as Accelerate prepared it (DDP-wrapped with several processes);
    ``weights`` the loss weight of each task of the run.
    """

    def __init__(self, config: TrainingConfig):
        from accelerate import Accelerator
        from accelerate.utils import (
            DDPCommunicationHookType,
            DistributedDataParallelKwargs,
            ProjectConfiguration,
            set_seed,
        )

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
        # find_unused_parameters: tasks drawn by probability, frozen parts and stage-2 selections leave parameters
        # without gradients. fp16_grads all-reduces gradients in fp16, as the official DDP hook did.
        ddp = DistributedDataParallelKwargs(
            find_unused_parameters=True,
            comm_hook=DDPCommunicationHookType.FP16 if run.precision == "fp16_grads" else DDPCommunicationHookType.NO)
        # The trainer runs autocast and the gradient scaler itself (``run.precision``): Accelerate fixes one
        # mixed precision per process, and a later run in the same process (stage 1 then stage 2, a notebook, the
        # tests) may ask for another.
        # save_on_each_node: accelerator.save_state then writes the weights and optimizer on every machine too.
        project = ProjectConfiguration(project_dir=run.output_dir, save_on_each_node=run.save_on_each_node)
        self.accelerator = Accelerator(mixed_precision="no", log_with=log_with, project_config=project,
                                       kwargs_handlers=[ddp])
        set_seed(run.seed)
        self.model, self.new_parameters = build_model(config)
        self.tasks = [self.model.config.get_task(spec.name) for spec in config.tasks]
        self.specs = {spec.name: spec for spec in config.tasks}
        sharded = sharded_classifiers(config, self.model.config)
        self.processor = FaceptorImageProcessor()
        self._open_datasets()
        self._check_evaluation_data()
        self.sync_batchnorm = self._convert_sync_batchnorm()
        training_model = FaceptorForMultiTaskTraining(self.model.config, self.num_identities, faceptor=self.model,
                                                      sharded_classifiers=sharded, classifier_seed=run.seed)
        self.sharded_classifiers = dict(training_model.sharded_classifiers.items())
        self.weights = {task.name: training_model.loss_weights[task.name] for task in self.tasks}
        if run.gradient_checkpointing:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        optimizer, self.scheduler = build_optimizer(training_model, run)
        self.module, self.optimizer = self.accelerator.prepare(training_model, optimizer)
        # Stepped once per optimizer step on every process (not prepared: accelerate would step it per process).
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.autocast_dtype = AUTOCAST_DTYPES.get(run.precision)
        self.scaler = gradient_scaler(run.precision, self.accelerator.device)
        if self.scaler is not None:
            self.accelerator.register_for_checkpointing(self.scaler)
        self.step, self.consumed, self.skipped_steps, self.overflow_steps = 0, {t.name: 0 for t in self.tasks}, 0, 0
        self.stream_states: dict[str, dict | None] = {}  # streamed tasks: this process's stream state

    # ---- setup ----------------------------------------------------------------------------------------------
    def _open_datasets(self):
        from .examples import TaskExampleBuilder

        self.rows, self.builders, self.num_identities, self.stream_splits = {}, {}, {}, {}
        for task in self.tasks:
            spec = self.specs[task.name]
            if spec.streaming:
                rows, first_rows = self._open_stream(task, spec)
            else:
                rows = open_dataset(task.name, spec.dataset, spec.split)
                if len(rows) == 0:
                    raise TaskDataError(f"task {task.name!r}: dataset {spec.dataset!r} split {spec.split!r} is empty")
                first_rows = [rows[index] for index in range(min(len(rows), 4))]
            where = f"dataset {spec.dataset!r} split {spec.split!r}"
            try:
                check_columns(rows, task, where)
            except KeyError as error:
                raise TaskDataError(str(error).strip(chr(34))) from error
            column = get_task_type(task).label_column
            low, high = (None, None) if spec.streaming else integer_range(rows, column)
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
            for index, row in enumerate(first_rows):
                builder(row, np.random.default_rng(index), index=index)
            self.rows[task.name], self.builders[task.name] = rows, builder

    def _open_stream(self, task, spec):
        """(the task's ``IterableDataset``, its first rows); checks the stream can be split over the processes and
        that a recognition task names its identity count (a stream cannot be scanned for the largest id)."""
        from .streaming import describe_split, split_strategy

        if task.readout == "embedding" and spec.num_identities is None:
            raise TrainingConfigError(f"tasks.{task.name}.num_identities must be given with streaming: true (a "
                                      "stream cannot be scanned for the largest identity)")
        stream = open_stream(task.name, spec.dataset, spec.split)
        processes = self.accelerator.num_processes
        strategy = split_strategy(task.name, stream.num_shards, processes, spec.stream_split)
        self.stream_splits[task.name] = (strategy, describe_split(strategy, stream.num_shards, processes))
        first_rows = list(stream.take(4))
        if not first_rows:
            raise TaskDataError(f"task {task.name!r}: dataset {spec.dataset!r} split {spec.split!r} is empty")
        if stream.column_names is None:  # a Hub stream without declared features: the first row tells
            stream = stream.select_columns(list(first_rows[0]))
        return stream, first_rows

    def _check_evaluation_data(self):
        """Open every task's held-out data and check its protocol and the columns its metric reads now, on every
        process: a mistake found at the first evaluation would stop rank 0 while the other processes wait in a
        collective. A task without ``eval_protocol`` is scored by its type's default metric on the schema's crop."""
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
            try:
                _, _, accumulator = protocol_metric(self.model.config, spec.eval_protocol or task.name, task.name)
            except KeyError as error:
                key = "eval_protocol" if spec.eval_protocol else "eval_dataset"
                raise TrainingConfigError(f"tasks.{task.name}.{key}: {str(error).strip(chr(34))}") from error
            try:
                check_metric_columns(rows, task, accumulator, where)
            except KeyError as error:
                raise TaskDataError(str(error).strip(chr(34))) from error
            self.eval_rows[task.name] = rows

    def _convert_sync_batchnorm(self) -> str:
        """Naive Faceptor's UPerNet heads use SyncBatchNorm officially; ``run.sync_batchnorm`` converts their
        BatchNorms where statistics can be synchronized (several CUDA processes: torch's SyncBatchNorm has no CPU
        kernel). Returns what was done, for the plan."""
        if not self.config.run.sync_batchnorm:
            return "off"
        heads = getattr(self.model, "naive_dense_heads", None)
        if heads is None or not len(heads):
            return "on, but the model has no Naive dense heads (nothing to synchronize)"
        if self.accelerator.num_processes < 2:
            return "on, one process: plain BatchNorm (nothing to synchronize)"
        if self.accelerator.device.type != "cuda":
            return "on, but SyncBatchNorm needs CUDA: plain BatchNorm per process"
        for name, head in list(heads.items()):
            heads[name] = nn.SyncBatchNorm.convert_sync_batchnorm(head)
        return "on: SyncBatchNorm in the Naive dense heads"

    def _loader(self, task_index: int, task) -> torch.utils.data.DataLoader:
        spec, run, state = self.specs[task.name], self.config.run, self.accelerator.state
        if spec.streaming:
            from .streaming import stream_loader

            return stream_loader(self.rows[task.name], self.builders[task.name], task_name=task.name,
                                 task_index=task_index, batch_size=spec.batch_size, seed=run.seed,
                                 rank=state.process_index, world_size=state.num_processes,
                                 strategy=self.stream_splits[task.name][0], buffer_size=spec.shuffle_buffer_size,
                                 start=self.consumed[task.name], state=self.stream_states.get(task.name),
                                 num_workers=run.num_workers)
        return task_loader(self.rows[task.name], self.builders[task.name], task_index=task_index,
                           batch_size=spec.batch_size, seed=run.seed, rank=state.process_index,
                           world_size=state.num_processes, start=self.consumed[task.name],
                           num_workers=run.num_workers)

    # ---- the plan -------------------------------------------------------------------------------------------
    def plan(self) -> dict:
        """What the run will do, as ``faceptor-hf train --dry-run`` prints it: per task its data, batch size and
        effective loss weight; the parameter groups with their peak learning rates; steps and precision."""
        run, accelerator = self.config.run, self.accelerator
        model_config = self.model.config
        tasks = []
        for task in self.tasks:
            spec = self.specs[task.name]
            entry = {"name": task.name, "type": task.type, "input": task.model_input, "dataset": spec.dataset,
                     "split": spec.split, "rows": None if spec.streaming else len(self.rows[task.name]),
                     "batch_size": spec.batch_size, "loss_weight": self.weights[task.name]}
            if spec.streaming:
                entry["streaming"] = {"shards": self.rows[task.name].num_shards,
                                      "split": self.stream_splits[task.name][1],
                                      "shuffle_buffer_size": spec.shuffle_buffer_size}
            if task.name in self.num_identities:
                entry["identities"] = self.num_identities[task.name]
            if task.name in self.sharded_classifiers:
                head = self.sharded_classifiers[task.name]
                entry["classifier"] = {"sharded": True, "sample_rate": head.sample_rate,
                                       "classes_per_process": -(-head.num_classes // head.world_size)}
            if task.name in self.eval_rows:
                entry["evaluation"] = {"dataset": spec.eval_dataset or spec.dataset,
                                       "split": spec.eval_split or "test", "rows": len(self.eval_rows[task.name]),
                                       "protocol": spec.eval_protocol, "every_steps": run.eval_steps}
            tasks.append(entry)
        groups = [{"name": group["name"], "peak_learning_rate": run.learning_rate * group["multiplier"],
                   "tensors": len(group["params"]), "parameters": sum(p.numel() for p in group["params"])}
                  for group in self.optimizer.param_groups]
        encoder_init = getattr(model_config, "encoder_init", None)
        return {
            "config": self.config.source,
            "model": {"variant": model_config.variant_name,
                      "parameters": sum(p.numel() for p in self.model.parameters()),
                      "fresh_tensors": len(self.new_parameters), "encoder_init": encoder_init,
                      "drop_path": {"rate": model_config.drop_path_rate, "mode": model_config.drop_path_mode},
                      "attention": model_config._attn_implementation},
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
    def save_checkpoint(self):
        run = self.config.run
        state = {"step": self.step, "consumed": self.consumed, "skipped_steps": self.skipped_steps,
                 "gradient_overflow_steps": self.overflow_steps, "tasks": [t.name for t in self.tasks],
                 "world_size": self.accelerator.num_processes}
        if self.stream_splits:
            from .streaming import gather_stream_states

            state["streams"] = gather_stream_states(self.accelerator, {name: self.stream_states.get(name)
                                                                       for name in self.stream_splits})
        save_checkpoint(self.accelerator, run.output_dir, state, run.save_total_limit,
                        save_on_each_node=run.save_on_each_node)

    def resume(self, where: str):
        run = self.config.run
        folder, state = resume_checkpoint(self.accelerator, where, run.output_dir, [t.name for t in self.tasks],
                                          save_on_each_node=run.save_on_each_node)
        self.step, self.consumed = state["step"], dict(state["consumed"])
        self.skipped_steps = state.get("skipped_steps", 0)
        self.overflow_steps = state.get("gradient_overflow_steps", 0)
        missing = [name for name in self.stream_splits if name not in state.get("streams", {})]
        if missing:
            raise TrainingError(f"checkpoint {folder!r} holds no stream state for streamed task(s) {missing} (it "
                                "was written by a run that did not stream them); resume with the same streaming")
        rank = self.accelerator.process_index
        self.stream_states = {name: states[rank] for name, states in state.get("streams", {}).items()}
        self.accelerator.print(f"resumed from {folder} at step {self.step}")

    # ---- one step -------------------------------------------------------------------------------------------
    def _micro_batch(self, iterators, names: list[str]) -> dict:
        """The next batch of each task in ``names`` as ``FaceptorForMultiTaskTraining`` keyword arguments: the
        tasks' pixels concatenated per model input, each task's rows (``task_rows``) and targets (``labels``)."""
        pixels: dict[str, list[torch.Tensor]] = {}
        task_rows, labels = {}, {}
        device = self.accelerator.device
        for name in names:
            example = next(iterators[name])
            self.consumed[name] += self.specs[name].batch_size
            if "stream_state" in example:  # where this process's stream continues after this batch
                self.stream_states[name] = example.pop("stream_state")
            parts = pixels.setdefault(self.model.config.get_task(name).model_input, [])
            start = sum(part.shape[0] for part in parts)
            parts.append(example["pixel_values"])
            task_rows[name] = slice(start, start + example["pixel_values"].shape[0])
            labels[name] = example["target"].to(device, non_blocking=True)
        inputs = {model_input: torch.cat(parts).to(device, non_blocking=True) for model_input, parts in pixels.items()}
        return {**inputs, "task_rows": task_rows, "labels": labels}

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.accelerator.device.type, dtype=self.autocast_dtype)

    def _clip_gradients(self, max_norm: float):
        if self.sharded_classifiers:  # the norm of the whole gradient takes every process's classifier block
            clip_grad_norm_(self.module.parameters(), max_norm, self.sharded_classifiers.values())
        else:
            self.accelerator.clip_grad_norm_(self.module.parameters(), max_norm)

    def _share_classifier_overflow(self):
        """Make every process see an overflow in any process's classifier block. The scaler checks the gradients
        each process holds; the encoder's are the same everywhere (all-reduced), but a sharded block's are not, and
        a step skipped on some processes only would leave the model replicas apart. Poisoning the local blocks with
        inf where any block overflowed makes every scaler skip the step and shrink its scale alike."""
        if not self.sharded_classifiers or self.accelerator.num_processes < 2:
            return
        heads = list(self.sharded_classifiers.values())
        overflow = torch.zeros((), device=self.accelerator.device)
        for head in heads:
            if head.weight.grad is not None and not torch.isfinite(head.weight.grad).all():
                overflow += 1
        overflow = self.accelerator.reduce(overflow, reduction="sum")
        if overflow.item() > 0:
            for head in heads:
                if head.weight.grad is not None:
                    head.weight.grad.fill_(float("inf"))

    def train_step(self, iterators) -> dict[str, float]:
        """One optimizer step (``gradient_accumulation_steps`` micro-batches); returns the mean loss per task over
        the micro-batches and the processes (a sharded classifier's loss is already that of the global batch)."""
        run, accelerator = self.config.run, self.accelerator
        names = [t.name for t in self.tasks]
        totals: dict[str, float] = {}
        finite = True
        for micro in range(run.gradient_accumulation_steps):
            chosen = names if run.sampling == "lockstep" else choose_tasks(
                names, [self.specs[n].sampling_weight for n in names], self.step * 1000 + micro, run.seed)
            batch = self._micro_batch(iterators, chosen)
            last = micro == run.gradient_accumulation_steps - 1
            with accelerator.no_sync(self.module) if not last else nullcontext():
                with self._autocast():
                    output = self.module(**batch)
                losses = output.task_losses
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
                                            "set run.on_nonfinite: skip to skip such steps")
                    continue
                scaled = output.loss / run.gradient_accumulation_steps
                accelerator.backward(self.scaler.scale(scaled) if self.scaler is not None else scaled)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / run.gradient_accumulation_steps
        if finite and self.scaler is not None:
            self._share_classifier_overflow()
            self.scaler.unscale_(self.optimizer)
            if run.max_grad_norm:
                self._clip_gradients(run.max_grad_norm)
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped where a gradient overflowed
            self.scaler.update()
            self.overflow_steps += int(self.scaler.get_scale() < scale)
        elif finite:
            if run.max_grad_norm:
                self._clip_gradients(run.max_grad_norm)
            self.optimizer.step()
        else:
            self.skipped_steps += 1
        with warnings.catch_warnings():
            # a skipped step still advances the schedule (it counts as a step); torch warns about that order
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if accelerator.num_processes > 1 and totals:
            names = sorted(totals)
            means = accelerator.reduce(torch.tensor([totals[name] for name in names], dtype=torch.float64,
                                                    device=accelerator.device), reduction="mean")
            totals = dict(zip(names, means.tolist()))
        return totals

    # ---- evaluation -----------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """``evaluation.evaluate`` on each task's held-out data (its ``eval_protocol``, else the task's own
        protocol: the schema's crop and the type's default metric), the first ``run.eval_limit`` rows, split over
        the processes (every process calls this and gets the same numbers); -> ``{"eval/<task>/<metric>": value}``."""
        from ..evaluation import evaluate

        results = {}
        for task in self.tasks:
            if task.name not in self.eval_rows:
                continue
            spec = self.specs[task.name]
            metrics = evaluate(self.model, self.eval_rows[task.name], spec.eval_protocol or task.name, task=task.name,
                               processor=self.processor, batch_size=max(1, spec.batch_size),
                               limit=self.config.run.eval_limit or None, keep_predictions=False,
                               distributed=self.accelerator.num_processes > 1)
            results.update({f"eval/{task.name}/{key}": float(value) for key, value in metrics.items()
                            if isinstance(value, (int, float)) and not isinstance(value, bool)})
        return results

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
            if run.eval_steps and self.step % run.eval_steps == 0:
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

    def close(self) -> None:
        """Release the prepared model and optimizer, then destroy the process group (the end of a process's last
        run; after it this trainer cannot train).

        The order matters: DDP's reducer holds the process group, and a reducer freed while holding the group's
        last reference destroys the gloo group with the GIL held, while a gloo thread may still need the GIL to
        free the tensors of the last barrier — a deadlock seen as node 1 of a two-machine run hanging after its
        checkpoints. Freed first, the reducer only drops a reference; ``destroy_process_group`` then tears the
        group down through torch's binding, which releases the GIL."""
        self.module = self.optimizer = None
        self.accelerator.free_memory()
        gc.collect()
        self.accelerator.state.destroy_process_group()

    def weights_checksum(self) -> float:
        """Sum of |w| over the model's weights, in float64: equal on every process when DDP kept them in step."""
        return float(sum(p.detach().double().abs().sum() for p in self.model.parameters()))

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
            model = self.model
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


__all__ = ["FaceptorTrainer", "TrainingError"]
