"""Evaluation split over two CPU processes (``accelerate launch``) gives exactly the one-process results: the same
metrics on every process, the same prediction records in the same row order, with row counts that leave the last
batch and the last process short; a bad row on one process stops both with its message. In one process: the
batch shard and the accumulators' merge."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from faceptor_hf.configuration_faceptor import make_task
from faceptor_hf.data import task_features, verification_features
from faceptor_hf.evaluation.distributed import batch_shard
from faceptor_hf.evaluation.task_metrics import ClassificationMetric, ParsingMetric

from conftest import accelerate_launch


def test_each_process_takes_whole_batches_of_the_one_process_run():
    one = batch_shard(11, 3, 0, 1)[1]
    assert one == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    shards = [batch_shard(11, 3, rank, 3) for rank in range(3)]
    assert [numbers for numbers, _ in shards] == [[0, 3], [1], [2]]
    assert sorted(batch for _, batches in shards for batch in batches) == one
    assert batch_shard(2, 4, 1, 2) == ([], [])  # more processes than batches: nothing to score, nothing padded


def test_merged_accumulators_see_the_rows_of_one_process_in_order():
    task = make_task("affect_rafdb")
    whole, first, second = (ClassificationMetric(task) for _ in range(3))
    batches = [(np.array([0, 1]), np.array([0, 2])), (np.array([3, 3]), np.array([3, 4])), (np.array([5]), [5])]
    whole.predicted, whole.labels = [p for p, _ in batches], [t for _, t in batches]
    first.predicted, first.labels = [batches[0][0], batches[2][0]], [batches[0][1], batches[2][1]]
    second.predicted, second.labels = [batches[1][0]], [batches[1][1]]
    first.merge([([0, 2], first.state()), ([1], second.state())])
    assert [p.tolist() for p in first.predicted] == [p.tolist() for p in whole.predicted]
    assert first.compute() == whole.compute()

    parsing = make_task("parsing_x", type="parsing", num_queries=3)
    parts = [ParsingMetric(parsing) for _ in range(2)]
    parts[0].confusion += np.arange(9).reshape(3, 3)
    parts[1].confusion += 1
    parts[0].merge([([0], parts[0].state()), ([1], parts[1].state())])
    assert parts[0].confusion.tolist() == (np.arange(9).reshape(3, 3) + 1).tolist()


def _image(rng, height, width):
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_splits(root):
    """Small test splits of uneven length in the common schema: landmarks (5 rows, and a copy whose row 3 has no
    usable crop), verification pairs (10, one per fold), ages (5), parsing masks (3)."""
    rng = np.random.default_rng(0)
    align = make_task("align_300w")
    rows = {"image": [_image(rng, 150, 140) for _ in range(5)], "face_box": [[20.0, 25.0, 120.0, 140.0]] * 5,
            "face_keypoints": [None] * 5,
            "landmarks": [rng.uniform(30, 120, (68, 2)).astype("float32") for _ in range(5)]}
    Dataset.from_dict(rows, features=task_features(align)).save_to_disk(root / "300w")
    rows["face_box"] = [[20.0, 25.0, 120.0, 140.0]] * 3 + [[float("nan")] * 4] + [[20.0, 25.0, 120.0, 140.0]]
    Dataset.from_dict(rows, features=task_features(align)).save_to_disk(root / "300w_bad")
    Dataset.from_dict({"image_a": [_image(rng, 112, 112) for _ in range(10)],
                       "image_b": [_image(rng, 112, 112) for _ in range(10)],
                       "is_same": [bool(i % 2) for i in range(10)], "fold": list(range(10))},
                      features=verification_features()).save_to_disk(root / "lfw")
    Dataset.from_dict({"image": [_image(rng, 120, 110) for _ in range(5)], "face_box": [None] * 5,
                       "face_keypoints": [None] * 5, "age": [float(age) for age in rng.integers(16, 70, 5)]},
                      features=task_features(make_task("age_morph2"))).save_to_disk(root / "morph2")
    parsing = make_task("parsing_celebam")
    Dataset.from_dict({"image": [_image(rng, 96, 96) for _ in range(3)], "face_box": [None] * 3,
                       "face_keypoints": [None] * 3,
                       "mask": [PIL.Image.fromarray(rng.integers(0, 19, (96, 96), dtype=np.uint8)) for _ in range(3)]},
                      features=task_features(parsing)).save_to_disk(root / "celebamask-hq")


# Run by `accelerate launch` (two processes): every case evaluated split over the processes, and on rank 0 also in
# that process alone; then the bad split; then `faceptor-hf evaluate` itself.
SCRIPT = r"""
import json, sys
from datasets import load_from_disk
from faceptor_hf.commands import main
from faceptor_hf.evaluation import evaluate
from faceptor_hf.evaluation.distributed import process_group
from faceptor_hf.evaluation.task_metrics import AgeMetric
from faceptor_hf.loading import ModelSource, load_model
from faceptor_hf.task_types import attach_task_part

model_dir, data, output = sys.argv[1:4]
model, processor = load_model(ModelSource(model=model_dir))
rank, world = process_group(None)
cases = [("300w", "test_common", 2), ("lfw", "test", 4), ("morph2", "test", 2), ("celebamask-hq", "test", 2)]


class AgeWithoutMergeState(AgeMetric):  # a user's accumulator that declares no state: fed on the main process
    batch_state = ()


report = {"world": world, "rank": rank, "cases": {}}
for name, split, batch_size in cases + [("morph2-fed", "test", 2)]:
    if name == "morph2-fed":
        attach_task_part("age", "metric", AgeWithoutMergeState)
    protocol = name.split("-fed")[0]
    rows = load_from_disk(f"{data}/{protocol}")
    case = {}
    for mode, distributed in (("split", None), ("alone", False)):
        if mode == "alone" and rank != 0:
            continue
        result = evaluate(model, rows, protocol, split=split, processor=processor, batch_size=batch_size,
                          distributed=distributed)
        case[mode] = {"metrics": dict(result), "predictions": [{k: (v.hex() if isinstance(v, bytes) else v)
                      for k, v in record.items()} for record in result.predictions]}
    report["cases"][name] = case
attach_task_part("age", "metric", AgeMetric)
try:
    evaluate(model, load_from_disk(f"{data}/300w_bad"), "300w", split="test_common", batch_size=2)
except ValueError as error:
    report["bad"] = str(error)
with open(f"{output}/report-{rank}.json", "w") as handle:
    json.dump(report, handle)
sys.exit(main(["evaluate", "--model", model_dir, "--dataset", "300w", "--prepared", f"{data}/300w",
               "--split", "test_common", "--batch-size", "2", "--output-dir", f"{output}/cli"]))
"""


@pytest.mark.slow
def test_two_processes_give_the_one_process_metrics_and_predictions(checkpoint, tmp_path):
    write_splits(tmp_path)
    script = tmp_path / "evaluate_split.py"
    script.write_text(SCRIPT)
    command, env = accelerate_launch(str(script), str(checkpoint), str(tmp_path), str(tmp_path))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"report-{rank}.json").read_text()) for rank in range(2)]
    assert [report["world"] for report in reports] == [2, 2]
    for name, case in reports[0]["cases"].items():
        split, alone = case["split"], case["alone"]
        assert split["metrics"] == alone["metrics"], name  # exactly, not approximately
        assert reports[1]["cases"][name]["split"]["metrics"] == alone["metrics"], name
        assert split["predictions"] == alone["predictions"], name
        assert [record["index"] for record in split["predictions"]] == list(range(len(alone["predictions"])))
    own = reports[1]["cases"]["300w"]["split"]["predictions"]
    assert [record["index"] for record in own] == [2, 3]  # process 1 scored batch 1 of 3 and kept its own rows
    assert reports[1]["cases"]["morph2-fed"]["split"]["predictions"] == []
    # row 3 is in process 1's batch: both processes stop with its message instead of waiting for each other
    assert [report.get("bad") for report in reports] == [reports[1]["bad"]] * 2
    assert "300w test_common, row 3" in reports[0]["bad"]

    # `faceptor-hf evaluate` in one process writes the same files
    alone = tmp_path / "alone"
    one = subprocess.run([sys.executable, "-m", "faceptor_hf", "evaluate", "--model", str(checkpoint), "--dataset",
                          "300w", "--prepared", str(tmp_path / "300w"), "--split", "test_common", "--batch-size", "2",
                          "--output-dir", str(alone)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert one.returncode == 0, one.stderr[-3000:]
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text()) == json.loads(
        (alone / "metrics.json").read_text())
    split_table = pq.read_table(tmp_path / "cli" / "predictions-test_common.parquet")
    assert split_table.equals(pq.read_table(alone / "predictions-test_common.parquet"))
    assert split_table.column("index").to_pylist() == [0, 1, 2, 3, 4]
    assert result.stdout.count("metrics and per-sample predictions in") == 1  # printed by the main process only
