"""``faceptor-hf train CONFIG.yaml``: joint multi-task training (one process; for several GPUs run
``accelerate launch -m faceptor_hf.training.train CONFIG.yaml``, which takes the same options)."""

from __future__ import annotations

import argparse

from .errors import CommandError
from .formatting import HelpFormatter


def add_arguments(parser: argparse.ArgumentParser):
    """Options of a training run (shared with ``python -m faceptor_hf.training.train``); defined here so that
    building the CLI does not import the training stack and its optional dependencies."""
    parser.add_argument("config", help="training config (YAML): model, tasks, run; see examples/training/")
    parser.add_argument("--resume-from-checkpoint", metavar="DIR|latest", default=None,
                        help="continue exactly from a checkpoint-<step> folder, or the latest complete one of "
                             "run.output_dir")
    parser.add_argument("--max-steps", type=int, default=None, help="override run.max_steps")
    parser.add_argument("--output-dir", default=None, help="override run.output_dir")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the model and check every training and evaluation dataset (on every process), "
                             "print the plan as JSON and exit")


def register(subparsers) -> None:
    """Add the ``train`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "train", help="train Faceptor on several tasks at once from a YAML config",
        description="Joint multi-task training on Accelerate from a YAML config (model, tasks, run). Checkpoints "
                    "go to <output_dir>/checkpoint-<step>/, the trained model to <output_dir>. Recipes: "
                    "examples/training/.", formatter_class=HelpFormatter)
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train (or ``--dry-run``); configuration, data and checkpoint problems become one-line errors."""
    from ..training.train import run as train
    from ..training.train import user_errors

    try:
        return train(args)
    except user_errors() as error:
        raise CommandError(str(error)) from error
