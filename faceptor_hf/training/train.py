"""Entry point of a training run, for one process or many:

    faceptor-hf train CONFIG.yaml [--resume-from-checkpoint DIR|latest] [--dry-run]
    accelerate launch -m faceptor_hf.training.train CONFIG.yaml [--resume-from-checkpoint DIR|latest] [--dry-run]

Both report a user's mistake (config, data, encoder checkpoint, checkpoint to resume) as one ``error:`` line naming
the file, task, key or row, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..commands.train import add_arguments


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the user's config, data or checkpoint is wrong" (one line, no traceback)."""
    from ..convert_farl_encoder_to_hf import EncoderCheckpointError
    from .config import TrainingConfigError
    from .datasets import TaskDataError
    from .examples import TrainingExampleError
    from .trainer import TrainingError

    return TrainingConfigError, TaskDataError, TrainingExampleError, TrainingError, EncoderCheckpointError


def run(args) -> int:
    """Build the trainer from the YAML (every check of a real run happens here, on every process), then print the
    plan and stop (``--dry-run``) or train."""
    from .config import load_config, with_run_overrides
    from .trainer import FaceptorTrainer

    config = with_run_overrides(load_config(args.config), max_steps=args.max_steps, output_dir=args.output_dir)
    trainer = FaceptorTrainer(config)
    if args.dry_run:
        plan = trainer.plan()
        trainer.accelerator.wait_for_everyone()  # every process passed its checks
        if trainer.accelerator.is_main_process:
            print(json.dumps(plan, indent=1))
        trainer.accelerator.state.destroy_process_group()
        return 0
    output = trainer.train(resume_from=args.resume_from_checkpoint)
    trainer.accelerator.print(f"trained model written to {output}")
    trainer.accelerator.state.destroy_process_group()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceptor_hf.training.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except user_errors() as error:
        # Every process meets the same mistake in its own checks; one line is enough.
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
