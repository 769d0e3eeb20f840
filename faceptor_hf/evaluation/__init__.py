"""Evaluation: the official metrics, each dataset's test-time protocol, and ``evaluate`` (model x dataset -> scores).

    from faceptor_hf.evaluation import evaluate, metrics
    result = evaluate(model, dataset, "300w", split="test_common")   # {"nme_inter_ocular": ..., ...}

Importing this package attaches a ``metric`` to every registered task type (``task_metrics``). Package-only code:
no file a saved model ships imports it.
"""

from . import metrics
from .batch import EvaluationBatch
from .evaluate import EvaluationResult, evaluate
from .protocols import (
                        PROTOCOLS,
                        PaperFigure,
                        Protocol,
                        default_protocol,
                        find_protocol,
                        get_protocol,
                        register_protocol,
)
from .task_metrics import METRIC_OF_TYPE, TaskMetric

__all__ = [
    "EvaluationBatch",
    "EvaluationResult",
    "METRIC_OF_TYPE",
    "PROTOCOLS",
    "PaperFigure",
    "Protocol",
    "TaskMetric",
    "default_protocol",
    "evaluate",
    "find_protocol",
    "get_protocol",
    "metrics",
    "register_protocol",
]
