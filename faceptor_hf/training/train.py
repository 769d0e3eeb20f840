"""Entry point of a training run, for one process or many:

    faceptor-hf train CONFIG.yaml [--resume-from-checkpoint DIR|latest]
    accelerate launch -m faceptor_hf.training.train CONFIG.yaml [--resume-from-checkpoint DIR|latest]
"""

from __future__ import annotations

import argparse
import sys

from ..commands.train import add_arguments


def run(args) -> int:
    from .config import load_config
    from .trainer import FaceptorTrainer

    config = load_config(args.config)
    if args.max_steps is not None:
        config.run.max_steps = args.max_steps
    if args.output_dir is not None:
        config.run.output_dir = args.output_dir
    trainer = FaceptorTrainer(config)
    output = trainer.train(resume_from=args.resume_from_checkpoint)
    trainer.accelerator.print(f"trained model written to {output}")
    return 0


def main(argv=None) -> int:
    from .config import TrainingConfigError
    from .datasets import TaskDataError
    from .trainer import TrainingError

    parser = argparse.ArgumentParser(prog="python -m faceptor_hf.training.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (TrainingConfigError, TaskDataError, TrainingError, KeyError) as error:
        print(f"error: {str(error).strip(chr(34)).strip(chr(39))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
