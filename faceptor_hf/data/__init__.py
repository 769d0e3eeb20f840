"""Datasets: the common schema, native-release converters (``load_native``) and writing prepared copies.

    from faceptor_hf.data import NATIVE_DATASETS, load_native
    dataset = load_native("300w", "/data/300W", split="test_common")

Package-only code: no file a saved model ships imports it.
"""

from . import converters  # noqa: E402,F401 - registers every native-release converter
from .errors import BadSampleReport, DatasetFormatError
from .registry import NATIVE_DATASETS, NativeDataset, get_native_dataset, load_native, register_native_dataset
from .schema import check_columns, task_features, verification_features
from .writing import save_prepared

__all__ = [
    "BadSampleReport",
    "DatasetFormatError",
    "NATIVE_DATASETS",
    "NativeDataset",
    "check_columns",
    "get_native_dataset",
    "load_native",
    "register_native_dataset",
    "save_prepared",
    "task_features",
    "verification_features",
]
