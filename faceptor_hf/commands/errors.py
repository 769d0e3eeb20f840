"""User mistakes on the command line: which exceptions ``faceptor-hf`` reports as one ``error:`` line.

``CommandError`` is raised by the commands themselves. The package's libraries raise their own types for a
user's mistake (a wrong config, dataset, checkpoint, model or export option); ``USER_ERRORS`` lists them, the one
place that decides what becomes an ``error:`` line instead of a traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import os
import sys


class CommandError(Exception):
    """A problem the user can fix (a wrong option, a missing model or path); ``main`` prints ``error: <message>``
    without a traceback and exits with status 2."""


#: Names of the package's exception classes that mean "the user's input is wrong", where they are raised: model
#: loading (loading), analysis inputs (analysis), conversion (convert_*), ONNX export (onnx), training config, data,
#: examples and run (training). Matched by name on the exception's classes within faceptor_hf, so nothing has to be
#: imported to build the parser and a class keeps its meaning when it moves between modules.
USER_ERRORS = frozenset({
    "CommandError", "ModelLoadError", "AnalysisInputError", "ConversionError", "EncoderCheckpointError",
    "OnnxExportError", "MissingOnnxDependency", "TrainingConfigError", "TaskDataError", "TrainingExampleError",
    "TrainingError", "FaceIndexError",
})
EXIT_USER_ERROR = 2


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is (a subclass of) one of the ``USER_ERRORS`` classes of this package."""
    return any(cls.__name__ in USER_ERRORS and cls.__module__.split(".")[0] == "faceptor_hf"
               for cls in type(error).__mro__)


def report_user_error(error: BaseException) -> int:
    """Print ``error: <message>`` on stderr and return the exit status 2. Under a multi-process launch
    (``accelerate launch``, ``torchrun``) every process meets the same mistake in its own checks, so only rank 0
    prints it."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {error}", file=sys.stderr)
    return EXIT_USER_ERROR
