"""Errors of the ONNX export and the ONNX Runtime backend."""

from __future__ import annotations

import importlib

INSTALL_HINT = 'pip install "faceptor-hf[onnx]"'


class MissingOnnxDependency(ImportError):
    """A package of the ``onnx`` extra (onnx, onnxscript, onnxruntime) is not installed."""


class OnnxExportError(ValueError):
    """The export was asked for something it cannot do (unknown task or task type, unsupported opset, ...)."""


class OnnxFolderError(Exception):
    """An ONNX folder that cannot be used: a missing, corrupt or mismatched file; the message names the file.

    Deliberately not a ``ValueError``/``OSError``: transformers' ``pipeline()`` folds those into one long "could not
    load model with any of the following classes" error, whereas this one reaches the caller as it is."""


def require(*modules: str, purpose: str) -> None:
    """Import ``modules`` or raise ``MissingOnnxDependency`` naming the missing ones and the extra to install."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingOnnxDependency(f"{purpose} needs {', '.join(missing)}, which "
                                    f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}")


__all__ = ["INSTALL_HINT", "MissingOnnxDependency", "OnnxExportError", "OnnxFolderError", "require"]
