"""faceptor_hf.demo through gradio_client: every tab's endpoint of a served app (a tiny untrained model, a face index
of the shipped photos), the tabs that are left out, bad input as one error message; ``faceptor-hf demo``'s
mistakes; and ``faceptor_hf.hub.push_space`` against the loopback Hub (tests/hub_server.py), whose Space app runs
and answers."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import gradio
import numpy as np
import PIL.Image
import pytest
import torch
from gradio_client import Client, handle_file

from faceptor_hf import FaceAnalysisPipeline, FaceptorImageProcessor, FaceptorModel
from faceptor_hf.commands import main
from faceptor_hf.demo import build_demo, demo_theme, track_rows
from faceptor_hf.visualization import UNTRAINED_BANNER

from conftest import IMAGES, SIX_TASKS, tiny_config

ROOT = Path(__file__).parent.parent
ASTRONAUT, HOPPER = str(IMAGES / "astronaut.png"), str(IMAGES / "grace_hopper.jpg")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_pipeline() -> FaceAnalysisPipeline:
    """An untrained tiny six-task model, as `--random-weights` gives (its outputs and page carry the banner)."""
    torch.manual_seed(0)
    model = FaceptorModel(tiny_config(tasks=SIX_TASKS)).eval()
    assert model.is_untrained
    return FaceAnalysisPipeline(model=model, image_processor=FaceptorImageProcessor())


def launch(demo) -> str:
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                theme=demo_theme())
    return demo.local_url


@pytest.fixture(scope="module")
def gradio_env(tmp_path_factory):
    """Gradio's upload cache under the test's tmp folder, and no analytics."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        yield


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def served(gradio_env, pipe, tmp_path_factory):
    """The demo of ``pipe`` with a Search tab over an index folder of the two shipped photos, served on 127.0.0.1,
    and a gradio_client for it."""
    from faceptor_hf.search import FaceIndex

    folder = tmp_path_factory.mktemp("gallery")
    FaceIndex.build(pipe, [ASTRONAUT, HOPPER]).save(folder)
    demo = build_demo(pipe, index=str(folder))
    url = launch(demo)
    yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


def endpoints(client: Client) -> set[str]:
    return set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


@pytest.mark.slow  # a Gradio server
def test_analyze_endpoint_gives_overlay_table_and_json(served, pipe):
    overlay, table, faces, faces_file = served.predict(handle_file(ASTRONAUT), api_name="/analyze")
    expected = pipe(ASTRONAUT, mask_format="rle")
    assert len(faces) == len(expected) == 1
    np.testing.assert_allclose(faces[0]["box"], expected[0]["box"], atol=0.01)
    assert set(faces[0]["tasks"]) == set(SIX_TASKS)
    assert faces[0]["tasks"]["parsing_celebam"]["mask"] == {"size": [512, 512], "counts": "in faces.json"}
    full = json.loads(Path(faces_file).read_text())  # the whole result, masks run-length encoded
    assert full[0]["tasks"]["parsing_celebam"]["mask"] == expected[0]["tasks"]["parsing_celebam"]["mask"]
    np.testing.assert_allclose(full[0]["tasks"]["recog_ms1mv3"]["embedding"],
                               expected[0]["tasks"]["recog_ms1mv3"]["embedding"], atol=1e-5)
    # one row per face: number, detector score, box, quality, then the tasks whose type has a summary
    assert table["headers"] == ["face", "detector score", "box", "quality", "age_morph2", "biattr_celeba",
                                "affect_affectnet"]
    (row,) = table["data"]
    assert row[0] == 1 and row[2] == " ".join(str(round(v)) for v in expected[0]["box"])
    assert row[3] == expected[0]["quality"]["score"] and row[4].startswith("age ")
    image = PIL.Image.open(overlay).convert("RGB")
    assert image.size == PIL.Image.open(ASTRONAUT).size
    banner = np.asarray(image)[2:10, 2:50].reshape(-1, 3)
    assert (banner[:, 0] > 150).mean() > 0.5 and (banner[:, 1] < 80).mean() > 0.5  # the red UNTRAINED banner


@pytest.mark.slow  # a Gradio server
def test_verify_endpoint_matches_pipe_verify(served, pipe):
    similarity, decision = served.predict(handle_file(HOPPER), handle_file(ASTRONAUT), 0.3, api_name="/verify")
    expected = pipe.verify(HOPPER, ASTRONAUT)
    assert similarity == pytest.approx(expected["similarity"], abs=1e-5)
    assert decision.startswith("same person" if expected["same"] else "different people")
    assert UNTRAINED_BANNER in decision
    same, decision = served.predict(handle_file(HOPPER), handle_file(HOPPER), 0.3, api_name="/verify")
    assert same == pytest.approx(1.0, abs=1e-4) and decision.startswith("same person")


@pytest.mark.slow  # a Gradio server
def test_verify_without_a_face_is_one_error_message(served, tmp_path):
    blank = tmp_path / "blank.png"
    PIL.Image.new("RGB", (160, 120), (128, 128, 128)).save(blank)
    with pytest.raises(Exception, match="no face found to verify"):
        served.predict(handle_file(str(blank)), handle_file(ASTRONAUT), 0.3, api_name="/verify")
    # the app keeps serving
    similarity, _ = served.predict(handle_file(ASTRONAUT), handle_file(ASTRONAUT), 0.3, api_name="/verify")
    assert similarity == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow  # a Gradio server
def test_search_endpoint_finds_the_query_photo_first(served):
    table, results = served.predict(handle_file(HOPPER), 2, -1.0, api_name="/search")
    assert table["headers"] == ["face", "rank", "identity", "source", "similarity"]
    assert len(results) == 1 and len(results[0]["matches"]) == 2
    best = results[0]["matches"][0]
    assert best["source"].endswith("grace_hopper.jpg") and best["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert table["data"][0][:2] == [1, 1] and table["data"][0][3].endswith("grace_hopper.jpg")
    # a threshold between the two similarities drops the other photo (open set)
    between = (best["similarity"] + results[0]["matches"][1]["similarity"]) / 2
    table, results = served.predict(handle_file(HOPPER), 2, between, api_name="/search")
    assert [match["source"] for match in results[0]["matches"]] == [best["source"]] and len(table["data"]) == 1


@pytest.mark.slow  # a Gradio server
def test_tabs_follow_what_is_available(served, pipe, gradio_env, monkeypatch):
    import faceptor_hf.demo as demo_module

    names = endpoints(served)
    assert {"/analyze", "/verify", "/search"} <= names
    assert ("/video" in names) == (demo_module.video_module() is not None)
    monkeypatch.setattr(demo_module, "video_module", lambda: None)  # PyAV missing
    bare = build_demo(pipe)  # no index: no Search tab
    apis = {fn.api_name for fn in bare.fns.values()}
    assert apis == {"analyze", "verify"}


@dataclass
class StandInAnalysis:
    frames_path: str
    tracks_path: str
    render_path: str
    num_frames: int
    tracks: list = field(default_factory=list)


def write_clip(path: Path, frames: int = 4) -> str:
    """A short 320x240 H.264 clip of the astronaut photo (PyAV)."""
    import av

    picture = np.asarray(PIL.Image.open(ASTRONAUT).convert("RGB").resize((320, 240)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


@pytest.mark.slow  # a Gradio server
def test_video_endpoint_passes_the_clip_and_tabulates_tracks(pipe, gradio_env, tmp_path, monkeypatch):
    """The Video tab's plumbing with a stand-in ``analyze_video`` (the contract of faceptor_hf.video): the clip,
    output folder, ``every`` and render path reach it; its rendered clip and per-track summaries come back."""
    import faceptor_hf.demo as demo_module

    calls = []

    def analyze_video(pipe_, source, output_dir, *, every=1, render=None, tasks=None, resume=True, progress=True,
                      **options):
        calls.append({"pipe": pipe_, "source": source, "every": every, "render": render, "progress": progress})
        shutil.copy(source, render)
        return StandInAnalysis(os.path.join(output_dir, "frames.jsonl"), os.path.join(output_dir, "tracks.jsonl"),
                               render, 4, [
                                   {"track_id": 0, "first_frame": 0, "last_frame": 3, "first_time": 0.0,
                                    "last_time": 0.6, "best_frame": 2, "best_box": [1, 2, 3, 4], "embedding": [0.1] * 8,
                                    "tasks": {"age_morph2": {"median_age": 31.0},
                                              "affect_affectnet": {"label_histogram": {"happy": 3, "neutral": 1}}}}])

    monkeypatch.setattr(demo_module, "video_module", lambda: types.SimpleNamespace(analyze_video=analyze_video))
    demo = build_demo(pipe)
    client = Client(launch(demo), verbose=False, download_files=str(tmp_path / "downloads"))
    try:
        clip = write_clip(tmp_path / "clip.mp4")
        rendered, tracks, summary = client.predict(handle_file(clip), 2, api_name="/video")
    finally:
        demo.close()
    (call,) = calls
    assert call["pipe"] is pipe and call["every"] == 2 and call["progress"] is False
    assert os.path.basename(call["source"]) == "clip.mp4" and call["render"].endswith("rendered.mp4")
    assert Path(rendered).read_bytes() == Path(clip).read_bytes()
    assert tracks["headers"] == ["track_id", "first_frame", "last_frame", "first_time", "last_time", "best_frame",
                                 "age_morph2 median_age", "affect_affectnet label_histogram"]
    assert tracks["data"] == [[0, 0, 3, 0.0, 0.6, 2, 31.0, "happy 3, neutral 1"]]
    assert summary == "4 frames analyzed, 1 face tracks"


@pytest.mark.slow  # a Gradio server
def test_video_endpoint_runs_the_real_analyze_video(served, tmp_path):
    """The real ``analyze_video`` on the test clip (6 frames, every 2nd analyzed): the rendered clip has
    every frame, the tracks table has a row per track with the tasks' summaries."""
    import av

    from video_clips import make_clip

    clip = tmp_path / "clip.mp4"
    make_clip(clip, num_frames=6)
    rendered, tracks, summary = served.predict(handle_file(str(clip)), 2, api_name="/video")
    with av.open(rendered) as output:
        assert sum(1 for _ in output.decode(video=0)) == 6
    assert summary.startswith("3 frames analyzed") and tracks["data"]
    assert tracks["headers"][0] == "track_id" and "age_morph2 median_age" in tracks["headers"]


def test_track_rows_keep_cells_and_drop_vectors():
    attributes = {"Smiling": 0.9, "Bald": 0.1, "Young": 0.5, "Male": 0.2}
    headers, rows = track_rows([
        {"track_id": 1, "embedding": [0.0, 1.0], "tasks": {"biattr_celeba": {"mean_attributes": attributes},
                                                           "recog_x": {"mean_embedding": [1.0, 0.0]}}},
        {"track_id": 2, "best_quality": None, "extra": {"note": "x"}}])
    assert headers == ["track_id", "biattr_celeba mean_attributes", "best_quality", "extra note"]
    assert rows == [[1, "Smiling 0.90, Young 0.50, Male 0.20", None, None], [2, None, None, "x"]]


# ---- faceptor-hf demo -----------------------------------------------------------------------------------------------
def test_demo_command_mistakes(capsys, tmp_path):
    assert main(["demo"]) == 2 and "no model given" in capsys.readouterr().err
    assert main(["demo", "--random-weights", "--index", str(tmp_path / "missing")]) == 2
    assert "--index" in capsys.readouterr().err
    assert main(["demo", "--random-weights", "--port", "0"]) == 2 and "--port" in capsys.readouterr().err


def test_demo_command_launches_the_app_of_the_model(checkpoint, gradio_env, monkeypatch):
    """`faceptor-hf demo --model DIR --host --port` builds the app of that model and launches it there with the
    offline theme (launch itself is recorded instead of serving forever)."""
    launched = []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda demo, **options: launched.append((demo, options)))
    assert main(["demo", "--model", str(checkpoint), "--host", "127.0.0.1", "--port", "7999"]) == 0
    ((demo, options),) = launched
    assert {fn.api_name for fn in demo.fns.values()} >= {"analyze", "verify"}
    assert (options["server_name"], options["server_port"]) == ("127.0.0.1", 7999)
    assert options["theme"].to_dict() == demo_theme().to_dict()


# ---- push_space ---------------------------------------------------------------------------------------------------
@pytest.mark.slow  # a Gradio server
def test_push_space_writes_a_space_that_serves_the_model(tmp_path, monkeypatch):
    """One commit with app.py, requirements.txt and a README saying sdk: gradio and models: [model]; the app, run
    as a Space runs it (python app.py) against the loopback Hub, loads the pushed model and answers /analyze."""
    from huggingface_hub import SpaceCard, constants

    from faceptor_hf.hub import push_space, push_to_hub

    from hub_server import FakeHub

    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        torch.manual_seed(0)
        push_to_hub("user/faceptor-tiny", model=FaceptorModel(tiny_config(tasks=SIX_TASKS)).eval(),
                    processor=FaceptorImageProcessor(), token="hf_fake")
        push_space("user/faceptor-demo", "user/faceptor-tiny", token="hf_fake")
        assert hub.commit_count("spaces/user/faceptor-demo") == 1 and hub.space_sdks == {
            "spaces/user/faceptor-demo": "gradio"}
        files = hub.files("spaces/user/faceptor-demo")
        assert set(files) == {"app.py", "requirements.txt", "README.md"}
        card = SpaceCard(files["README.md"].decode())
        assert card.data.sdk == "gradio" and card.data.models == ["user/faceptor-tiny"]
        assert card.data.app_file == "app.py" and card.data.sdk_version == gradio.__version__
        from faceptor_hf import __version__

        assert files["requirements.txt"].decode() == f"faceptor-hf[demo]=={__version__}\n"

        space = tmp_path / "space"
        space.mkdir()
        for name, content in files.items():
            (space / name).write_bytes(content)
        port = free_port()
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_SERVER_NAME="127.0.0.1",
                   GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(tmp_path / "gradio"), PYTHONPATH=str(ROOT),
                   OMP_NUM_THREADS="2")
        env.pop("HF_HUB_OFFLINE", None)
        log = tmp_path / "app.log"
        with open(log, "w") as output:
            app = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while "Running on local URL" not in log.read_text():
                assert app.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads"))
            _, table, faces, _ = client.predict(handle_file(ASTRONAUT), api_name="/analyze")
        finally:
            app.terminate()
            app.wait(timeout=30)
        assert len(faces) == 1 and table["data"][0][0] == 1
        assert "faces" not in json.dumps(hub.unknown), hub.unknown
