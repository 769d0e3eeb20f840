"""Model and optimizer setup of a training run: the ``FaceptorModel`` to train (fresh, from FaRL, or pretrained with
new tasks or Layer-Attention levels), the recognition tasks whose classifier is sharded, the AdamW parameter groups,
the learning-rate schedule and the precision (autocast dtype and gradient scaler)."""

from __future__ import annotations

import math

import torch

from ..configuration_faceptor import FaceptorConfig
from ..modeling_faceptor import FaceptorModel
from .config import TrainingConfig, TrainingConfigError
from .modeling_training import FaceptorForMultiTaskTraining
from .partial_fc import shard_optimizer_state


def build_model(training_config: TrainingConfig) -> tuple[FaceptorModel, list[str]]:
    """The model to train and the names of parameters that start from random values.

    ``preset``/``config`` build a fresh model, whose encoder comes from ``encoder_init`` (FaRL / CLIP, as the paper
    starts) where given; ``pretrained`` loads one and, where ``overrides`` or new tasks change its architecture
    (Layer-Attention levels for stage 2, a task it lacks), carries every matching weight into the new architecture.
    Tasks of the run that the model lacks are added from their task fields. A task's ``loss_weight`` in the run
    replaces the model task's own (kept in the config, so the saved model records what it was trained with)."""
    model_section = training_config.model
    pretrained = None
    if "pretrained" in model_section:
        try:
            pretrained = FaceptorModel.from_pretrained(model_section["pretrained"],
                                                       revision=model_section.get("revision"))
        except OSError as error:
            raise TrainingConfigError(f"model.pretrained {model_section['pretrained']!r} cannot be loaded: "
                                      f"{str(error).splitlines()[0]}") from error
        model_config = FaceptorConfig(**pretrained.config.to_dict())
    else:
        try:
            model_config = (FaceptorConfig.from_preset(model_section["preset"]) if "preset" in model_section
                            else FaceptorConfig(**model_section["config"]))
        except (TypeError, ValueError, KeyError) as error:
            raise TrainingConfigError(f"model: {str(error).strip(chr(39))}") from error
    changes = dict(model_section.get("overrides") or {})
    known = set(model_config.task_names)
    tasks = [task.to_dict() for task in model_config.tasks]
    weights = {t.name: t.loss_weight for t in training_config.tasks if t.loss_weight is not None}
    for task_spec in training_config.tasks:
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
        if not model_section.get("encoder_init"):
            return model, [name for name, _ in model.named_parameters()]
        from ..convert_farl_encoder_to_hf import EncoderCheckpointError, load_encoder_checkpoint

        try:
            load_encoder_checkpoint(model, model_section["encoder_init"])
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


def sharded_classifiers(training_config: TrainingConfig, model_config: FaceptorConfig) -> dict[str, float]:
    """Recognition task name -> ``sample_rate`` for the tasks of the run whose entry asks for a sharded classifier
    (``classifier: {sharded: true}``); a task without a CosFace classifier (not read out as an embedding) asking
    for one is a ``TrainingConfigError`` naming the task and key."""
    sharded = {}
    for spec in training_config.tasks:
        if spec.classifier is None or not spec.classifier.sharded:
            continue
        task = model_config.get_task(spec.name)
        if task.readout != "embedding":
            raise TrainingConfigError(f"tasks.{spec.name}.classifier: sharded applies to recognition tasks (their "
                                      f"CosFace classifier); task {spec.name!r} is of type {task.type!r}")
        sharded[spec.name] = spec.classifier.sample_rate
    return sharded


def parameter_groups(module: FaceptorForMultiTaskTraining, run) -> list[dict]:
    """AdamW groups: encoder, heads (decoder and all task heads) and CosFace classifiers, each with its learning-
    rate multiplier; weight decay on every parameter as officially. ``freeze`` / ``trainable`` name substrings of
    the training model's parameter names (``faceptor.encoder.``, ``layer_attention`` for stage 2,
    ``classifiers.``, which names the sharded ones too: ``sharded_classifiers.<task>.weight``)."""
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
        key = "classifiers" if name.startswith(("classifiers.", "sharded_classifiers.")) else (
            "encoder" if name.startswith("faceptor.encoder.") else "heads")
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


def build_optimizer(module: FaceptorForMultiTaskTraining, run) -> tuple[torch.optim.AdamW,
                                                                         torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``parameter_groups`` and its ``schedule``, stepped once per optimizer step. Its checkpoints hold
    the whole (K, D) moments of sharded classifiers (``partial_fc.shard_optimizer_state``)."""
    optimizer = torch.optim.AdamW(parameter_groups(module, run), lr=run.learning_rate, weight_decay=run.weight_decay)
    if len(module.sharded_classifiers):
        shard_optimizer_state(optimizer, module.sharded_classifiers.values())
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(run))


# ``run.precision`` -> the dtype the forward pass autocasts to (None: float32 throughout).
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def gradient_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler ``run.precision`` needs: ``fp16_grads`` is the official run (an fp32 forward and backward
    whose gradients are all-reduced in fp16: steps that overflow are skipped and the scale shrinks, growing again
    every 100 steps); ``fp16`` autocast scales with torch's defaults; None otherwise."""
    if precision == "fp16_grads":
        return torch.amp.GradScaler(device.type, growth_interval=100)
    if precision == "fp16":
        return torch.amp.GradScaler(device.type)
    return None


__all__ = ["AUTOCAST_DTYPES", "build_model", "build_optimizer", "gradient_scaler", "parameter_groups", "schedule",
           "sharded_classifiers"]
