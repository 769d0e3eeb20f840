"""Helpers shared by the converter tests: writing native files and checking what load_native makes of them."""

import pytest

from faceptor_hf.configuration_faceptor import make_task
from faceptor_hf.data import BadSampleReport, DatasetFormatError, get_native_dataset, load_native, task_features


def write_lines(path, lines):
    """Text file of ``lines`` (each ended by a newline), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def assert_schema(dataset, name, task_name):
    """The common columns have exactly the common schema's types; the rest are the converter's declared extras."""
    common = task_features(make_task(task_name))
    assert {column: dataset.features[column] for column in common} == dict(common)
    assert dataset.features == get_native_dataset(name).features()


def expect_error(name, data_dir, split, *fragments, **options):
    """load_native stops with a DatasetFormatError whose message holds every fragment."""
    with pytest.raises(DatasetFormatError) as caught:
        load_native(name, str(data_dir), split, **options)
    for fragment in fragments:
        assert fragment in str(caught.value)


def expect_skipped(name, data_dir, split, rows, *fragments, **options):
    """With skip_bad, exactly one sample is skipped (its report holds every fragment) and ``rows`` remain."""
    report = BadSampleReport()
    dataset = load_native(name, str(data_dir), split, skip_bad=True, report=report, **options)
    assert len(dataset) == rows and len(report) == 1
    for fragment in fragments:
        assert fragment in report.problems[0]
    return dataset
