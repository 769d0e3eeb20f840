"""Streaming task datasets: streamed rows make the same examples as dataset rows, processes split the stream and
resume it exactly from any state, a streamed run killed after a checkpoint ends bit-identical to an uninterrupted
one (one process, and two under ``accelerate launch``), ``prepare-data --shard-size`` writes shards that stream,
and streaming mistakes are one error line naming the task and key."""

import json
import shutil
import subprocess
from itertools import islice

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from datasets import Dataset, load_from_disk
from transformers import AutoModel

from faceptor_hf.training.config import TrainingConfigError, parse_config
from faceptor_hf.training.datasets import TaskDataError, open_stream
from faceptor_hf.training.streaming import ShuffledStream, describe_split, split_strategy
from faceptor_hf.training.trainer import FaceptorTrainer, TrainingError

from conftest import accelerate_launch
from test_training import _error_lines, run_config, write_datasets


def write_shards(dataset, folder, rows_per_shard):
    folder.mkdir(parents=True)
    for index, start in enumerate(range(0, len(dataset), rows_per_shard)):
        part = dataset.select(range(start, min(len(dataset), start + rows_per_shard)))
        part.to_parquet(str(folder / f"data-{index:05d}.parquet"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The training tests' datasets, and the same rows as parquet shards: identities in 4 shards (split by shard
    over 2 processes), expressions in 3 (by example); landmarks stay a save_to_disk folder (1 arrow shard)."""
    root = tmp_path_factory.mktemp("streaming_data")
    write_datasets(root)
    write_shards(load_from_disk(str(root / "ids")), root / "ids_shards", 3)
    write_shards(load_from_disk(str(root / "faces")), root / "faces_shards", 4)
    write_shards(Dataset.from_dict({"number": list(range(12))}), root / "numbers", 3)
    return root


def streaming_config(root, output, max_steps=6, **run):
    config = run_config(root, output, max_steps=max_steps, **run)
    tasks = config["tasks"]
    tasks["recog_ms1mv3"].update(dataset=str(root / "ids_shards"), streaming=True, num_identities=3,
                                 shuffle_buffer_size=5)
    tasks["affect_rafdb"].update(dataset=str(root / "faces_shards"), streaming=True, shuffle_buffer_size=8)
    tasks["align_tiny"].update(streaming=True)
    return config


def assert_same_weights(folder_a, folder_b):
    a, b = AutoModel.from_pretrained(folder_a).state_dict(), AutoModel.from_pretrained(folder_b).state_dict()
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0, msg=name)


def numbers(stream, count):
    return [row["number"] for row, _ in islice(stream, count)]


def test_streamed_rows_make_the_same_examples_as_dataset_rows(data):
    from faceptor_hf.training.examples import TaskExampleBuilder

    trainer = FaceptorTrainer(parse_config(run_config(data, data / "unused", max_steps=2)))
    builder = trainer.builders["affect_rafdb"]
    assert isinstance(builder, TaskExampleBuilder)
    stream = open_stream("affect_rafdb", str(data / "faces_shards"), "train")
    streamed = list(stream.take(5))
    assert isinstance(streamed[0]["image"], dict)  # left encoded: decoded by the builder in the workers
    for index, row in enumerate(streamed):
        a = builder(trainer.rows["affect_rafdb"][index], np.random.default_rng(index))
        b = builder(row, np.random.default_rng(index))
        torch.testing.assert_close(b["pixel_values"], a["pixel_values"], atol=0, rtol=0)
        assert torch.equal(b["target"], a["target"])


@pytest.mark.parametrize("world_size, requested", [(1, "auto"), (2, "auto"), (2, "examples"), (4, "shards")])
def test_processes_share_each_epoch_and_resume_from_any_state(data, world_size, requested):
    stream = open_stream("recog_ms1mv3", str(data / "numbers"), "train")  # 4 shards of 3 rows: 0, 1, 2...
    strategy = split_strategy("recog_ms1mv3", stream.num_shards, world_size, requested)
    assert strategy == ("examples" if requested == "examples" else "shards")
    epoch = 12 // world_size
    parts = [numbers(ShuffledStream(stream, "recog_ms1mv3", 7, 5, rank, world_size, strategy), 3 * epoch)
             for rank in range(world_size)]
    for index in range(3):  # each epoch: the processes' rows are disjoint and cover the dataset
        rows = [row for part in parts for row in part[index * epoch:(index + 1) * epoch]]
        assert sorted(rows) == list(range(12)), (index, parts)
    if world_size == 1:
        assert parts[0][:12] != parts[0][12:24]  # reshuffled per epoch
        assert parts[0][:12] != list(range(12))
    for rank in range(world_size):
        items = list(islice(ShuffledStream(stream, "recog_ms1mv3", 7, 5, rank, world_size, strategy), 3 * epoch))
        for cut in range(len(items) - 1):
            resumed = ShuffledStream(stream, "recog_ms1mv3", 7, 5, rank, world_size, strategy,
                                     state=json.loads(json.dumps(items[cut][1])))  # as the checkpoint keeps it
            assert numbers(resumed, len(items) - cut - 1) == parts[rank][cut + 1:], (rank, cut)


def test_shard_splitting_needs_a_shard_per_process():
    assert split_strategy("t", 8, 4) == "shards" and split_strategy("t", 6, 4) == "examples"
    assert split_strategy("t", 6, 4, "shards") == "shards"
    assert "uneven" in describe_split("shards", 6, 4) and "by example" in describe_split("examples", 3, 2)
    with pytest.raises(TaskDataError, match=r"^tasks\.t\.stream_split: shards needs at least one shard per process; "
                                            r"the dataset has 3 shard\(s\) for 4 processes"):
        split_strategy("t", 3, 4, "shards")


def test_a_streamed_run_killed_after_a_checkpoint_resumes_bit_identically(data, tmp_path, monkeypatch):
    def config(output):
        settings = streaming_config(data, output, max_steps=4, save_steps=2)
        settings["tasks"]["recog_ms1mv3"]["batch_size"] = 2  # 4 samples at the kill: inside the first window of 5
        settings["tasks"]["affect_rafdb"]["batch_size"] = 6  # 12: the end of the first epoch of 12 rows
        return settings

    FaceptorTrainer(parse_config(config(tmp_path / "a"))).train()
    original = FaceptorTrainer.save_checkpoint

    def save_then_die(self):
        original(self)
        if self.step == 2:
            raise KeyboardInterrupt("killed after the step-2 checkpoint")

    monkeypatch.setattr(FaceptorTrainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        FaceptorTrainer(parse_config(config(tmp_path / "b"))).train()
    monkeypatch.undo()
    saved = json.loads((tmp_path / "b" / "checkpoint-2" / "trainer_state.json").read_text())["streams"]
    assert {key: saved["recog_ms1mv3"][0][key] for key in ("epoch", "window", "offset")} == {
        "epoch": 0, "window": 0, "offset": 4}
    assert {key: saved["affect_rafdb"][0][key] for key in ("epoch", "window", "offset")} == {
        "epoch": 0, "window": 2, "offset": 0}
    FaceptorTrainer(parse_config(config(tmp_path / "b"))).train(resume_from="latest")
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    end_a = json.loads((tmp_path / "a" / "checkpoint-4" / "trainer_state.json").read_text())
    end_b = json.loads((tmp_path / "b" / "checkpoint-4" / "trainer_state.json").read_text())
    assert end_a["streams"] == end_b["streams"] and end_a["consumed"] == end_b["consumed"]
    assert end_a["streams"]["affect_rafdb"][0]["epoch"] == 1
    changed = config(tmp_path / "b")
    changed["tasks"]["recog_ms1mv3"]["shuffle_buffer_size"] = 6
    with pytest.raises(TaskDataError, match=r"^tasks\.recog_ms1mv3\.shuffle_buffer_size is 6, the checkpoint's "
                                            r"stream was read in windows of 5 rows"):
        FaceptorTrainer(parse_config(changed)).train(resume_from=str(tmp_path / "b" / "checkpoint-2"))


def test_a_checkpoint_without_stream_state_is_refused(data, tmp_path):
    config = run_config(data, tmp_path / "map", max_steps=1, save_steps=1, warmup_steps=0)
    streamed = streaming_config(data, tmp_path / "map", max_steps=4)
    for settings in (config, streamed):
        settings["tasks"] = {"recog_ms1mv3": settings["tasks"]["recog_ms1mv3"]}
    FaceptorTrainer(parse_config(config)).train()
    with pytest.raises(TrainingError, match=r"no stream state for streamed task\(s\) \['recog_ms1mv3'\]"):
        FaceptorTrainer(parse_config(streamed)).resume("latest")


def test_the_plan_says_how_each_stream_is_split(data, tmp_path, capsys):
    from faceptor_hf.commands import main as cli

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(streaming_config(data, tmp_path / "out"), sort_keys=False))
    assert cli(["train", str(path), "--dry-run"]) == 0
    tasks = {task["name"]: task for task in json.loads(capsys.readouterr().out)["tasks"]}
    assert tasks["recog_ms1mv3"]["rows"] is None and tasks["recog_ms1mv3"]["identities"] == 3
    assert tasks["recog_ms1mv3"]["streaming"] == {"shards": 4, "split": "one process reads all 4 shard(s)",
                                                  "shuffle_buffer_size": 5}
    assert tasks["align_tiny"]["streaming"]["shards"] == 1  # a save_to_disk folder streams its arrow files


@pytest.mark.parametrize("change, fragments", [
    (lambda c: c["tasks"]["recog_ms1mv3"].pop("num_identities"),
     ["tasks.recog_ms1mv3.num_identities must be given with streaming: true"]),
    (lambda c: c["tasks"]["recog_ms1mv3"].update(shuffle_buffer_size=0),
     ["tasks.recog_ms1mv3: shuffle_buffer_size must be at least 1"]),
    (lambda c: c["tasks"]["affect_rafdb"].update(stream_split="rows"),
     ["tasks.affect_rafdb: stream_split must be one of auto, shards, examples"]),
    (lambda c: c["tasks"]["affect_rafdb"].update(streaming=False),
     ["tasks.affect_rafdb: shuffle_buffer_size and stream_split apply only with streaming: true"]),
    (lambda c: c["tasks"]["affect_rafdb"].update(dataset="/nonexistent/shards"),
     ["task 'affect_rafdb': dataset '/nonexistent/shards': no such folder"]),
])
def test_streaming_mistakes_are_one_error_line(data, tmp_path, capsys, change, fragments):
    from faceptor_hf.commands import main as cli

    config = streaming_config(data, tmp_path / "out")
    change(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code = cli(["train", str(path)])
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err[-2000:]
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert not (tmp_path / "out").exists()


def test_too_few_shards_for_shard_splitting_stop_every_process_before_step_one(data, tmp_path, capsys, monkeypatch):
    """What each of 4 processes meets with 3 expression shards and ``stream_split: shards`` (the process count is
    what Accelerate reports; the check runs while the datasets open, before the model is prepared)."""
    from accelerate import Accelerator

    from faceptor_hf.commands import main as cli

    config = streaming_config(data, tmp_path / "out")
    config["tasks"]["affect_rafdb"]["stream_split"] = "shards"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 4))
    assert cli(["train", str(path)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert lines == ["error: tasks.affect_rafdb.stream_split: shards needs at least one shard per process; the "
                     "dataset has 3 shard(s) for 4 processes (write more shards, e.g. prepare-data --shard-size, "
                     "or use stream_split: examples)"], lines
    assert not (tmp_path / "out").exists()


def test_config_keys_of_streaming_are_checked(data, tmp_path):
    config = streaming_config(data, tmp_path / "out")
    assert parse_config(config).tasks[0].streaming
    config["tasks"]["recog_ms1mv3"]["shuffle_buffer"] = 10
    with pytest.raises(TrainingConfigError, match=r"unknown key 'shuffle_buffer' \(did you mean "
                                                  r"'shuffle_buffer_size'\?\)"):
        parse_config(config)


@pytest.mark.parametrize("file_format", ["parquet", "arrow"])
def test_prepare_data_writes_shards_of_the_given_size_that_stream(tmp_path, monkeypatch, file_format):
    from faceptor_hf.commands import main as cli
    from faceptor_hf.configuration_faceptor import make_task
    from faceptor_hf.data import NATIVE_DATASETS, NativeDataset, task_features

    def rows(data_dir, split):
        for index in range(10):
            yield {"image": str(tmp_path / f"{index}.png"), "face_box": None, "face_keypoints": None,
                   "identity": index}

    for index in range(10):
        PIL.Image.fromarray(np.full((8, 8, 3), index, dtype=np.uint8)).save(tmp_path / f"{index}.png")
    monkeypatch.setitem(NATIVE_DATASETS, "toy-ids", NativeDataset(
        name="toy-ids", task="recog_ms1mv3", splits=("train",), rows=rows,
        features=lambda: task_features(make_task("recog_ms1mv3")), layout="PNG files"))
    output = tmp_path / "prepared"
    assert cli(["prepare-data", "toy-ids", "--data-dir", str(tmp_path), "--output", str(output), "--split", "train",
                "--format", file_format, "--shard-size", "4", "--no-verify-images"]) == 0
    stream = open_stream("recog_ms1mv3", str(output), "train")
    assert stream.num_shards == 3
    if file_format == "parquet":
        sizes = [len(Dataset.from_parquet(str(path))) for path in sorted(output.glob("*.parquet"))]
        assert sizes == [4, 4, 2]
    assert sorted(row["identity"] for row in stream) == list(range(10))
    assert cli(["prepare-data", "toy-ids", "--data-dir", str(tmp_path), "--output", str(tmp_path / "x"),
                "--shard-size", "0"]) == 2


@pytest.mark.slow
def test_two_processes_resume_a_streamed_run_bit_identically(data, tmp_path):
    """Uninterrupted: 4 steps, checkpoints at 2 and 4. Resumed: a fresh launch from a copy of checkpoint-2. Both
    with the default DataLoader workers; identities split by shard (4 shards), expressions by example (3)."""
    config = streaming_config(data, tmp_path / "a", max_steps=4, save_steps=2, num_workers=2)
    del config["tasks"]["align_tiny"]
    for task in config["tasks"].values():
        task["batch_size"] = 2
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(config))
    command, env = accelerate_launch("-m", "faceptor_hf.training.train", str(path))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    command, env = accelerate_launch("-m", "faceptor_hf.training.train", str(path), "--output-dir",
                                     str(tmp_path / "b"), "--resume-from-checkpoint", "latest")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    states = json.loads((tmp_path / "a" / "checkpoint-4" / "trainer_state.json").read_text())["streams"]
    again = json.loads((tmp_path / "b" / "checkpoint-4" / "trainer_state.json").read_text())["streams"]
    # each process read its half (6 of the 12 rows) per epoch: 8 samples in, 2 into the second epoch
    after_eight = {"epoch": 1, "window": 0, "source": None, "offset": 2}
    assert states == again == {"recog_ms1mv3": [{**after_eight, "buffer_size": 5}] * 2,
                               "affect_rafdb": [{**after_eight, "buffer_size": 8}] * 2}
    summary = json.loads((tmp_path / "b" / "training_summary.json").read_text())
    assert summary["weights_checksum_per_process"][0] == summary["weights_checksum_per_process"][1]
