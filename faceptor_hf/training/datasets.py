"""Opening a task's dataset as a training config names it, with errors that quote the config."""

from __future__ import annotations

import glob
import os


class TaskDataError(ValueError):
    """A task's dataset cannot be used; the message names the task, the path as written and what is wrong."""


def open_dataset(task_name: str, location: str, split: str):
    """A ``datasets.Dataset`` for ``location``: parquet file(s) (a path or glob), a prepared folder (``save_to_disk``
    of a Dataset or a DatasetDict, parquet files, or split folders of either; ``split`` picks from a dictionary),
    any other local data folder ``datasets.load_dataset`` understands (e.g. ``data/train-*.parquet``), or a Hub
    id."""
    import datasets

    from ..data.reading import open_prepared

    where = f"task {task_name!r}: dataset {location!r}"
    loaded = open_prepared(location) if os.path.isdir(location) else None
    if loaded is None and location.endswith(".parquet"):
        if not glob.glob(location):
            raise TaskDataError(f"{where}: no such file")
        return datasets.load_dataset("parquet", data_files=location, split="train")
    if loaded is None:
        if os.path.sep in location and not os.path.exists(location) and location.count("/") != 1:
            raise TaskDataError(f"{where}: no such folder")
        try:
            return datasets.load_dataset(location, split=split)
        except FileNotFoundError as error:
            raise TaskDataError(f"{where}: not a local folder and not found on the Hub ({error})") from error
        except ValueError as error:
            raise TaskDataError(f"{where}: {error}") from error
    if isinstance(loaded, datasets.DatasetDict):
        if split in loaded:
            return loaded[split]
        try:  # sub-folders that are not splits, e.g. a Hub snapshot's data/train-*.parquet
            return datasets.load_dataset(location, split=split)
        except (FileNotFoundError, ValueError) as error:
            raise TaskDataError(f"{where} has no split {split!r}; splits: {', '.join(loaded)}") from error
    return loaded


__all__ = ["TaskDataError", "open_dataset"]
