"""Publishing through a loopback Hub-compatible server (tests/hub_server.py on 127.0.0.1), loading back in a
process where faceptor_hf cannot be imported, offline cache behavior, and failed uploads."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hub_server import FakeHub

pytestmark = pytest.mark.slow  # a loopback Hub server and a subprocess per scenario

ROOT = Path(__file__).parent.parent
IMAGES = ROOT / "examples" / "images"
REPO = "user/faceptor-tiny"

PUSH = """
import sys, json, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from faceptor_hf import FaceptorModel, FaceptorImageProcessor
from faceptor_hf.hub import push_to_hub
torch.manual_seed({seed})
torch.set_num_threads(2)
model = FaceptorModel(tiny_config(tasks=["recog_ms1mv3", "age_morph2", "affect_rafdb", "parsing_celebam",
                                         "align_300w"])).eval()
model.is_untrained = {untrained!r}  # stands in for a trained model unless the test says otherwise
x112 = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
x512 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    expected = model(pixel_values=x112, dense_pixel_values=x512).task_logits
torch.save({{"x112": x112, "x512": x512, "expected": expected}}, {io!r})
info = push_to_hub({repo!r}, model=model, processor=FaceptorImageProcessor(), revision={revision!r},
                   tags=["faceptor-test-tag"])
print("MODEL AND PROCESSOR", info.oid)
"""

LOAD = """
import sys, json, torch
sys.modules["faceptor_hf"] = None  # the package must not be importable here
torch.set_num_threads(2)
from transformers import AutoModel, pipeline
model = AutoModel.from_pretrained({repo!r}, trust_remote_code=True, revision={revision!r}).eval()
assert "transformers_modules" in type(model).__module__, type(model).__module__
io = torch.load({io!r})
with torch.no_grad():
    out = model(pixel_values=io["x112"], dense_pixel_values=io["x512"]).task_logits
for name, value in io["expected"].items():
    # identical weights and code; only float32 kernel dispatch across processes may differ (seen: 1.5e-8)
    torch.testing.assert_close(out[name], value, atol=1e-6, rtol=1e-6, msg=name)
pipe = pipeline(model={repo!r}, trust_remote_code=True, revision={revision!r})
faces = pipe({image!r}, tasks=["age_morph2", "align_300w"])
print("LOADED", json.dumps({{"faces": len(faces), "age": faces[0]["tasks"]["age_morph2"]["age"]}}))
"""


def run(script: str, hub: FakeHub, home: Path, offline: bool = False, timeout: int = 300):
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_fake", HF_HUB_DISABLE_XET="1",
               HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT))
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=home.parent)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny model + processor pushed to the loopback Hub (main and branch v1), shared by the tests below."""
    root = tmp_path_factory.mktemp("hub")
    with FakeHub() as hub:
        for revision in (None, "v1"):
            io = root / f"io_{revision}.pt"
            result = run(PUSH.format(tests=str(ROOT / "tests"), repo=REPO, revision=revision, io=str(io), seed=0,
                                     untrained=False), hub, root / "push_home")
            assert "PROCESSOR" in result.stdout, result.stderr[-3000:]
        yield hub, root


def test_push_publishes_everything_in_one_commit(published):
    hub, _ = published
    files = hub.files(REPO)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_faceptor.py",
            "configuration_faceptor.py", "image_processing_faceptor.py", "pipeline_face_analysis.py",
            "face_detection.py"} <= set(files)
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModel"] == "modeling_faceptor.FaceptorModel"
    assert config["custom_pipelines"]["face-analysis"]["impl"] == "pipeline_face_analysis.FaceAnalysisPipeline"
    processor = json.loads(files["preprocessor_config.json"])
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_faceptor.FaceptorImageProcessor"
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "pipeline_tag: image-feature-extraction" in card
    assert "faceptor-test-tag" in ModelCard(card).data.tags and "faceptor" in ModelCard(card).data.tags
    assert f'"{REPO}"' in card or REPO in card
    assert "`parsing_celebam`" in card and "`align_aflw`" not in card  # this model's tasks, not the full list
    assert hub.commit_count(REPO) == 2  # model + processor + card in one commit on main, then one on v1
    assert not [u for u in hub.unknown if "/api/agent-harnesses" not in u], hub.unknown


@pytest.mark.parametrize("revision", [None, "v1"])
def test_load_through_the_hub_without_the_package(published, revision):
    hub, root = published
    result = run(LOAD.format(repo=REPO, revision=revision, io=str(root / f"io_{revision}.pt"),
                             image=str(IMAGES / "astronaut.png")), hub, root / f"load_home_{revision}")
    assert "LOADED" in result.stdout, result.stderr[-3000:]
    assert json.loads(result.stdout.split("LOADED", 1)[1])["faces"] == 1


IDENTITY = """
import json
from faceptor_hf.loading import ModelSource, load_model, model_identity
source = ModelSource({repo!r}, revision={revision!r}).pinned()
model, _ = load_model(source, allow_onnx=True)
print("IDENTITY", json.dumps(model_identity(source)))
"""


@pytest.mark.parametrize("revision", [None, "v1"])
def test_a_hub_model_is_identified_by_the_commit_it_loaded(published, revision):
    """analyze's run_key names the commit the revision was pinned to (HfApi.resolve_revision) and loaded from."""
    hub, root = published
    result = run(IDENTITY.format(repo=REPO, revision=revision), hub, root / f"identity_home_{revision}")
    assert "IDENTITY" in result.stdout, result.stderr[-3000:]
    identity = json.loads(result.stdout.split("IDENTITY", 1)[1])
    assert identity == {"model": REPO, "revision": revision, "commit": hub.resolve(REPO, revision or "main")}


def test_offline_loads_from_cache_and_explains_missing_models(published):
    hub, root = published
    home = root / "offline_home"
    load_script = LOAD.format(repo=REPO, revision=None, io=str(root / "io_None.pt"),
                              image=str(IMAGES / "astronaut.png"))
    first = run(load_script, hub, home)
    assert "LOADED" in first.stdout, first.stderr[-2000:]
    cached = run(load_script, hub, home, offline=True)
    assert "LOADED" in cached.stdout, cached.stderr[-2000:]
    env_script = """
    import subprocess, sys
    sys.exit(subprocess.run([sys.executable, "-m", "faceptor_hf.cli", "analyze", {image!r}, "--model", "user/absent",
                             "--output-dir", {out!r}]).returncode)
    """
    missing = run(env_script.format(image=str(IMAGES / "astronaut.png"), out=str(root / "out")), hub, home,
                  offline=True)
    assert missing.returncode == 2
    assert "user/absent" in missing.stderr and "Offline mode is on" in missing.stderr


def test_second_push_updates_card_and_keeps_files(published):
    hub, root = published
    before = hub.files(REPO)
    result = run(PUSH.format(tests=str(ROOT / "tests"), repo=REPO, revision=None, io=str(root / "io_again.pt"),
                             seed=0, untrained=True), hub, root / "push_home")
    assert "MODEL" in result.stdout, result.stderr[-3000:]
    after = hub.files(REPO)
    assert set(before) <= set(after)
    assert b"UNTRAINED RANDOM WEIGHTS" in after["README.md"] and b"UNTRAINED" not in before["README.md"]
    assert after["preprocessor_config.json"] == before["preprocessor_config.json"]


# huggingface_hub retries a failed LFS upload 5 times with backoff waits of 1, 2, 4, 8 and 8 s (http_backoff). The
# client still makes every attempt against the server; its waits are recorded instead of slept, so each case does
# not spend 23 s asleep.
RECORD_BACKOFF_WAITS = """
import atexit, sys, types
import huggingface_hub.utils._http as hub_http
waits = []
hub_http.time = types.SimpleNamespace(sleep=waits.append)
atexit.register(lambda: print("BACKOFF WAITS", len(waits), file=sys.stderr))
"""


@pytest.mark.parametrize("stage, mode", [("lfs", "500"), ("lfs", "drop"), ("commit", "500"), ("commit", "drop")])
def test_failed_upload_leaves_no_half_written_revision(published, stage, mode):
    hub, root = published
    head, files = hub.resolve(REPO, "main"), hub.files(REPO)
    hub.fail = {stage: mode}
    try:
        # new random weights, so the LFS blob is new and really has to be uploaded
        push = PUSH.format(tests=str(ROOT / "tests"), repo=REPO, revision=None, io=str(root / "io_fail.pt"),
                           seed=100 + len(stage + mode), untrained=False)
        result = run(RECORD_BACKOFF_WAITS + push, hub, root / "push_home", timeout=600)
    finally:
        hub.fail = {}
    assert result.returncode != 0
    assert "PushError" in result.stderr and "Nothing was committed" in result.stderr, result.stderr[-2000:]
    assert hub.resolve(REPO, "main") == head and hub.files(REPO) == files
    if stage == "lfs":  # the upload was retried as against the Hub before the push gave up
        assert "BACKOFF WAITS 5" in result.stderr, result.stderr[-2000:]


def test_convert_command_pushes_a_converted_checkpoint(published, tmp_path):
    hub, root = published
    golden = ROOT / "tests" / "fixtures" / "golden" / "faceptor_stage1"
    overrides = json.loads((golden / "meta.json").read_text())["config_overrides"]
    script = f"""
    import subprocess, sys
    sys.exit(subprocess.run([sys.executable, "-m", "faceptor_hf.cli", "convert", "--checkpoint",
                             {str(golden / "checkpoint_rank0_iter_50000.pth.tar")!r},
                             "--output", {str(tmp_path / "out")!r},
                             "--config-overrides", {json.dumps(overrides)!r}, "--push-to-hub", "user/converted",
                             "--private"]).returncode)
    """
    result = run(script, hub, root / "push_home")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "pushing model, processor, code and model card to user/converted" in result.stdout
    files = hub.files("user/converted")
    assert {"model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert json.loads(files["config.json"])["converted_from"]["variant"] == "Faceptor (6 tasks), stage 1"
    assert b"Faceptor (6 tasks), stage 1" in files["README.md"]


CLIP_PUSH = """
import torch
from huggingface_hub import HfApi
from transformers import CLIPConfig, CLIPModel
torch.manual_seed(0)
vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=4, num_attention_heads=2, image_size=224,
              patch_size=16, hidden_act="quick_gelu")
text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).save_pretrained({folder!r})
api = HfApi()
api.create_repo("user/clip-tiny", exist_ok=True)
api.upload_folder(folder_path={folder!r}, repo_id="user/clip-tiny")
print("PUSHED")
"""
CLIP_CONVERT = """
import json, sys
from faceptor_hf.commands import main
overrides = dict(hidden_size=24, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48,
                 recognition_layer=3, decoder_levels=[3], decoder_hidden_size=16, decoder_num_layers=2,
                 decoder_num_attention_heads=2, decoder_ffn_dim=32)
sys.exit(main(["convert", "--encoder-checkpoint", {repo!r}, "--preset", "base", "--config-overrides",
               json.dumps(overrides), "--output", {output!r}]))
"""


def test_encoder_checkpoint_from_a_hub_id(tmp_path):
    with FakeHub() as hub:
        pushed = run(CLIP_PUSH.format(folder=str(tmp_path / "clip")), hub, tmp_path / "push_home")
        assert "PUSHED" in pushed.stdout, pushed.stderr[-3000:]
        converted = run(CLIP_CONVERT.format(repo="user/clip-tiny", output=str(tmp_path / "out")), hub,
                        tmp_path / "convert_home")
        assert converted.returncode == 0, converted.stderr[-3000:]
        assert "encoder from user/clip-tiny (transformers-clip" in converted.stdout
        missing = run(CLIP_CONVERT.format(repo="user/no-such-clip", output=str(tmp_path / "none")), hub,
                      tmp_path / "convert_home")
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error: ")]
    assert missing.returncode == 2 and len(errors) == 1 and "user/no-such-clip" in errors[0], missing.stderr[-2000:]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["encoder_init"]["source"] == "user/clip-tiny" and config["untrained"] is True
