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


def _local_stream(folder: str, split: str):
    """An ``IterableDataset`` over the shards of a local prepared folder (a ``save_to_disk`` folder of a Dataset or
    of a DatasetDict, parquet files, or split folders of either), or None when ``folder`` holds none of these."""
    import datasets

    from ..data.reading import is_saved_dataset

    def shards_of(path: str):
        if is_saved_dataset(path) and not os.path.isfile(os.path.join(path, "dataset_dict.json")):
            saved = datasets.load_from_disk(path)
            # one shard per arrow file, as save_to_disk(num_shards=...) wrote them
            return saved.to_iterable_dataset(num_shards=max(1, len(saved.cache_files)))
        files = sorted(glob.glob(os.path.join(path, "*.parquet")))
        if files:
            return datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
        return None

    found = shards_of(folder)
    if found is None and os.path.isdir(os.path.join(folder, split)):
        found = shards_of(os.path.join(folder, split))
    return found


def open_stream(task_name: str, location: str, split: str):
    """A ``datasets.IterableDataset`` of ``location`` read as training needs it (``streaming: true``): a prepared
    folder (parquet shards or a ``save_to_disk`` folder, or their ``split`` folder), parquet file(s) (a path or
    glob), or a Hub id (``load_dataset(..., streaming=True)``). Images are left encoded: the example builder decodes
    them in the DataLoader's workers."""
    import datasets

    where = f"task {task_name!r}: dataset {location!r}"
    stream = _local_stream(location, split) if os.path.isdir(location) else None
    try:
        if stream is None and location.endswith(".parquet"):
            if not glob.glob(location):
                raise TaskDataError(f"{where}: no such file")
            stream = datasets.load_dataset("parquet", data_files=location, split="train", streaming=True)
        elif stream is None:
            if os.path.sep in location and not os.path.exists(location) and location.count("/") != 1:
                raise TaskDataError(f"{where}: no such folder")
            stream = datasets.load_dataset(location, split=split, streaming=True)
    except FileNotFoundError as error:
        raise TaskDataError(f"{where}: not a local folder and not found on the Hub ({error})") from error
    except ValueError as error:
        if isinstance(error, TaskDataError):
            raise
        raise TaskDataError(f"{where}: {str(error).splitlines()[0]}") from error
    return stream.decode(False)


__all__ = ["TaskDataError", "open_dataset", "open_stream"]
