"""Entry point of a training run on several processes:

    accelerate launch -m faceptor_hf.training.train CONFIG.yaml [--resume-from-checkpoint DIR|latest] [--dry-run]

is ``faceptor-hf train CONFIG.yaml ...`` (``faceptor_hf.commands.train``) started by ``accelerate launch``: the same
options, and a user's mistake (config, data, encoder checkpoint, checkpoint to resume) is one ``error:`` line,
printed by rank 0, naming the file, task, key or row, with exit status 2.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    """``python -m faceptor_hf.training.train ARGS`` is ``faceptor-hf train ARGS``."""
    from ..commands import main as command_line

    return command_line(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
