"""``faceptor-hf train CONFIG.yaml``: joint multi-task training (one process; for several GPUs run
``accelerate launch -m faceptor_hf.training.train CONFIG.yaml``, which takes the same options)."""

from __future__ import annotations

import argparse

from .errors import CommandError
from .formatting import HelpFormatter


def register(subparsers) -> None:
    """Add the ``train`` parser to ``subparsers``."""
    from ..training.train import add_arguments

    parser = subparsers.add_parser(
        "train", help="train Faceptor on several tasks at once from a YAML config",
        description="Joint multi-task training on Accelerate from a YAML config (model, tasks, run). Checkpoints "
                    "go to <output_dir>/checkpoint-<step>/, the trained model to <output_dir>. Recipes: "
                    "examples/training/.", formatter_class=HelpFormatter)
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train; configuration, data and checkpoint problems become one-line errors."""
    from ..training.config import TrainingConfigError
    from ..training.datasets import TaskDataError
    from ..training.train import run as train
    from ..training.trainer import TrainingError

    try:
        return train(args)
    except (TrainingConfigError, TaskDataError, TrainingError) as error:
        raise CommandError(str(error)) from error
