"""The error that stops a training run already under way."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, broken checkpoint); the message names step, task or file."""


__all__ = ["TrainingError"]
