"""``faceptor-hf train CONFIG.yaml``: joint multi-task training (one process; for several GPUs run
``accelerate launch -m faceptor_hf.training.train CONFIG.yaml``, which is this command under another name)."""

from __future__ import annotations

import argparse
import json

from .formatting import HelpFormatter


def add_arguments(parser: argparse.ArgumentParser):
    """Options of a training run. The training stack and its optional dependencies are imported by ``run`` only,
    so building the CLI does not need them."""
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
    """Build the trainer from the YAML (every check of a real run happens here, on every process), then print the
    plan and stop (``--dry-run``) or train. Config, data and checkpoint problems raise the training errors that
    ``errors.USER_ERRORS`` turns into one line."""
    from ..training.config import load_config, with_run_overrides
    from ..training.trainer import FaceptorTrainer

    config = with_run_overrides(load_config(args.config), max_steps=args.max_steps, output_dir=args.output_dir)
    trainer = FaceptorTrainer(config)
    if args.dry_run:
        plan = trainer.plan()
        trainer.accelerator.wait_for_everyone()  # every process passed its checks
        if trainer.accelerator.is_main_process:
            print(json.dumps(plan, indent=1))
        trainer.close()
        return 0
    output = trainer.train(resume_from=args.resume_from_checkpoint)
    trainer.accelerator.print(f"trained model written to {output}")
    trainer.close()
    return 0
