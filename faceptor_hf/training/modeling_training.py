"""The model that joint training optimizes: ``FaceptorForMultiTaskTraining`` returns its own loss.

It holds the ``FaceptorModel`` that gets published (``.faceptor``), one CosFace classifier per recognition task
(training-only weights, saved in checkpoints, never in the published model: the whole (K, D) matrix on every
process, or a ``PartialFC`` that splits it over the processes) and the loss weight of every task. Its
``forward`` runs each task on its own rows of the input batches and, given ``labels``, computes every task's loss
(the task type's, ``training.losses``) and their weighted combination, as the ``XForY`` models of transformers
return ``loss``. Because the classifiers are used inside ``forward``, DistributedDataParallel sees them in the
step's graph like any other weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..configuration_faceptor import FaceptorConfig
from ..modeling_faceptor import FaceptorModel, FaceptorPreTrainedModel
from .losses import combine_task_losses, task_loss
from .partial_fc import PartialFC, initial_classifier_rows

# Module names of the published model inside the training model, before and after it was renamed: checkpoints
# written while it was called ``model`` still resume.
_PUBLISHED_PREFIX, _EARLIER_PREFIX = "faceptor.", "model."


@dataclass
class FaceptorMultiTaskTrainingOutput(ModelOutput):
    """Output of [`FaceptorForMultiTaskTraining`].

    Args:
        loss: () float32, sum over tasks of w * L divided by the sum of w (the tasks given ``labels``); None
            without labels.
        task_losses: task name -> () float32 loss of that task's rows; None without labels.
        task_logits: task name -> raw head output of that task's rows, in the form of
            ``FaceptorOutput.task_logits`` (e.g. (B_task, embedding_size) for recognition, (B_task, N, h, w)
            heatmaps for landmarks).
    """

    loss: torch.FloatTensor | None = None
    task_losses: dict[str, torch.Tensor] | None = None
    task_logits: dict[str, torch.Tensor] | None = None


class FaceptorForMultiTaskTraining(FaceptorPreTrainedModel):
    """``FaceptorModel`` + CosFace classifiers + loss weights, with a ``forward`` that returns the training loss.

    Args:
        config: the model's configuration (its tasks carry the ``loss_weight`` of each task).
        num_identities: recognition task name -> K, the row count of its (K, embedding_size) CosFace classifier,
            for the recognition tasks to train (one without a classifier runs, but takes no labels).
        faceptor: the ``FaceptorModel`` to train (its weights are kept); a fresh one from ``config`` if None.
        sharded_classifiers: recognition task name (of ``num_identities``) -> ``sample_rate`` for the tasks whose
            classifier is split over the processes of the run (``PartialFC``; built for the process group
            initialized now, or one process).
        classifier_seed: seeds the classifiers' initial values (``initial_classifier_rows``, the same for a whole
            and a split classifier) and Partial FC's class sampling.

    Attributes:
        faceptor: the ``FaceptorModel``; ``faceptor.save_pretrained`` publishes the trained model.
        classifiers: recognition task name -> (K, D) CosFace class matrix, uniform in +-1/sqrt(D).
        sharded_classifiers: recognition task name -> ``PartialFC`` holding this process's block of the (K, D)
            matrix; its loss is computed over the global batch. DDP leaves these blocks alone (each process's are
            its own): their names are set as ignored on this module, so wrapping it in DDP needs nothing more.
        loss_weights: task name -> weight w of its loss in ``loss`` (from the tasks' ``loss_weight``).
    """

    def __init__(self, config: FaceptorConfig, num_identities: dict[str, int] | None = None,
                 faceptor: FaceptorModel | None = None, sharded_classifiers: dict[str, float] | None = None,
                 classifier_seed: int = 0):
        faceptor = faceptor if faceptor is not None else FaceptorModel(config)
        super().__init__(faceptor.config)
        self.faceptor = faceptor
        num_identities = dict(num_identities or {})
        widths = {task.name: task.embedding_size for task in faceptor.config.tasks if task.readout == "embedding"}
        unknown = [name for name in num_identities if name not in widths]
        if unknown:
            raise ValueError(f"num_identities names {unknown}, which are not recognition tasks of the model "
                             f"({sorted(widths)})")
        sharded_classifiers = dict(sharded_classifiers or {})
        unsized = [name for name in sharded_classifiers if name not in num_identities]
        if unsized:
            raise ValueError(f"sharded_classifiers names {unsized}, which num_identities does not size "
                             f"({sorted(num_identities)})")
        self.classifier_seed = classifier_seed
        self.classifiers = nn.ParameterDict(
            {name: nn.Parameter(torch.empty(count, widths[name])) for name, count in num_identities.items()
             if name not in sharded_classifiers})
        self.sharded_classifiers = nn.ModuleDict(
            {name: PartialFC(widths[name], num_identities[name], sample_rate=rate, seed=classifier_seed)
             for name, rate in sharded_classifiers.items()})
        ignored = [tensor for name, head in self.sharded_classifiers.items()
                   for tensor in head.ignored_by_ddp(f"sharded_classifiers.{name}.")]
        if ignored:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, ignored)
        self.loss_weights = {task.name: task.loss_weight for task in faceptor.config.tasks}
        self.register_load_state_dict_pre_hook(_read_earlier_module_names)
        self.post_init()  # initializes the classifiers only: every module of ``faceptor`` already holds its weights

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        if module is self.classifiers:
            # the rows a PartialFC block of the same seed starts from: sharded and whole runs start alike
            for weight in module.values():
                init.copy_(weight, initial_classifier_rows(0, weight.shape[0], weight.shape[1], self.classifier_seed))
        elif not isinstance(module, PartialFC):  # a PartialFC initializes its block itself
            super()._init_weights(module)

    def forward(self, pixel_values: torch.Tensor | None = None, dense_pixel_values: torch.Tensor | None = None,
                task_rows: dict[str, slice] | None = None, labels: dict[str, torch.Tensor] | None = None,
                return_dict: bool | None = None) -> FaceptorMultiTaskTrainingOutput:
        """Run each task on its own rows; with ``labels``, compute the losses.

        Args:
            pixel_values: (B, 3, 112, 112) rows of the 112-px tasks, one task's batch after another.
            dense_pixel_values: (B', 3, 512, 512) rows of the 512-px tasks.
            task_rows: task name -> ``slice`` of the rows of its input that belong to it (default: every task
                whose input is given reads all rows). All tasks of one input share one encoder pass.
            labels: task name -> the target argument of that task type's loss (``training.losses``; e.g. (B,)
                identity ids for recognition, (B, N, 2) crop-pixel points for landmarks), for tasks of
                ``task_rows``.
            return_dict: False for a tuple.

        Returns [`FaceptorMultiTaskTrainingOutput`]; the losses are float32 whatever the autocast precision.
        """
        inputs = {"pixel_values": pixel_values, "dense_pixel_values": dense_pixel_values}
        if task_rows is None:
            task_rows = {task.name: slice(None) for task in self.config.tasks if inputs[task.model_input] is not None}
        task_logits = self.faceptor.forward_task_batches(self._task_batches(inputs, task_rows))
        loss = task_losses = None
        if labels is not None:
            unknown = [name for name in labels if name not in task_logits]
            if unknown:
                raise ValueError(f"labels given for task(s) {unknown} that task_rows does not run "
                                 f"({sorted(task_logits)})")
            task_losses = {name: self.task_loss(name, task_logits[name], labels[name])
                           for name in task_logits if name in labels}
            loss = combine_task_losses(task_losses, self.loss_weights)
        output = FaceptorMultiTaskTrainingOutput(loss=loss, task_losses=task_losses, task_logits=task_logits)
        return output if return_dict is not False else output.to_tuple()

    def task_loss(self, name: str, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """() float32 loss of task ``name`` on its raw head output (the task type's loss, with this model's
        classifier for a recognition task; a sharded classifier's CosFace loss over the global batch, the same on
        every process)."""
        if name in self.sharded_classifiers:
            return self.sharded_classifiers[name](raw.float(), target)
        state = {"classifier_weight": self.classifiers[name]} if name in self.classifiers else {}
        return task_loss(self.config.get_task(name), raw.float(), target, state)

    def _task_batches(self, inputs: dict[str, torch.Tensor | None], task_rows: dict[str, slice]) -> dict:
        """-> ``{model_input: (pixels, [(task name, start, stop), ...])}``, what ``forward_task_batches`` reads."""
        batches: dict[str, tuple[torch.Tensor, list]] = {}
        for name, rows in task_rows.items():
            task = self.config.get_task(name)
            pixels = inputs[task.model_input]
            if pixels is None:
                raise ValueError(f"task {name!r} reads {task.model_input}, which was not given")
            if not isinstance(rows, slice):
                raise TypeError(f"task_rows[{name!r}] must be a slice of rows, got {type(rows).__name__}")
            start, stop, step = rows.indices(pixels.shape[0])
            if step != 1 or start >= stop:
                raise ValueError(f"task_rows[{name!r}] = {rows} selects no contiguous rows of {task.model_input} "
                                 f"({pixels.shape[0]} rows)")
            batches.setdefault(task.model_input, (pixels, []))[1].append((name, start, stop))
        return batches


def _read_earlier_module_names(module, state_dict, prefix, *args):
    """Checkpoints written while the published model was the training module's ``model`` load as ``faceptor``."""
    earlier = prefix + _EARLIER_PREFIX
    for key in [key for key in state_dict if key.startswith(earlier)]:
        state_dict[prefix + _PUBLISHED_PREFIX + key[len(earlier):]] = state_dict.pop(key)


__all__ = ["FaceptorForMultiTaskTraining", "FaceptorMultiTaskTrainingOutput"]
