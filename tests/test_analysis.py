"""The library under ``faceptor-hf analyze`` (faceptor_hf.analysis): the Python API, how processes split the
inputs, and the shared model loading (faceptor_hf.loading) and error mapping (faceptor_hf.commands.errors)."""

import json
import shutil

import datasets
import pytest
from huggingface_hub import ResolvedRevision

from faceptor_hf import FaceAnalysisPipeline, analyze_inputs
from faceptor_hf.analysis import AnalysisInputError, DatasetRows, ImageFiles
from faceptor_hf.commands import build_parser
from faceptor_hf.commands.errors import CommandError, is_user_error
from faceptor_hf.loading import ModelLoadError, ModelSource, load_model, model_identity

from conftest import IMAGES


def shares(rows: DatasetRows, world: int) -> list[list[tuple[str, object, str]]]:
    """(name, image, stem) of every process's share."""
    return [[(name, image, stem) for name, image, _, stem in rows.shard(rank, world).items] for rank in range(world)]


def test_analyze_inputs_writes_records_and_resumes(checkpoint, tmp_path):
    model, processor = load_model(ModelSource(str(checkpoint)))
    pipe = FaceAnalysisPipeline(model=model, image_processor=processor)
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(IMAGES / "astronaut.png", photos / "astronaut.png")
    out = tmp_path / "out"

    summary = analyze_inputs(pipe, [photos, tmp_path / "absent.jpg"], out, tasks=["age_morph2"], overlay=False,
                             rank=0, world_size=1)
    assert (summary.written, summary.failed, summary.faces, summary.skipped) == (2, 1, 1, 0)
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["input"] for line in lines] == [str(photos / "astronaut.png"), str(tmp_path / "absent.jpg")]
    assert set(lines[0]["faces"][0]["tasks"]) == {"age_morph2"} and "no such file" in lines[1]["error"]
    assert (out / "astronaut.json").exists() and not (out / "astronaut.png").exists()

    # Same model (identified by its folder) and options: the good input is skipped, the failed one retried.
    again = analyze_inputs(pipe, [photos, tmp_path / "absent.jpg"], out, tasks=["age_morph2"], overlay=False,
                           rank=0, world_size=1)
    assert (again.written, again.failed, again.skipped, again.earlier_records) == (1, 1, 1, 2)

    with pytest.raises(AnalysisInputError, match="no input images found"):
        analyze_inputs(pipe, [str(tmp_path / "none_*.png")], out, rank=0, world_size=1)


def test_dataset_rows_split_by_node():
    """A saved dataset splits into contiguous blocks (split_dataset_by_node), a stream into every world-th row;
    names and stems are those of a single process either way."""
    table = {"image": [f"pixels{i}" for i in range(5)], "photo_id": ["a", "b", "a", "c", "a"]}
    saved = datasets.Dataset.from_dict(table)
    (alone,) = shares(DatasetRows(saved, "data", "train"), 1)
    assert [name for name, _, _ in alone] == [f"data/train/{i}" for i in range(5)]
    assert shares(DatasetRows(saved, "data", "train"), 2) == [alone[:3], alone[3:]]

    by_id = DatasetRows(saved, "data", id_column="photo_id")
    (alone,) = shares(by_id, 1)
    assert [stem for _, _, stem in alone] == ["a", "b", "a_2", "c", "a_3"]
    assert shares(by_id, 2) == [alone[:3], alone[3:]]

    # Two file shards for two processes: "auto" would hand each process a shard; rows are assigned one by one.
    for id_column in (None, "photo_id"):
        (alone,) = shares(DatasetRows(saved.to_iterable_dataset(num_shards=1), "data", id_column=id_column), 1)
        stream = DatasetRows(saved.to_iterable_dataset(num_shards=2), "data", id_column=id_column)
        assert shares(stream, 2) == [alone[0::2], alone[1::2]]
        assert [image for _, image, _ in alone] == table["image"]


def test_image_files_take_every_world_th_path(tmp_path):
    for name in ("c.jpg", "a.png", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    files = ImageFiles([tmp_path])
    assert [[name for name, *_ in files.shard(rank, 2).items] for rank in (0, 1)] == [
        [str(tmp_path / "a.png"), str(tmp_path / "c.jpg")], [str(tmp_path / "b.jpg")]]


def test_model_options_are_one_definition_for_every_command():
    parser = build_parser()
    common = ["--model", "m", "--revision", "v1", "--local-files-only", "--random-weights", "--seed", "3"]
    commands = {"analyze": ["analyze", "x.jpg"], "evaluate": ["evaluate"],
                "export": ["export", "onnx", "--output", "o"]}
    for name, prefix in commands.items():
        args = parser.parse_args([*prefix, *common])
        assert (args.model, args.revision, args.local_files_only, args.random_weights, args.seed) == (
            "m", "v1", True, True, 3), name
    for name in ("analyze", "evaluate"):
        args = parser.parse_args([*commands[name], "--device", "cuda:1", "--dtype", "bfloat16"])
        assert (args.device, args.dtype) == ("cuda:1", "bfloat16")


def test_loading_and_identity(checkpoint):
    with pytest.raises(ModelLoadError, match="no model given"):
        load_model(ModelSource())
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(ModelSource(str(checkpoint / "absent")))
    model, _ = load_model(ModelSource(random_weights=True, seed=1), dtype="bfloat16")
    assert model.is_untrained and str(model.dtype) == "torch.bfloat16"
    assert model_identity(ModelSource(random_weights=True, seed=1)) == {"model": "random-weights", "seed": 1}
    # A Hub model is identified by the commit its revision was pinned to (tests/test_hub.py pins one for real).
    pinned = ResolvedRevision(initial="v1", resolved="0123abc" * 5, repo_id="user/repo")
    assert model_identity(ModelSource("user/repo", revision=pinned)) == {
        "model": "user/repo", "revision": "v1", "commit": "0123abc" * 5}
    assert ModelSource("user/repo", revision=pinned).pinned().revision is pinned
    assert ModelSource(str(checkpoint)).pinned() == ModelSource(str(checkpoint))  # a folder has no revision


def test_one_mapping_of_user_errors(monkeypatch, capsys):
    from faceptor_hf.training.config import TrainingConfigError
    from faceptor_hf.training.train import main as training_main

    assert all(is_user_error(error) for error in (CommandError("x"), ModelLoadError("x"), TrainingConfigError("x"),
                                                    AnalysisInputError("x")))
    assert not is_user_error(ValueError("x")) and not is_user_error(RuntimeError("x"))
    assert training_main(["absent.yaml"]) == 2
    assert capsys.readouterr().err == "error: config file 'absent.yaml' does not exist\n"
    monkeypatch.setenv("RANK", "1")  # another process of a launch: same mistake, no second line
    assert training_main(["absent.yaml"]) == 2 and capsys.readouterr().err == ""
