"""Opening a task's dataset as a training config names it, with errors that quote the config."""

from __future__ import annotations

import glob
import os


class TaskDataError(ValueError):
    """A task's dataset cannot be used; the message names the task, the path as written and what is wrong."""


def _is_saved_dataset(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_info.json")) and os.path.isfile(os.path.join(path, "state.json"))


def open_dataset(task_name: str, location: str, split: str):
    """A ``datasets.Dataset`` for ``location``: a ``save_to_disk`` folder of a Dataset or a DatasetDict
    (``split`` picks), parquet file(s) or a folder of them, or a Hub id."""
    import datasets

    where = f"task {task_name!r}: dataset {location!r}"
    if os.path.isdir(location):
        if _is_saved_dataset(location):
            dataset = datasets.load_from_disk(location)
            return dataset
        if os.path.isfile(os.path.join(location, "dataset_dict.json")):
            saved = datasets.load_from_disk(location)
            if split not in saved:
                raise TaskDataError(f"{where} has no split {split!r}; splits: {', '.join(saved)}")
            return saved[split]
        files = sorted(glob.glob(os.path.join(location, "**", "*.parquet"), recursive=True))
        if not files:
            raise TaskDataError(f"{where} is a folder without a saved dataset (dataset_info.json / "
                                "dataset_dict.json) or parquet files")
        by_split = [f for f in files if os.path.basename(f).startswith(split) or f"/{split}/" in f]
        return datasets.load_dataset("parquet", data_files=by_split or files, split="train")
    if location.endswith(".parquet"):
        if not glob.glob(location):
            raise TaskDataError(f"{where}: no such file")
        return datasets.load_dataset("parquet", data_files=location, split="train")
    if os.path.sep in location and not os.path.exists(location) and location.count("/") != 1:
        raise TaskDataError(f"{where}: no such folder")
    try:
        return datasets.load_dataset(location, split=split)
    except FileNotFoundError as error:
        raise TaskDataError(f"{where}: not a local folder and not found on the Hub ({error})") from error
    except ValueError as error:
        raise TaskDataError(f"{where}: {error}") from error


__all__ = ["TaskDataError", "open_dataset"]
