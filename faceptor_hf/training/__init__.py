"""Training: the model that returns its loss (``FaceptorForMultiTaskTraining``), the losses of every task type
(attached to the task-type registry on import), augmentations, the row -> example builder and the trainer.
Package-only code: no file a saved model ships imports it."""

from .augmentation import (
    ATTRIBUTE_AUGMENTATION,
    LANDMARK_AUGMENTATION,
    PARSING_AUGMENTATION,
    RECOGNITION_AUGMENTATION,
    Augmentation112,
    Augmentation512,
    default_augmentation,
)
from .errors import TrainingError
from .examples import TaskExampleBuilder, TrainingExampleError, collate_examples, register_target_column
from .losses import (
    OFFICIAL_LOSS_RECIPES,
    age_label_distribution,
    age_loss,
    attribute_loss,
    combine_task_losses,
    cosface_loss,
    expression_loss,
    landmark_heatmaps,
    landmark_loss,
    official_loss_weights,
    parsing_loss,
    task_loss,
    value_regression_loss,
)
from .modeling_training import FaceptorForMultiTaskTraining, FaceptorMultiTaskTrainingOutput
from .trainer import FaceptorTrainer

__all__ = [
    "ATTRIBUTE_AUGMENTATION",
    "Augmentation112",
    "Augmentation512",
    "FaceptorForMultiTaskTraining",
    "FaceptorMultiTaskTrainingOutput",
    "FaceptorTrainer",
    "LANDMARK_AUGMENTATION",
    "OFFICIAL_LOSS_RECIPES",
    "PARSING_AUGMENTATION",
    "RECOGNITION_AUGMENTATION",
    "TaskExampleBuilder",
    "TrainingError",
    "TrainingExampleError",
    "age_label_distribution",
    "age_loss",
    "attribute_loss",
    "collate_examples",
    "combine_task_losses",
    "cosface_loss",
    "default_augmentation",
    "expression_loss",
    "landmark_heatmaps",
    "landmark_loss",
    "official_loss_weights",
    "parsing_loss",
    "register_target_column",
    "task_loss",
    "value_regression_loss",
]
