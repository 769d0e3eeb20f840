"""Annotation formats shared by the landmark converters (300W, WFLW): HRNet's protocol CSVs, iBUG ``.pts`` files,
and the square face boxes each implies.

Not a converter itself (the leading underscore keeps it out of the converter discovery).
Points are (N, 2) lists of x y; boxes are [x1, y1, x2, y2] in boundary coordinates (``face_box``,
``docs/datasets-and-evaluation.md`` §S.1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

from ..errors import DatasetFormatError

# HRNet's CSV convention: ``scale`` is the face size in units of 200 px (HRNet issue #3).
HRNET_SCALE_UNIT = 200.0


@dataclass(frozen=True)
class HRNetCsvRow:
    """One sample of an HRNet protocol CSV (``image_name, scale, center_w, center_h, x0, y0, ...``).

    Attributes:
        line: 1-based line number in the CSV (for error reports).
        image: the image path as written, relative to the image root.
        scale: face size / 200.
        center: (center_w, center_h) as stored.
        points: (N, 2) x y as stored.
    """

    line: int
    image: str
    scale: float
    center: tuple[float, float]
    points: list[list[float]]


def iter_hrnet_csv(path: str, num_points: int) -> Iterator[HRNetCsvRow | DatasetFormatError]:
    """Rows of an HRNet landmark CSV, streamed: the first line is a header; blank lines and lines starting with
    ``#`` are skipped (as the official loaders do). A line that does not parse becomes a ``DatasetFormatError``
    naming ``path:line``; a missing file raises one."""
    if not os.path.isfile(path):
        raise DatasetFormatError("annotation CSV not found", path)
    expected = 4 + 2 * num_points
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if number == 1 or not text or text.startswith("#"):
                continue
            fields = [field.strip() for field in text.split(",")]
            if len(fields) != expected:
                yield DatasetFormatError(f"expected {expected} comma-separated fields (image, scale, center_w, "
                                         f"center_h and {num_points} x y pairs), found {len(fields)}", path, number)
                continue
            try:
                values = [float(field) for field in fields[1:]]
            except ValueError as error:
                yield DatasetFormatError(f"a numeric field does not parse ({error})", path, number)
                continue
            if not all(math.isfinite(value) for value in values) or values[0] <= 0:
                yield DatasetFormatError("scale must be positive and every value finite", path, number)
                continue
            coordinates = values[3:]
            yield HRNetCsvRow(line=number, image=fields[0], scale=values[0], center=(values[1], values[2]),
                              points=[[coordinates[2 * k], coordinates[2 * k + 1]] for k in range(num_points)])


def read_pts(path: str, num_points: int) -> list[list[float]]:
    """(num_points, 2) x y of an iBUG ``.pts`` file, as stored (1-based for 300W)::

        version: 1
        n_points: 68
        {
        x y
        ...
        }

    Raises ``DatasetFormatError`` naming ``path:line`` for a malformed line, a header count other than
    ``num_points``, or a different number of point lines."""
    points: list[list[float]] = []
    inside = closed = False
    last_line = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            last_line = number
            text = line.strip()
            if not text:
                continue
            if closed:
                raise DatasetFormatError(f"unexpected text after the closing brace: {text[:40]!r}", path, number)
            if not inside:
                if text == "{":
                    inside = True
                elif text.lower().startswith("n_points"):
                    declared = text.split(":", 1)[-1].strip()
                    if declared != str(num_points):
                        raise DatasetFormatError(f"n_points is {declared!r}, expected {num_points}", path, number)
                elif not text.lower().startswith("version"):
                    raise DatasetFormatError(f"unexpected header line {text[:40]!r}", path, number)
                continue
            if text == "}":
                if len(points) != num_points:
                    raise DatasetFormatError(f"{len(points)} points, expected {num_points}", path, number)
                closed = True
                continue
            fields = text.split()
            try:
                if len(fields) != 2:
                    raise ValueError(f"{len(fields)} values")
                x, y = float(fields[0]), float(fields[1])
            except ValueError as error:
                raise DatasetFormatError(f"a point line must be two numbers 'x y' ({error})", path, number) from error
            points.append([x, y])
    if not closed:
        raise DatasetFormatError("no closing '}' (file truncated?)", path, last_line)
    return points


def hrnet_box(center: tuple[float, float], scale: float) -> list[float]:
    """The HRNet/FaRL crop box: a square of side 200 * scale centered on ``center``."""
    half = HRNET_SCALE_UNIT * scale / 2.0
    return [center[0] - half, center[1] - half, center[0] + half, center[1] + half]


def landmark_extent_box(points: list[list[float]]) -> list[float]:
    """A square box as HRNet derives its CSV boxes (its maintainers' description, issue #3): centered on the
    middle of the points' bounding box, side max(width, height) of that bounding box."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    center = ((min(xs) + max(xs)) / 2.0, (min(ys) + max(ys)) / 2.0)
    return hrnet_box(center, max(max(xs) - min(xs), max(ys) - min(ys)) / HRNET_SCALE_UNIT)


def first_existing_folder(data_dir: str, candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` (relative to ``data_dir``; "" = ``data_dir`` itself) that is a folder."""
    for candidate in candidates:
        folder = os.path.join(data_dir, candidate) if candidate else data_dir
        if os.path.isdir(folder):
            return folder
    return None


def shifted(points: list[list[float]], offset: float) -> list[list[float]]:
    """``points`` with ``offset`` subtracted from every coordinate."""
    return [[x - offset, y - offset] for x, y in points]
