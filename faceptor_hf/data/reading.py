"""Opening a prepared dataset folder, whichever way it was written: one reader for training, evaluation and the
command line.

``prepare-data`` writes a ``save_to_disk`` folder (of a Dataset, or of a DatasetDict with one folder per split),
or ``--format parquet`` shards directly in the folder or in one folder per split; users bring the same.
"""

from __future__ import annotations

import glob
import os


def is_saved_dataset(path: str) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    if not os.path.isdir(path):
        return False
    single = all(os.path.isfile(os.path.join(path, name)) for name in ("dataset_info.json", "state.json"))
    return single or os.path.isfile(os.path.join(path, "dataset_dict.json"))


def _parquet_files(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "*.parquet")))


def open_prepared(path: str):
    """A ``Dataset`` or ``DatasetDict`` from a save_to_disk folder, parquet files in ``path``, or split folders of
    either; None when ``path`` holds none of these (the caller says what it expected)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    if is_saved_dataset(path):
        return load_from_disk(path)
    files = _parquet_files(path)
    if files:
        return Dataset.from_parquet(files)
    splits = {}
    for folder in sorted(os.listdir(path)) if os.path.isdir(path) else []:
        inner = os.path.join(path, folder)
        if is_saved_dataset(inner):
            splits[folder] = load_from_disk(inner)
        elif _parquet_files(inner):
            splits[folder] = Dataset.from_parquet(_parquet_files(inner))
    return DatasetDict(splits) if splits else None


__all__ = ["is_saved_dataset", "open_prepared"]
