"""Errors and the bad-sample report of dataset conversion."""

from __future__ import annotations

from dataclasses import dataclass, field


class DatasetFormatError(ValueError):
    """A native release does not look as expected; the message names the file and the line or record."""

    def __init__(self, message: str, path: str | None = None, location: str | int | None = None):
        where = f"{path}" + (f":{location}" if location is not None else "") if path else ""
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.location = path, location


@dataclass
class BadSampleReport:
    """Samples a conversion skipped (``skip_bad=True``) or would have stopped at, with file and line/record."""

    problems: list[str] = field(default_factory=list)

    def add(self, error: Exception):
        self.problems.append(str(error))

    def __len__(self) -> int:
        return len(self.problems)

    def summary(self, limit: int = 10) -> str:
        shown = "\n  ".join(self.problems[:limit])
        more = f"\n  ... and {len(self.problems) - limit} more" if len(self.problems) > limit else ""
        return f"{len(self.problems)} bad sample(s) skipped:\n  {shown}{more}" if self.problems else "no bad samples"
