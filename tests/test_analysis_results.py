"""Analysis results as a dataset (faceptor_hf.results_dataset): ``analyze --output-format parquet`` writes one row
per face with typed columns, a card, one shard per process; ``load_results`` / ``datasets.load_dataset`` read it;
resume still works; ``--push-to-hub`` publishes it as a dataset repository (loopback Hub server)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from faceptor_hf import FaceAnalysisPipeline, load_results, make_task
from faceptor_hf.analysis import analyze_inputs
from faceptor_hf.commands import main
from faceptor_hf.loading import ModelSource, load_model
from faceptor_hf.results_dataset import ResultsError, plan_columns, shard_paths, write_shard
from faceptor_hf.task_types import get_task_type, register_task_type

from conftest import IMAGES

ROOT = Path(__file__).parent.parent
FACE_COLUMNS = ["source", "face_index", "box", "score", "keypoints"]


@pytest.fixture(scope="module")
def pipe(checkpoint):
    model, processor = load_model(ModelSource(str(checkpoint)))
    return FaceAnalysisPipeline(model=model, image_processor=processor)


def photo_folder(folder: Path) -> Path:
    """Two photos with one face each, a blank image (no face) and a truncated file (fails)."""
    folder.mkdir()
    for name in ("astronaut.png", "grace_hopper.jpg"):
        shutil.copy(IMAGES / name, folder / name)
    PIL.Image.new("RGB", (160, 120), (127, 127, 127)).save(folder / "blank.png")
    (folder / "broken.jpg").write_bytes((IMAGES / "grace_hopper.jpg").read_bytes()[:2000])
    return folder


def jsonl_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_typed_row_per_face_equal_to_the_records(pipe, tmp_path):
    photos, out = photo_folder(tmp_path / "photos"), tmp_path / "out"
    summary = analyze_inputs(pipe, [photos], out, overlay=False, rank=0, world_size=1, output_format="parquet")
    assert (summary.written, summary.failed, summary.faces) == (4, 1, 2)
    assert summary.shard == str(out / "data" / "train-00000-of-00001.parquet")

    faces = load_results(out)
    tasks = ["age_morph2.age", "biattr_celeba.attributes", "affect_affectnet.label", "affect_affectnet.scores",
             "parsing_celebam.mask", "align_300w.points"]
    assert faces.column_names == [*FACE_COLUMNS, "embedding", "quality", *tasks]
    features = faces.features
    assert features["embedding"] == datasets.List(datasets.Value("float32"), length=512)
    assert features["keypoints"] == datasets.List(datasets.List(datasets.Value("float32"), length=2), length=5)
    assert features["align_300w.points"].length == 68 and isinstance(features["parsing_celebam.mask"],
                                                                      datasets.Image)
    assert len(features["biattr_celeba.attributes"]) == 40 and features["face_index"].dtype == "int32"

    # Rows in input order (sorted paths); the blank image has no row, the broken file none either.
    records = {record["input"]: record for record in jsonl_records(out / "results.jsonl")}
    assert faces["source"] == [str(photos / "astronaut.png"), str(photos / "grace_hopper.jpg")]
    for row in faces:
        face = records[row["source"]]["faces"][row["face_index"]]
        np.testing.assert_allclose(row["box"], face["box"], atol=1e-4)
        np.testing.assert_allclose(row["keypoints"], face["keypoints"], atol=1e-4)
        assert row["score"] == pytest.approx(face["score"], abs=1e-6)
        result = face["tasks"]
        embedding = np.array(row["embedding"])
        assert abs(np.linalg.norm(embedding) - 1) < 1e-6
        np.testing.assert_allclose(embedding, result["recog_ms1mv3"]["embedding"], atol=1e-5)
        assert row["age_morph2.age"] == pytest.approx(result["age_morph2"]["age"], abs=1e-4)
        assert row["affect_affectnet.label"] == result["affect_affectnet"]["label"]
        assert row["affect_affectnet.scores"] == pytest.approx(result["affect_affectnet"]["scores"], abs=1e-6)
        assert row["biattr_celeba.attributes"] == pytest.approx(result["biattr_celeba"]["attributes"], abs=1e-6)
        np.testing.assert_allclose(row["align_300w.points"], result["align_300w"]["points"], atol=1e-4)
        mask = row["parsing_celebam.mask"]
        saved = PIL.Image.open(out / result["parsing_celebam"]["mask_file"])
        assert mask.mode == "L" and np.array_equal(np.asarray(mask), np.asarray(saved))

    # The card points datasets at the shards; both ways of loading give the same rows.
    card = (out / "README.md").read_text()
    assert "2 faces from 4 images (1 without a face, 1 failed" in card
    assert "UNTRAINED RANDOM WEIGHTS" in card  # the test checkpoint has random weights, and the card says so
    assert "path: data/train-*.parquet" in card and "| `parsing_celebam.mask` | image (PNG) |" in card
    assert datasets.load_dataset(str(out), split="train")["source"] == faces["source"]
    by_folder = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert by_folder["age_morph2.age"] == faces["age_morph2.age"]


def test_resume_keeps_one_current_row_per_face(pipe, tmp_path):
    photos, out = photo_folder(tmp_path / "photos"), tmp_path / "out"
    options = dict(tasks=["age_morph2", "recog_ms1mv3"], write_files=False, rank=0, world_size=1)
    # A JSONL run first: switching to Parquet reuses its records (nothing is analyzed again).
    analyze_inputs(pipe, [photos], out, **options)
    with open(out / "results.jsonl", "a") as handle:
        handle.write('{"input": "cut by a kill')  # a killed run's last line
    again = analyze_inputs(pipe, [photos], out, output_format="parquet", **options)
    assert (again.written, again.skipped) == (1, 3)  # only the failed input is tried again
    first = load_results(out)
    assert first.column_names == [*FACE_COLUMNS, "embedding", "quality", "age_morph2.age"] and len(first) == 2

    # A changed photo is analyzed again and appended; its old record no longer counts.
    shutil.copy(IMAGES / "astronaut.png", photos / "grace_hopper.jpg")
    redone = analyze_inputs(pipe, [photos], out, output_format="parquet", **options)
    assert (redone.written, redone.skipped) == (2, 2)
    rows = load_results(out)
    assert rows["source"] == first["source"]
    np.testing.assert_allclose(rows["embedding"][1], rows["embedding"][0], atol=1e-5)  # now the same photo
    assert not np.allclose(rows["embedding"][1], first["embedding"][1], atol=1e-3)


def test_masks_without_files_and_shards_of_another_run(pipe, tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "train-00001-of-00002.parquet").write_bytes(b"left by a two-process run")
    summary = analyze_inputs(pipe, [IMAGES / "astronaut.png"], out, tasks=["parsing_celebam"], write_files=False,
                             rank=0, world_size=1, output_format="parquet")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "results.jsonl"]
    assert shard_paths(out) == [summary.shard]  # the stale shard is gone
    record = jsonl_records(out / "results.jsonl")[0]["faces"][0]["tasks"]["parsing_celebam"]
    assert "counts" in record["mask"]  # without files the record carries the mask itself
    mask = np.asarray(load_results(out)[0]["parsing_celebam.mask"])
    assert mask.shape == tuple(PIL.Image.open(IMAGES / "astronaut.png").size[::-1]) and mask.max() < 19


def test_columns_come_from_the_registry(tmp_path):
    """Column names and kinds per task type; a type without table columns is kept as JSON; a second recognition
    task keeps its own name; a face's quality dict becomes a struct column."""
    register_task_type(dataclasses.replace(get_task_type("regression"), name="pose_tables_test", table_columns=None),
                       exist_ok=True)
    tasks = [make_task("recog_ms1mv3"), make_task("recog_extra", task_type="recog", embedding_size=4),
             make_task("pose_head", task_type="pose_tables_test", labels=["yaw", "pitch"]),
             make_task("expression", task_type="classification", labels=["calm", "joy"])]
    plans = plan_columns(tasks)
    assert [(plan.name, plan.column and plan.column.kind) for plan in plans] == [
        ("embedding", "unit_vector"), ("recog_extra.embedding", "unit_vector"), ("pose_head", None),
        ("expression.label", "string"), ("expression.scores", "scores")]

    face = {"box": [1, 2, 30, 40], "score": 0.9, "keypoints": [[5, 5]] * 5,
            "quality": {"sharpness": 12.5, "yaw": -3.0, "frontal": True},
            "tasks": {"recog_ms1mv3": {"embedding": [3.0] + [0.0] * 511}, "recog_extra": {"embedding": [0, 0, 0, 2]},
                      "pose_head": {"values": {"yaw": 0.5, "pitch": -1.0}},
                      "expression": {"label": "joy", "scores": {"calm": 0.25, "joy": 0.75}}}}
    jsonl = tmp_path / "results.jsonl"
    lines = [{"input": "a.jpg", "run_key": "k", "faces": [face, face]}, {"input": "b.jpg", "run_key": "other"},
             {"input": "c.jpg", "run_key": "k", "error": "truncated"}]
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    path, stats = write_shard(str(jsonl), ["a.jpg", "b.jpg", "c.jpg"], "k", tasks, str(tmp_path))
    assert (stats.images, stats.failed, stats.faces) == (2, 1, 2)
    rows = load_results(tmp_path)
    assert rows.column_names == [*FACE_COLUMNS, "embedding", "quality", "recog_extra.embedding", "pose_head",
                                 "expression.label", "expression.scores"]
    row = rows[1]
    assert row["face_index"] == 1 and row["embedding"][:2] == [1.0, 0.0] and row["recog_extra.embedding"][3] == 1.0
    assert row["quality"] == {"sharpness": 12.5, "yaw": -3.0, "frontal": True}
    assert json.loads(row["pose_head"]) == {"values": {"yaw": 0.5, "pitch": -1.0}}
    assert row["expression.scores"] == {"calm": 0.25, "joy": 0.75}

    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no results shards"):
        load_results(tmp_path / "empty")


def test_command_line_parquet_and_its_errors(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["analyze", str(IMAGES / "astronaut.png"), "--model", str(checkpoint), "--output-dir", str(out),
                 "--output-format", "parquet", "--no-overlay", "--tasks", "age_morph2"])
    stdout = capsys.readouterr().out
    assert code == 0 and "faceptor_hf.load_results reads it" in stdout, stdout
    assert load_results(out)["age_morph2.age"] == [pytest.approx(
        jsonl_records(out / "results.jsonl")[0]["faces"][0]["tasks"]["age_morph2"]["age"], abs=1e-4)]

    capsys.readouterr()
    code = main(["analyze", str(IMAGES), "--model", str(checkpoint), "--push-to-hub", "user/results"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --push-to-hub publishes the per-face dataset; add --output-format parquet"]


PUSH_AND_LOAD = """
import json, sys
from faceptor_hf import load_results
from faceptor_hf.commands import main
code = main(["analyze", {image!r}, "--model", {model!r}, "--output-dir", {out!r}, "--no-files",
             "--tasks", "recog_ms1mv3,age_morph2", "--output-format", "parquet", "--push-to-hub", "user/results"])
faces = load_results("user/results")
print("RESULT", json.dumps({{"code": code, "rows": len(faces), "columns": faces.column_names}}))
"""


@pytest.mark.slow
def test_push_to_hub_publishes_a_dataset_repository(checkpoint, tmp_path):
    from hub_server import FakeHub

    with FakeHub() as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_fake", HF_HUB_DISABLE_XET="1",
                   HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT))
        script = PUSH_AND_LOAD.format(image=str(IMAGES / "astronaut.png"), model=str(checkpoint),
                                      out=str(tmp_path / "out"))
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True,
                                text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
        outcome = json.loads(line[len("RESULT "):])
        assert outcome == {"code": 0, "rows": 1,
                           "columns": [*FACE_COLUMNS, "embedding", "quality", "age_morph2.age"]}, outcome
        files = hub.files("datasets/user/results")
        assert sorted(files) == ["README.md", "data/train-00000-of-00001.parquet"]
        assert files["README.md"] == (tmp_path / "out" / "README.md").read_bytes()
        assert "user/results" not in hub.repos  # a dataset repository, not a model one
