"""Reporting evaluations: the paper's table rows beside ours, and the metrics / per-row prediction files."""

from __future__ import annotations

import json
import math
import os

from .evaluate import EvaluationResult

MISSING = "–"


def _number(value) -> str:
    if value is None:
        return MISSING
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"


def paper_rows(results: list[EvaluationResult]) -> list[list[str]]:
    """One row per reported figure: dataset, split, task, metric (the paper's name), ours (on the paper's scale),
    Faceptor-Base, Faceptor-Full. A split the paper does not report shows its first metric with no figures."""
    rows = []
    for result in results:
        figures = result.paper
        if not figures:
            first = next(iter(result), None)
            rows.append([result.dataset, result.split or MISSING, result.task, first or MISSING,
                         _number(result[first]) if first else MISSING, MISSING, MISSING])
            continue
        for figure in figures:
            ours = result.get(figure.metric)
            rows.append([result.dataset, result.split or MISSING, result.task, figure.label,
                         _number(None if ours is None else ours * figure.scale), _number(figure.base),
                         _number(figure.full)])
    return rows


def format_table(results: list[EvaluationResult]) -> str:
    """The paper's rows (``paper_rows``) as an aligned text table, then every metric of each split."""
    header = ["dataset", "split", "task", "metric", "ours", "Faceptor-Base", "Faceptor-Full"]
    rows = [header] + paper_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    for result in results:
        values = ", ".join(f"{key} {_number(value)}" for key, value in result.items())
        lines.append(f"{result.dataset} {result.split or ''} ({result.num_samples} samples): {values}")
        if result.untrained:
            lines.append("WARNING: the model's weights are random (untrained); these numbers are meaningless")
    return "\n".join(lines)


def _replace_atomically(path: str, write):
    partial = path + ".partial"
    write(partial)
    os.replace(partial, path)


def write_metrics(path: str, results: list[EvaluationResult], extra: dict | None = None) -> str:
    """``{**extra, "results": [result.to_dict(), ...]}`` as JSON (NaN written as null)."""

    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    document = clean({**(extra or {}), "results": [result.to_dict() for result in results]})

    def write(target):
        with open(target, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")

    _replace_atomically(path, write)
    return path


def write_predictions(path: str, result: EvaluationResult) -> str:
    """The per-row prediction records of ``result`` as one parquet file (``index`` = row number)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(result.predictions)
    _replace_atomically(path, lambda target: pq.write_table(table, target))
    return path


__all__ = ["format_table", "paper_rows", "write_metrics", "write_predictions"]
