"""The model options of ``analyze``, ``evaluate`` and ``export``, defined once, and loading the model they name.

``--model``, ``--revision``, ``--local-files-only``, ``--random-weights`` and ``--seed`` say which model
(``faceptor_hf.loading.ModelSource``); ``--device`` and ``--dtype`` where and in what precision it runs (not for
``export``, which traces on the CPU and sets its precision with ``--fp16`` / ``--int8``).
"""

from __future__ import annotations

import argparse

from ..loading import DTYPES, ModelSource
from .errors import CommandError

NO_MODEL = ("no model given: pass --model DIR_OR_HUB_ID (a folder written by `faceptor-hf convert` from the official "
            "checkpoints, see README) or --random-weights to exercise the pipeline without trained weights")


def add_model_arguments(parser: argparse.ArgumentParser, device_and_dtype: bool = True):
    """Add the ``model`` option group to ``parser`` and return it (a command may add its own options to it)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help="faceptor-hf folder or Hub id (see `faceptor-hf convert`)")
    group.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model")
    group.add_argument("--local-files-only", action="store_true", help="never contact the Hub; use the cache")
    group.add_argument("--random-weights", action="store_true",
                       help="untrained Faceptor-Base instead of --model, to exercise the code path (its config and "
                            "outputs record that it is untrained)")
    group.add_argument("--seed", type=int, default=0, help="random seed of the --random-weights initialization")
    if device_and_dtype:
        group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or N (a CUDA device index)")
        group.add_argument("--dtype", default="float32", choices=DTYPES, help="model weights and activations")
    return group


def model_source(args: argparse.Namespace) -> ModelSource:
    """The ``ModelSource`` the options name, its Hub revision pinned to a commit (``ModelSource.pinned``);
    neither ``--model`` nor ``--random-weights`` is a ``CommandError``."""
    if not args.model and not args.random_weights:
        raise CommandError(NO_MODEL)
    return ModelSource(model=None if args.random_weights else args.model, revision=args.revision,
                       local_files_only=args.local_files_only, random_weights=args.random_weights,
                       seed=args.seed).pinned()


def parse_device(text: str) -> str | int:
    """``--device`` -> a torch device name, or a CUDA index as int; CUDA asked for but absent is an error."""
    import torch

    if (text.isdigit() or text.split(":", 1)[0] == "cuda") and not torch.cuda.is_available():
        raise CommandError(f"`--device {text}` was requested but CUDA is not available on this machine; use "
                           "--device cpu")
    if text.isdigit():
        return int(text)
    try:
        torch.device(text)
    except RuntimeError as error:
        raise CommandError(f"--device {text}: {str(error).splitlines()[0]}") from error
    return text
