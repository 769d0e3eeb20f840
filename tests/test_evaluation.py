"""Evaluation: the protocol table against the registered converters, every task type's metric, exact inverse mapping
of points and parsing logits (box crop + zoom, tanh-warp, CelebAMask-HQ's 512 score frame), ``evaluate`` on every
kind of protocol with a tiny random model, and ``faceptor-hf prepare-data`` / ``faceptor-hf evaluate`` end to end
on a toy 300W-like release (bad lines, --skip-bad, self-contained and never half-written output, the paper row)."""

import json
import math
import os
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk

from faceptor_hf import FaceptorImageProcessor, FaceptorModel
from faceptor_hf.commands import main
from faceptor_hf.configuration_faceptor import make_task
from faceptor_hf.data import NATIVE_DATASETS, DatasetFormatError, NativeDataset, task_features, verification_features
from faceptor_hf.dataset_crops import row_matrix, warp_points
from faceptor_hf.evaluation import PROTOCOLS, EvaluationBatch, evaluate, find_protocol
from faceptor_hf.evaluation.evaluate import BatchPreparer
from faceptor_hf.evaluation.report import paper_rows
from faceptor_hf.tanh_warp import tanh_unwarp_map, tanh_warp_image, tanh_warp_points, untanh_warp_points
from faceptor_hf.task_types import TASK_TYPES

from conftest import tiny_config

MODEL_TASKS = ["recog_ms1mv3", "age_morph2", "biattr_celeba", "affect_rafdb", "parsing_celebam", "parsing_lapa",
               "align_300w", "align_aflw"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FaceptorModel(tiny_config(tasks=MODEL_TASKS)).eval()


def _image(rng, height, width):
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# ---- the registry and the protocol table --------------------------------------------------------------------------
def test_every_registered_type_has_a_metric_after_import():
    for name, task_type in TASK_TYPES.items():
        assert callable(task_type.metric), name


def test_every_registered_dataset_with_a_test_split_has_a_protocol():
    # Strict for the converters registered now, silent about those not written yet.
    for name, spec in NATIVE_DATASETS.items():
        if not any(split.startswith("test") for split in spec.splits):
            continue
        protocol = find_protocol(name)
        assert protocol is not None, f"{name} has test splits but no evaluation protocol"
        assert set(protocol.splits) <= set(spec.splits), (name, protocol.splits, spec.splits)
        assert protocol.task == (spec.task or "recog_ms1mv3"), name
    for name, protocol in PROTOCOLS.items():
        if name in NATIVE_DATASETS:
            assert set(protocol.paper) <= set(protocol.splits), name


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_each_protocol_builds_its_metric(name):
    protocol = PROTOCOLS[name]
    task = make_task(protocol.task)
    accumulator = TASK_TYPES[task.type].metric(task, **protocol.metric_options)
    assert accumulator.image_columns and accumulator.target_columns


# ---- inverse mapping ----------------------------------------------------------------------------------------------
def test_tanh_warp_points_by_hand_and_round_trip():
    # q = 0.6 (x = 409.6 of 512) lies in the squeezed band: q' = tanh((0.6 - 0.2) / 0.8) * 0.8 + 0.2
    expected = (math.tanh(0.5) * 0.8 + 0.2 + 1) / 2 * 512
    warped = tanh_warp_points(torch.tensor([[409.6, 256.0], [512 - 409.6, 300.0]]), 512, 0.8)
    assert warped[0].tolist() == pytest.approx([expected, 256.0])
    assert warped[1, 0].item() == pytest.approx(512 - expected)  # symmetric about q = 0 (index 256)
    assert warped[1, 1].item() == pytest.approx(300.0)  # |q| <= 0.2 stays linear
    points = torch.rand(50, 2, dtype=torch.float64) * 900 - 200
    torch.testing.assert_close(untanh_warp_points(tanh_warp_points(points, 512, 0.8), 512, 0.8), points)
    torch.testing.assert_close(tanh_warp_points(points, 512, 0.0), points)


def _batch(task, matrices, sizes, raw=None, warp_factor=0.0, score_size=None):
    return EvaluationBatch(task=task, raw={"image": raw} if raw is not None else {}, rows={},
                           matrices={"image": matrices}, image_sizes={"image": sizes}, crop_size=512,
                           indices=list(range(len(sizes))), warp_factor=warp_factor, score_size=score_size)


def test_landmarks_map_back_through_zoomed_box_crops_and_tanh_warps():
    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.uniform(50, 250, (2, 68, 2)))
    box_matrix = row_matrix({"face_box": [40.0, 30.0, 260.0, 250.0]}, "dense_pixel_values", (300, 300), zoom=0.8)
    keypoints = [[120, 130], [180, 130], [150, 160], [125, 195], [175, 195]]
    align_matrix = row_matrix({"face_keypoints": keypoints}, "dense_pixel_values", (300, 300))
    task = make_task("align_300w")
    batch = _batch(task, torch.stack([box_matrix, box_matrix]), [(300, 300)] * 2)
    crop = torch.stack([warp_points(points, box_matrix) for points in truth])
    torch.testing.assert_close(batch.points_in_image(crop), truth)
    tanh_batch = _batch(task, torch.stack([align_matrix, align_matrix]), [(300, 300)] * 2, warp_factor=0.8)
    crop = tanh_warp_points(torch.stack([warp_points(points, align_matrix) for points in truth]), 512, 0.8)
    torch.testing.assert_close(tanh_batch.points_in_image(crop), truth)


def _one_hot(labels, classes):
    return torch.nn.functional.one_hot(labels, classes).permute(2, 0, 1).float() * 10


def test_parsing_logits_are_scored_in_celebamask_hq_s_512_frame():
    # The converter's 1024-px image and pixel-replicated mask; the protocol scores at 512 (identity crop).
    labels_512 = torch.from_numpy(np.random.default_rng(1).integers(0, 19, (512, 512)))
    matrix = row_matrix({}, "dense_pixel_values", (1024, 1024))
    logits = _one_hot(labels_512, 19)[None]
    batch = _batch(make_task("parsing_celebam"), matrix[None], [(1024, 1024)], logits, score_size=512)
    assert torch.equal(batch.labels_in_frame(0, (512, 512)), labels_512)


def test_parsing_logits_warp_back_through_lapa_s_tanh_warp():
    # Large label blocks in a 300 x 260 photo; the crop's labels come from the image by the forward warp, and the
    # predicted map warped back must reproduce the photo's labels away from block edges.
    blocks = torch.arange(30).reshape(5, 6) % 11
    labels = blocks.repeat_interleave(60, 0).repeat_interleave(44, 1)[:300, :260]
    keypoints = [[100, 120], [160, 120], [130, 150], [105, 185], [155, 185]]
    matrix = row_matrix({"face_keypoints": keypoints}, "dense_pixel_values", (300, 260))
    crop_labels = tanh_warp_image(labels[None].float(), matrix, 512, 0.8, mode="nearest")[0].long()
    batch = _batch(make_task("parsing_lapa"), matrix[None], [(300, 260)], _one_hot(crop_labels, 11)[None],
                   warp_factor=0.8)
    restored = batch.labels_in_frame(0, (300, 260))
    assert restored.shape == (300, 260)
    assert (restored == labels).float().mean() > 0.97
    # a constant map comes back constant everywhere the squeezed frame reaches (the whole photo, with wf = 0.8)
    constant = tanh_unwarp_map(torch.full((1, 512, 512), 3.0), matrix, (300, 260), 0.8)
    torch.testing.assert_close(constant[0, 5:-5, 5:-5], torch.full((290, 250), 3.0))


def test_crops_use_the_processor_statistics_of_the_input():
    white = PIL.Image.new("RGB", (112, 112), (255, 255, 255))
    dataset = Dataset.from_dict({"image": [white], "age": [30.0]})
    protocol = PROTOCOLS["morph2"]
    preparer = BatchPreparer(dataset, ("image",), "pixel_values", protocol, FaceptorImageProcessor(), "test")
    assert torch.allclose(preparer([0]).pixels["image"], torch.ones(1, 3, 112, 112))
    processor = FaceptorImageProcessor(image_mean=[0.0] * 3, image_std=[0.25] * 3)
    preparer = BatchPreparer(dataset, ("image",), "pixel_values", protocol, processor, "test")
    assert torch.allclose(preparer([0]).pixels["image"], torch.full((1, 3, 112, 112), 4.0))


# ---- evaluate on every kind of protocol ---------------------------------------------------------------------------
def _rows(protocol_name, rng, count=2):
    """Rows of a small synthetic split in the common schema for the protocol's task."""
    protocol = PROTOCOLS[protocol_name]
    if protocol.task == "recog_ms1mv3":
        features = verification_features()
        data = {"image_a": [_image(rng, 112, 112) for _ in range(10)],
                "image_b": [_image(rng, 112, 112) for _ in range(10)],
                "is_same": [bool(i % 2) for i in range(10)], "fold": list(range(10))}
        return Dataset.from_dict(data, features=features)
    task = make_task(protocol.task)
    size = {"celebamask-hq": (1024, 1024), "lapa": (240, 200)}.get(protocol_name, (160, 150))
    data = {"image": [_image(rng, *size) for _ in range(count)], "face_box": [None] * count,
            "face_keypoints": [None] * count}
    column = TASK_TYPES[task.type].label_column
    if column == "landmarks":
        data["face_box"] = [[20.0, 25.0, 140.0, 150.0]] * count
        data[column] = [rng.uniform(30, 130, (task.num_queries, 2)).astype("float32") for _ in range(count)]
    elif column == "mask":
        data[column] = [PIL.Image.fromarray(rng.integers(0, task.num_queries, size, dtype=np.uint8))
                        for _ in range(count)]
        if protocol_name == "lapa":
            data["face_keypoints"] = [[[80, 100], [120, 100], [100, 125], [85, 150], [115, 150]]] * count
    elif column == "age":
        data[column] = [float(age) for age in rng.integers(16, 70, count)]
    elif column == "attributes":
        data[column] = rng.integers(0, 2, (count, task.num_queries)).tolist()
    else:
        data[column] = rng.integers(0, task.num_queries, count).tolist()
    return Dataset.from_dict(data, features=task_features(task))


@pytest.mark.parametrize("name", ["300w", "aflw", "celebamask-hq", "lapa", "morph2", "celeba", "rafdb", "lfw"])
def test_evaluate_scores_each_kind_of_protocol(model, name):
    protocol = PROTOCOLS[name]
    split = protocol.splits[0]
    dataset = _rows(name, np.random.default_rng(0), count=1 if name == "celebamask-hq" else 2)
    result = evaluate(model, dataset, name, split=split, batch_size=2)
    assert result.task == protocol.task and result.num_samples == len(dataset)
    assert len(result.predictions) == len(dataset)
    assert [record["index"] for record in result.predictions] == list(range(len(dataset)))
    for figure in result.paper:
        assert figure.metric in result and math.isfinite(result[figure.metric])
    assert all(isinstance(value, float) for value in result.values())
    row = paper_rows([result])[0]
    assert row[:3] == [name, split, protocol.task]


def test_evaluate_options_and_errors(model):
    rng = np.random.default_rng(3)
    dataset = _rows("300w", rng, count=3)
    model.train()
    limited = evaluate(model, DatasetDict({"test_common": dataset}), "300w", split="test_common", limit=1)
    assert model.training  # the caller's mode is restored
    model.eval()
    assert limited.num_samples == 1 and set(limited) == {"nme_inter_ocular", "nme_inter_pupil"}
    assert limited.to_dict()["paper"][0]["faceptor_full"] == 2.52
    # a model task name: the schema's crop rule and the type's default metric (inter-ocular for 68 points)
    by_task = evaluate(model, dataset, "align_300w", keep_predictions=False, limit=1)
    assert set(by_task) == {"nme_inter_ocular"} and by_task.predictions == []
    # a model that names the task differently: its only 68-point landmark task is used, or the one named
    torch.manual_seed(0)
    renamed = FaceptorModel(tiny_config(tasks=[{"name": "align_mine", "type": "align", "num_queries": 68}])).eval()
    assert evaluate(renamed, dataset, "300w", limit=1).task == "align_mine"
    assert evaluate(renamed, dataset, "300w", task="align_mine", limit=1).task == "align_mine"
    with pytest.raises(KeyError, match="no task 'align_wflw'.*name one with task="):
        evaluate(renamed, dataset, "wflw")
    with pytest.raises(KeyError, match="neither a dataset with an evaluation protocol"):
        evaluate(model, dataset, "no-such-set")
    with pytest.raises(KeyError, match=r"task 'align_300w'.*lacks column\(s\) \['landmarks'\]"):
        evaluate(model, dataset.remove_columns("landmarks"), "300w")
    with pytest.raises(KeyError, match="pick one of the splits"):
        evaluate(model, DatasetDict({"test_common": dataset}), "300w")


def test_bad_rows_are_named(model):
    rng = np.random.default_rng(4)
    dataset = _rows("lapa", rng, count=1)
    nan_points = dataset.map(lambda row: {"face_keypoints": np.full((5, 2), np.nan, dtype=np.float32)})
    with pytest.raises(ValueError, match="lapa test, row 0: .*no usable crop"):
        evaluate(model, nan_points, "lapa", split="test")
    too_many = dataset.map(lambda row: {"mask": PIL.Image.new("L", row["mask"].size, 11)})
    with pytest.raises(ValueError, match="row 0: mask holds class ids 11..11, but the task has classes 0..10"):
        evaluate(model, too_many, "lapa", split="test")


def test_generic_types_get_default_protocols_and_a_type_without_metric_is_named(monkeypatch):
    import dataclasses

    monkeypatch.setitem(TASK_TYPES, "pose_test", dataclasses.replace(TASK_TYPES["regression"], name="pose_test",
                                                                       metric=None))
    torch.manual_seed(0)
    tasks = [{"name": "gender_x", "type": "classification", "labels": ["female", "male"]},
             {"name": "pose_x", "type": "regression", "labels": ["yaw", "pitch"]},
             {"name": "pose_y", "type": "pose_test", "labels": ["yaw"]}]
    generic = FaceptorModel(tiny_config(tasks=tasks)).eval()
    rng = np.random.default_rng(5)
    images = {"image": [_image(rng, 112, 112) for _ in range(3)], "face_box": [None] * 3, "face_keypoints": [None] * 3}
    labeled = Dataset.from_dict({**images, "label": [0, 1, 1]},
                                 features=task_features(generic.config.get_task("gender_x")))
    result = evaluate(generic, labeled, "gender_x")
    predicted = [record["label"] for record in result.predictions]
    assert set(result) == {"accuracy"}
    assert result["accuracy"] == pytest.approx(np.mean(np.array(predicted) == [0, 1, 1]) * 100)
    values = Dataset.from_dict({**images, "values": [[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]},
                               features=task_features(generic.config.get_task("pose_x")))
    result = evaluate(generic, values, "pose_x")
    predicted = np.array([record["values"] for record in result.predictions])
    truth = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    assert result["mae"] == pytest.approx(np.abs(predicted - truth).mean())
    assert result["mae_pitch"] == pytest.approx(np.abs(predicted[:, 1] - truth[:, 1]).mean())
    with pytest.raises(KeyError, match="task type 'pose_test' of task 'pose_y' has no metric"):
        evaluate(generic, values, "pose_y")


# ---- the command line end to end ----------------------------------------------------------------------------------
TOY = "toy-300w"


def _toy_rows(data_dir, split):
    """A 300W-like release: ``<split>.txt`` lines '<image> <136 landmark values> <x1 y1 x2 y2>'."""
    listing = os.path.join(data_dir, f"{split}.txt")
    with open(listing, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if len(parts) != 1 + 136 + 4:
                yield DatasetFormatError(f"expected an image and 140 numbers, got {len(parts)} fields", listing, number)
                continue
            image = os.path.join(data_dir, parts[0])
            if not os.path.isfile(image):
                yield DatasetFormatError(f"image {parts[0]} does not exist", listing, number)
                continue
            values = [float(value) for value in parts[1:]]
            yield {"image": image, "face_box": values[136:], "face_keypoints": None,
                   "landmarks": np.asarray(values[:136], dtype=np.float32).reshape(68, 2)}


@pytest.fixture
def toy_release(tmp_path, monkeypatch):
    """A registered toy converter (its protocol is 300W's, found through its official task) and its release with
    one malformed line and one missing image in the test list."""
    monkeypatch.setitem(NATIVE_DATASETS, TOY, NativeDataset(
        name=TOY, task="align_300w", splits=("train", "test_common"), rows=_toy_rows,
        features=lambda: task_features(make_task("align_300w")), layout="<split>.txt and the images"))
    root = tmp_path / "release"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test_common", 3)):
        lines = []
        for index in range(count):
            name = f"{split}_{index}.png"
            _image(rng, 180, 160).save(root / name)
            points = rng.uniform(40, 140, (68, 2)).reshape(-1)
            lines.append(" ".join([name, *map(str, points), "20", "30", "150", "160"]))
        if split == "test_common":
            lines.insert(1, "broken.png 1 2 3")
            lines.append(" ".join(["missing.png", *["50"] * 136, "20", "30", "150", "160"]))
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_prepare_data_stops_at_a_bad_line_or_skips_and_counts(toy_release, tmp_path, capsys):
    output = tmp_path / "prepared"
    assert main(["prepare-data", TOY, "--data-dir", str(toy_release), "--output", str(output),
                 "--split", "test_common"]) == 2
    error = capsys.readouterr().err
    assert "test_common.txt:2" in error and "140 numbers" in error and "--skip-bad" in error
    assert not output.exists() and not os.path.exists(f"{output}.partial")

    assert main(["prepare-data", TOY, "--data-dir", str(toy_release), "--output", str(output),
                 "--split", "test_common", "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "2 bad sample(s) skipped" in captured.err and "test_common.txt:5" in captured.err
    shutil.rmtree(toy_release)  # the copy is self-contained: images are embedded
    prepared = load_from_disk(str(output))
    assert len(prepared) == 3 and prepared[0]["image"].size == (160, 180)
    assert main(["prepare-data", TOY, "--data-dir", str(tmp_path), "--output", str(output)]) == 2
    assert "exists" in capsys.readouterr().err


def test_an_interrupted_prepare_data_leaves_only_a_partial_folder(toy_release, tmp_path, monkeypatch):
    def interrupted_save(self, path, **kwargs):
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "data-00000-of-00001.arrow"), "wb").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(Dataset, "save_to_disk", interrupted_save)
    for split_options, name in (([], "all"), (["--split", "train"], "one")):
        output = tmp_path / name
        code = main(["prepare-data", TOY, "--data-dir", str(toy_release), "--output", str(output), "--skip-bad",
                     *split_options])
        assert code == 130
        assert not output.exists() and os.path.isdir(f"{output}.partial")


def test_prepare_then_evaluate_prints_the_paper_row(toy_release, checkpoint, tmp_path, capsys):
    prepared = tmp_path / "prepared"
    assert main(["prepare-data", TOY, "--data-dir", str(toy_release), "--output", str(prepared),
                 "--format", "parquet", "--skip-bad"]) == 0
    assert sorted(os.listdir(prepared)) == ["test_common", "train"]
    capsys.readouterr()

    out_native = tmp_path / "eval_native"
    assert main(["evaluate", "--model", str(checkpoint), "--dataset", TOY, "--data-dir", str(toy_release),
                 "--split", "test_common", "--skip-bad", "--batch-size", "2", "--output-dir", str(out_native)]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith(TOY))
    assert "test_common" in row and "NME inter-ocular x100" in row and "2.6" in row and "2.52" in row
    document = json.loads((out_native / "metrics.json").read_text())
    result = document["results"][0]
    assert result["num_samples"] == 3 and result["task"] == "align_300w" and document["protocol"] == TOY
    assert math.isfinite(result["metrics"]["nme_inter_ocular"])
    predictions = Dataset.from_parquet(str(out_native / "predictions-test_common.parquet"))
    assert len(predictions) == 3 and np.asarray(predictions[0]["points"]).shape == (68, 2)

    out_prepared = tmp_path / "eval_prepared"
    assert main(["evaluate", "--model", str(checkpoint), "--dataset", "300w", "--prepared", str(prepared),
                 "--split", "test_common", "--output-dir", str(out_prepared)]) == 0
    again = json.loads((out_prepared / "metrics.json").read_text())["results"][0]["metrics"]
    assert again["nme_inter_ocular"] == pytest.approx(result["metrics"]["nme_inter_ocular"], abs=1e-6)
    assert main(["evaluate", "--model", str(checkpoint), "--prepared", str(prepared)]) == 2
    assert "--dataset NAME" in capsys.readouterr().err


def test_detect_keypoints_flag_reaches_converters_that_take_it(toy_release, tmp_path, capsys, monkeypatch):
    assert main(["prepare-data", TOY, "--data-dir", str(toy_release), "--output", str(tmp_path / "out"),
                 "--detect-keypoints"]) == 2
    assert "--detect-keypoints does not apply" in capsys.readouterr().err
    seen = {}

    def rows_with_option(data_dir, split, detect_keypoints=False):
        seen["detect_keypoints"] = detect_keypoints
        yield from _toy_rows(data_dir, "train")

    spec = NATIVE_DATASETS[TOY]
    monkeypatch.setitem(NATIVE_DATASETS, TOY, NativeDataset(
        name=TOY, task=spec.task, splits=spec.splits, rows=rows_with_option, features=spec.features,
        layout=spec.layout, options=("detect_keypoints",)))
    assert main(["prepare-data", TOY, "--data-dir", str(toy_release), "--output", str(tmp_path / "out"),
                 "--split", "train", "--detect-keypoints"]) == 0
    assert seen == {"detect_keypoints": True}
