"""faceptor_hf.search.FaceIndex and ``faceptor-hf index``: a query finds its own photo first, FAISS == the numpy
fallback, save/load, another model refused, clusters of copies of one photo, results datasets, resumed builds, bad
input (k <= 0, empty gallery, corrupt folder, photo without a face) and the Hub round trip on the loopback server."""

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
import torch
from transformers import pipeline

from faceptor_hf import FaceptorImageProcessor, FaceptorModel
from faceptor_hf.commands import main
from faceptor_hf.search import FaceIndex, FaceIndexError, ModelMismatchError, exact_top_k

from conftest import IMAGES, SIX_TASKS, tiny_config

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return pipeline("face-analysis", model=str(checkpoint))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """people/astronaut/{a,b,c}.png (copies of one photo, b mirrored), people/hopper/a.jpg, and a broken file."""
    root = tmp_path_factory.mktemp("people")
    (root / "astronaut").mkdir()
    (root / "hopper").mkdir()
    astronaut = PIL.Image.open(IMAGES / "astronaut.png").convert("RGB")
    astronaut.save(root / "astronaut" / "a.png")
    astronaut.transpose(PIL.Image.FLIP_LEFT_RIGHT).save(root / "astronaut" / "b.png")
    astronaut.resize((384, 384)).save(root / "astronaut" / "c.png")
    shutil.copy(IMAGES / "grace_hopper.jpg", root / "hopper" / "a.jpg")
    (root / "hopper" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


@pytest.fixture(scope="module")
def index(pipe, photos):
    return FaceIndex.build(pipe, [str(photos)], identity_column="folder")


def test_build_reports_and_skips_the_bad_image(index):
    report = index.report
    assert (report.images, report.faces, report.failed, report.without_face) == (5, 4, 1, 0)
    assert "broken.jpg" in report.errors[0][0]
    assert index.gallery.column_names[:6] == ["source", "face_index", "box", "score", "keypoints", "quality"]
    embeddings = index.embedding_matrix()
    assert embeddings.shape == (4, 512) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    assert sorted(set(index.gallery["identity"])) == ["astronaut", "hopper"]


def test_gallery_embedding_is_the_verify_embedding(index, pipe):
    """The rows hold the official flip-sum embedding, the one pipe.verify compares."""
    faces = pipe(str(IMAGES / "grace_hopper.jpg"), tasks=["recog_ms1mv3"], flip_recognition=True)
    row = index.gallery["source"].index(next(s for s in index.gallery["source"] if s.endswith("hopper/a.jpg")))
    np.testing.assert_allclose(index.embedding_matrix()[row], faces[0]["tasks"]["recog_ms1mv3"]["embedding"],
                               atol=1e-5)


def test_a_query_finds_its_own_photo_first(index):
    for path, identity in ((IMAGES / "grace_hopper.jpg", "hopper"), (IMAGES / "astronaut.png", "astronaut")):
        result = index.search(str(path), k=3)
        assert len(result) == 1
        best = result[0]["matches"][0]
        assert best["similarity"] >= 0.999 and best["identity"] == identity and not result[0]["unknown"]
        assert result[0]["face"]["quality"]["score"] > 0
        assert [m["similarity"] for m in result[0]["matches"]] == sorted(
            (m["similarity"] for m in result[0]["matches"]), reverse=True)


def test_threshold_open_set_k_larger_than_gallery_and_embeddings(index):
    result = index.search(str(IMAGES / "grace_hopper.jpg"), k=50, threshold=1.01)[0]
    assert result["unknown"] and result["matches"] == [] and result["identity"] is None
    assert len(index.search(str(IMAGES / "grace_hopper.jpg"), k=50)[0]["matches"]) == 4
    by_embedding = index.search_batch(index.embedding_matrix()[:2], k=1)
    assert [r[0]["matches"][0]["row"] for r in by_embedding] == [0, 1]
    low = index.search(str(IMAGES / "grace_hopper.jpg"), min_quality={"face_size": 1000})[0]
    assert low["low_quality"] and low["matches"] == []


def test_bad_queries(index):
    with pytest.raises(FaceIndexError, match="k must be a positive integer"):
        index.search(str(IMAGES / "astronaut.png"), k=0)
    with pytest.raises(FaceIndexError, match="k must be a positive integer"):
        index.nearest(index.embedding_matrix()[:1], k=-3)
    with pytest.raises(FaceIndexError, match="query embeddings are 8-d"):
        index.search(np.ones(8))
    blank = np.full((200, 300, 3), 127, dtype=np.uint8)
    assert index.search(blank) == []  # no face: nothing to search, honestly empty


def test_empty_gallery_is_an_error(pipe, tmp_path):
    with pytest.raises(FaceIndexError, match="gallery is empty"):
        FaceIndex.from_embeddings(np.zeros((0, 512)))
    PIL.Image.fromarray(np.full((120, 160, 3), 90, dtype=np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(FaceIndexError, match="no face to index: 1 images read, 1 without a face"):
        FaceIndex.build(pipe, [str(tmp_path)])


def test_faiss_top_k_equals_numpy_top_k():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((3000, 64)).astype(np.float32)
    queries = rng.standard_normal((40, 64)).astype(np.float32)
    flat = FaceIndex.from_embeddings(gallery, backend="faiss")
    exact = FaceIndex.from_embeddings(gallery, backend="numpy")
    faiss_scores, faiss_rows = flat.nearest(queries, 10)
    numpy_scores, numpy_rows = exact.nearest(queries, 10)
    np.testing.assert_array_equal(faiss_rows, numpy_rows)
    np.testing.assert_allclose(faiss_scores, numpy_scores, atol=1e-5)
    # block-wise numpy top-k == one argsort over everything
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    _, blocked = exact_top_k(unit, q, 10, block=700)
    np.testing.assert_array_equal(blocked, np.argsort(-(q @ unit.T), axis=1)[:, :10])


def test_ivf_index_with_search_parameters(tmp_path):
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((50, 32))
    gallery = (centers[rng.integers(0, 50, 2000)] + 0.3 * rng.standard_normal((2000, 32))).astype(np.float32)
    ivf = FaceIndex.from_embeddings(gallery, index_factory="IVF16,Flat", search_parameters={"nprobe": 16})
    exact = FaceIndex.from_embeddings(gallery, backend="numpy")
    np.testing.assert_array_equal(ivf.nearest(gallery[:20], 5)[1], exact.nearest(gallery[:20], 5)[1])
    ivf.save(tmp_path / "ivf")
    loaded = FaceIndex.load(tmp_path / "ivf")
    assert loaded.index_factory == "IVF16,Flat" and loaded.search_parameters == {"nprobe": 16}
    np.testing.assert_array_equal(loaded.nearest(gallery[:20], 5)[1], exact.nearest(gallery[:20], 5)[1])
    with pytest.raises(FaceIndexError, match="does not apply"):
        FaceIndex.from_embeddings(gallery, search_parameters={"no_such_parameter": 3})


def test_clusters_keep_copies_of_one_photo_together(index):
    for method in ("agglomerative", "graph"):
        labels = index.cluster(threshold=0.9, method=method)
        identities = index.gallery["identity"]
        astronaut = {labels[i] for i, who in enumerate(identities) if who == "astronaut"}
        hopper = {labels[i] for i, who in enumerate(identities) if who == "hopper"}
        assert len(astronaut) == 1 and len(hopper) == 1 and astronaut != hopper, (method, labels)
    assert list(index.cluster(threshold=0.9, min_size=2)) == [0, 0, 0, -1]
    with pytest.raises(ValueError, match="min_size"):
        index.cluster(min_size=0)


def test_save_load_round_trip_and_another_model(index, pipe, tmp_path):
    index.cluster(threshold=0.9)
    index.save(tmp_path / "gallery")
    assert (tmp_path / "gallery" / "README.md").read_text().startswith("---")
    loaded = FaceIndex.load(tmp_path / "gallery", pipe)
    assert loaded.gallery["source"] == index.gallery["source"] and list(loaded.clusters) == list(index.clusters)
    assert loaded.search(str(IMAGES / "astronaut.png")) == index.search(str(IMAGES / "astronaut.png"))
    # the rows alone, as datasets reads the folder
    rows = datasets.load_dataset(str(tmp_path / "gallery"), split="train")
    assert len(rows) == 4 and "cluster" in rows.column_names
    torch.manual_seed(1)
    other = FaceptorModel(tiny_config(tasks=SIX_TASKS)).eval()
    with pytest.raises(ModelMismatchError, match="built with another model"):
        FaceIndex.load(tmp_path / "gallery", pipeline("face-analysis", model=other,
                                                      image_processor=FaceptorImageProcessor()))
    without_model = FaceIndex.load(tmp_path / "gallery")
    with pytest.raises(FaceIndexError, match="no model to embed query photos"):
        without_model.search(str(IMAGES / "astronaut.png"))


def test_corrupt_index_folders(index, tmp_path):
    with pytest.raises(FaceIndexError, match="no such folder"):
        FaceIndex.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceIndexError, match="face_index.json is missing"):
        FaceIndex.load(tmp_path / "empty")
    cases = {"info": ("face_index.json", b"{not json"), "data": (os.path.join("data", "train-00000-of-00001.parquet"),
                                                               b"PAR1 cut short"),
             "faiss": ("faiss.index", b"garbage")}
    for name, (file_name, content) in cases.items():
        folder = index.save(tmp_path / name)
        Path(folder, file_name).write_bytes(content)
        with pytest.raises(FaceIndexError, match=file_name.replace(os.sep, ".")):
            FaceIndex.load(folder)


def test_from_results_dataset(index):
    """The columns the analysis results dataset has (source, face_index, box, score, keypoints, quality,
    embedding), with a row without an embedding and an identity column of another name."""
    rows = index.gallery.remove_columns(["identity"]).to_list()
    for row, person in zip(rows, ["a", "a", "a", "h"]):
        row["person"] = person
    rows.append({**rows[0], "embedding": None, "person": "x"})
    rows[1]["quality"] = {**rows[1]["quality"], "score": 0.01}
    results = datasets.Dataset.from_list(rows)
    built = FaceIndex.from_results(results, identity_column="person")
    assert len(built) == 4 and built.gallery["identity"] == ["a", "a", "a", "h"]
    np.testing.assert_allclose(built.embedding_matrix(), index.embedding_matrix(), atol=1e-6)
    assert len(FaceIndex.from_results(results, min_quality=0.1)) == 3
    with pytest.raises(FaceIndexError, match="no 'embedding' column"):
        FaceIndex.from_results(results.remove_columns(["embedding"]))


def test_interrupted_build_resumes(pipe, photos, tmp_path):
    first = FaceIndex.build(pipe, [str(photos / "astronaut")], resume_dir=tmp_path / "work", chunk_size=1)
    again = FaceIndex.build(pipe, [str(photos)], resume_dir=tmp_path / "work", chunk_size=1)
    assert again.report.resumed == 3 and len(again) == 4
    np.testing.assert_array_equal(again.embedding_matrix()[:3], first.embedding_matrix())


def test_index_commands(checkpoint, photos, tmp_path, capsys):
    output = tmp_path / "cli"
    status = main(["index", "build", str(photos), "--model", str(checkpoint), "--output", str(output),
                   "--identity-column", "folder"])
    captured = capsys.readouterr()
    assert status == 1 and "4 faces of 5 images indexed" in captured.out and "broken.jpg" in captured.err
    assert not (output / ".build").exists()
    blank = tmp_path / "blank.png"
    PIL.Image.fromarray(np.full((120, 160, 3), 90, dtype=np.uint8)).save(blank)
    status = main(["index", "search", str(output), str(IMAGES / "grace_hopper.jpg"), str(blank), "-k", "2",
                   "--json", "--model", str(checkpoint)])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert status == 1 and "blank.png: no face found" in captured.err
    assert report[0]["faces"][0]["matches"][0]["identity"] == "hopper" and report[1]["faces"] == []
    assert main(["index", "search", str(output), str(IMAGES / "astronaut.png"), "--model", str(checkpoint)]) == 0
    assert "astronaut (1.000)" in capsys.readouterr().out
    assert main(["index", "cluster", str(output), "--threshold", "0.9"]) == 0
    assert "4 faces in 2 clusters" in capsys.readouterr().out
    assert "cluster" in FaceIndex.load(output).rows().column_names
    for argv, message in ((["index", "search", str(tmp_path / "absent"), "q.jpg", "--model", str(checkpoint)],
                           "no such folder"),
                          (["index", "search", str(output), "q.jpg", "-k", "0", "--model", str(checkpoint)],
                           "-k must be a positive"),
                          (["index", "cluster", str(tmp_path)], "face_index.json is missing")):
        assert main(argv) == 2
        assert message in capsys.readouterr().err


HUB_ROUND_TRIP = """
import sys, json, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_config, SIX_TASKS
from transformers import pipeline
from faceptor_hf import FaceptorModel, FaceptorImageProcessor
from faceptor_hf.search import FaceIndex
torch.manual_seed(0)
pipe = pipeline("face-analysis", model=FaceptorModel(tiny_config(tasks=SIX_TASKS)).eval(),
                image_processor=FaceptorImageProcessor())
index = FaceIndex.load({folder!r}, pipe)
index.push_to_hub("user/faces")
pulled = FaceIndex.from_hub("user/faces", pipe)
print(json.dumps({{"rows": len(pulled), "same": pulled.search({query!r}) == index.search({query!r})}}))
"""


@pytest.mark.slow
def test_hub_round_trip_on_the_loopback_server(index, tmp_path):
    from hub_server import FakeHub

    folder = index.save(tmp_path / "gallery")
    with FakeHub() as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_fake", HF_HUB_DISABLE_XET="1",
                   HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT))
        env.pop("HF_HUB_OFFLINE", None)
        script = HUB_ROUND_TRIP.format(tests=str(ROOT / "tests"), folder=folder,
                                       query=str(IMAGES / "grace_hopper.jpg"))
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:] + "\n" + "\n".join(hub.unknown)
        assert json.loads(result.stdout.strip().splitlines()[-1]) == {"rows": 4, "same": True}
        files = hub.files("datasets/user/faces")
        assert {"README.md", "face_index.json", "faiss.index", "data/train-00000-of-00001.parquet"} <= set(files)
