"""ONNX Runtime backend: a model object the face-analysis pipeline uses exactly like ``FaceptorModel``.

    model = FaceptorOnnxModel.from_pretrained("faceptor-onnx")     # a folder written by export_onnx
    out = model(pixel_values=x112, dense_pixel_values=x512)        # FaceptorOutput, as FaceptorModel returns

    pipe = pipeline("face-analysis", model="faceptor-onnx")        # AutoModel picks this class for such a folder

Inputs and outputs are torch tensors; ``task_logits`` are the graphs' outputs and ``landmarks`` are decoded from
them by the same ``heatmap_centroids`` as in PyTorch, so the processor and the pipeline post-process ONNX Runtime
results with the very code they use for PyTorch results. The detector graph runs inside ``RetinaFaceDetector``
(its ``network``), which keeps resizing, padding, anchor decoding and NMS shared too.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..face_detection import RetinaFaceDetector
from ..modeling_faceptor import FaceptorModel, FaceptorOutput
from ..task_decoding import heatmap_centroids
from ..task_types import INPUT_SIZE_OF, MODEL_INPUTS, get_task_type
from .configuration import DETECTOR_INPUT, DETECTOR_OUTPUTS, MANIFEST_VERSION, FaceptorOnnxConfig
from .errors import OnnxFolderError, require

logger = logging.getLogger(__name__)

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _providers_for(device: torch.device) -> list:
    """ONNX Runtime execution providers for a torch device: CUDA when asked for and installed, else the CPU."""
    import onnxruntime

    if device.type == "cuda":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        logger.warning("device %s: this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu); "
                       "the ONNX graphs run on the CPU and results are moved to %s", device, device)
    return ["CPUExecutionProvider"]


def default_session_options():
    """All graph optimizations (constant folding, LayerNorm/GELU/attention fusions, layout changes), and worker
    threads that sleep rather than spin between runs: in the pipeline, PyTorch's alignment and post-processing run
    between graph calls and would otherwise share the cores with spinning threads (about 5 % of pipeline speed on
    2 cores, and no loss for the graphs themselves)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxGraph:
    """One ``onnxruntime.InferenceSession`` with its file, checked against what the manifest says it holds."""

    def __init__(self, folder: Path, entry: dict, providers, session_options, expected_outputs: dict | None = None):
        import onnxruntime

        self.path = folder / entry["file"]
        if not self.path.is_file():
            raise OnnxFolderError(f"{self.path}: missing; config.json lists it. Export the folder again "
                                  "(faceptor-hf export onnx)")
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), sess_options=session_options,
                                                        providers=providers)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise OnnxFolderError(f"{self.path}: not a usable ONNX graph ({reason})") from error
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [entry["input"]]:
            raise OnnxFolderError(f"{self.path}: takes {[i.name for i in inputs]}, but config.json says "
                                  f"[{entry['input']!r}]: the file does not belong to this folder")
        self.input_name = entry["input"]
        self.input_type = _NUMPY_TYPES.get(inputs[0].type)
        if self.input_type is None:
            raise OnnxFolderError(f"{self.path}: input type {inputs[0].type} is not float32 or float16")
        outputs = {o.name: o for o in self.session.get_outputs()}
        missing = [name for name in entry["outputs"] if name not in outputs]
        if missing:
            raise OnnxFolderError(f"{self.path}: has no output for {missing} (it has {list(outputs)}), but config.json "
                                  "lists them: the file does not belong to this folder")
        for name, width in (expected_outputs or {}).items():
            shape = outputs[name].shape
            if len(shape) < 2 or (isinstance(shape[1], int) and shape[1] != width):
                raise OnnxFolderError(f"{self.path}: output {name!r} has shape {shape}, but config.json's task has "
                                      f"{width} outputs: the file does not belong to this folder")
        self.output_names = list(entry["outputs"])

    def run(self, pixels: torch.Tensor, output_names: list[str] | None = None) -> list[np.ndarray]:
        array = pixels.detach().to("cpu").numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
        feed = {self.input_name: np.ascontiguousarray(array, dtype=self.input_type)}
        return self.session.run(output_names or self.output_names, feed)


class OnnxRetinaFaceNetwork:
    """The detector graph behind the interface of ``RetinaFaceMobileNet``: (B, 3, H, W) BGR minus the mean ->
    (box offsets, face probabilities, point offsets) as torch tensors on the input's device."""

    def __init__(self, graph: OnnxGraph):
        self.graph = graph

    def to(self, device) -> "OnnxRetinaFaceNetwork":
        return self

    def eval(self) -> "OnnxRetinaFaceNetwork":
        return self

    def __call__(self, batch: torch.Tensor):
        outputs = self.graph.run(batch.float())
        return tuple(torch.from_numpy(output).to(batch.device) for output in outputs)


class FaceptorOnnxModel:
    """A folder written by ``export_onnx``, run with ONNX Runtime, with the calling convention of ``FaceptorModel``.

    ``model(pixel_values=None, dense_pixel_values=None, tasks=None)`` returns a ``FaceptorOutput`` (raw
    ``task_logits`` and decoded ``landmarks``; no hidden states). Each given input runs its graph once for the
    selected tasks of that input. ``to(device)`` chooses where results are returned and, for CUDA with
    onnxruntime-gpu installed, where the graphs run.
    """

    config_class = FaceptorOnnxConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    backend = "onnxruntime"

    def __init__(self, folder, config: FaceptorOnnxConfig | None = None, device="cpu", session_options=None,
                 providers=None):
        require("onnxruntime", purpose="The ONNX Runtime backend")
        self.folder = Path(folder)
        config_path = self.folder / "config.json"
        if config is None:
            if not config_path.is_file():
                raise OnnxFolderError(f"{config_path}: missing; an ONNX folder has the config.json written by "
                                      "faceptor-hf export onnx")
            try:
                config = FaceptorOnnxConfig.from_pretrained(self.folder)
            except Exception as error:  # noqa: BLE001 - JSON and validation errors alike
                raise OnnxFolderError(f"{config_path}: not a faceptor ONNX config ({error})") from error
        manifest = getattr(config, "onnx", None) or {}
        if not manifest.get("graphs"):
            raise OnnxFolderError(f"{config_path}: has no 'onnx' manifest listing graphs; is this an ONNX export "
                                  "(faceptor-hf export onnx)?")
        if int(manifest.get("manifest_version", 0)) > MANIFEST_VERSION:
            raise OnnxFolderError(f"{config_path}: written by a newer faceptor-hf (manifest version "
                                  f"{manifest['manifest_version']}); upgrade faceptor-hf")
        self.config = config
        self.manifest = manifest
        self.name_or_path = str(folder)
        self._session_options = session_options
        self._fixed_providers = providers
        self._device = torch.device(device)
        self._load_graphs()

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, device="cpu", session_options=None,
                        providers=None, dtype=None, **kwargs) -> "FaceptorOnnxModel":
        """Load a local ONNX folder or a Hub repo holding one. ``AutoModel``/``pipeline`` keywords meant for
        PyTorch weights (``trust_remote_code``, ``revision``...) are accepted; a ``dtype`` other than the
        graphs' own is an error (export again with or without ``--fp16``)."""
        folder = str(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(folder, revision=kwargs.get("revision"), token=kwargs.get("token"),
                                       cache_dir=kwargs.get("cache_dir"),
                                       local_files_only=kwargs.get("local_files_only", False))
        model = cls(folder, config=config if isinstance(config, FaceptorOnnxConfig) else None, device=device,
                    session_options=session_options, providers=providers)
        if dtype not in (None, "auto") and dtype != model.dtype:
            raise ValueError(f"{folder} holds {str(model.dtype).replace('torch.', '')} ONNX graphs; dtype={dtype} "
                             "needs an export in that precision (faceptor-hf export onnx [--fp16])")
        return model

    def _load_graphs(self):
        providers = self._fixed_providers or _providers_for(self._device)
        options = self._session_options or default_session_options()
        self.graphs: dict[str, OnnxGraph] = {}
        by_name = {task.name: task for task in self.config.tasks}
        for input_name, entry in self.manifest["graphs"].items():
            if input_name not in MODEL_INPUTS or entry.get("input") != input_name:
                raise OnnxFolderError(f"{self.folder / 'config.json'}: unknown graph input {input_name!r}")
            stray = [name for name in entry["outputs"]
                     if name not in by_name or by_name[name].model_input != input_name]
            if stray:
                raise OnnxFolderError(f"{self.folder / entry['file']}: outputs {stray} are not {input_name} tasks of "
                                      "config.json: the folder's files do not match")
            widths = {name: by_name[name].embedding_size if by_name[name].readout == "embedding"
                      else by_name[name].num_queries for name in entry["outputs"]}
            self.graphs[input_name] = OnnxGraph(self.folder, entry, providers, options, widths)
        produced = {name for graph in self.graphs.values() for name in graph.output_names}
        missing = [task.name for task in self.config.tasks if task.name not in produced]
        if missing:
            raise OnnxFolderError(f"{self.folder / 'config.json'}: tasks {missing} have no graph output")
        detector = self.manifest.get("detector")
        self.detector_graph = None
        if detector:
            if detector.get("input") != DETECTOR_INPUT or list(detector.get("outputs", ())) != list(DETECTOR_OUTPUTS):
                raise OnnxFolderError(f"{self.folder / 'config.json'}: unexpected detector entry {detector}")
            self.detector_graph = OnnxGraph(self.folder, detector, providers, options)

    # ---- the PreTrainedModel surface the pipeline uses ----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.manifest.get("dtype") == "float16" else torch.float32

    @property
    def is_untrained(self) -> bool:
        return bool(getattr(self.config, "untrained", False))

    @property
    def hf_device_map(self):
        return None

    def to(self, device=None, *args, **kwargs) -> "FaceptorOnnxModel":
        """Return results on ``device``; CUDA devices also run the graphs there when onnxruntime-gpu is installed.
        A dtype argument other than the graphs' own is an error."""
        for value in (device, *args, kwargs.get("dtype")):
            if isinstance(value, torch.dtype) and value != self.dtype:
                raise ValueError(f"these ONNX graphs are {self.dtype}; export again for {value}")
        if device is not None and not isinstance(device, torch.dtype):
            device = torch.device(device)
            if device != self._device:
                moved_kind = device.type != self._device.type or device.index != self._device.index
                self._device = device
                if moved_kind and not self._fixed_providers:
                    self._load_graphs()
        return self

    def eval(self) -> "FaceptorOnnxModel":
        return self

    def can_generate(self) -> bool:
        return False

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Copy the folder's graphs and config (what ``Pipeline.save_pretrained`` calls)."""
        target = Path(save_directory)
        target.mkdir(parents=True, exist_ok=True)
        files = [graph.path for graph in self.graphs.values()]
        files += [self.detector_graph.path] if self.detector_graph is not None else []
        for path in files:
            if path.resolve() != (target / path.name).resolve():
                shutil.copyfile(path, target / path.name)
                if Path(f"{path}.data").exists():
                    shutil.copyfile(f"{path}.data", target / f"{path.name}.data")
        config = copy.deepcopy(self.config)
        if hasattr(config, "custom_pipelines"):  # Pipeline.save_pretrained adds one; the folder ships no code
            del config.custom_pipelines
        config.save_pretrained(target)

    def build_face_detector(self, device=None) -> RetinaFaceDetector | None:
        """The default detector of a pipeline on this model: ``RetinaFaceDetector`` running the folder's detector
        graph (None when the folder has none, so the pipeline builds the PyTorch one)."""
        if self.detector_graph is None:
            return None
        return RetinaFaceDetector(device=device or self.device, network=OnnxRetinaFaceNetwork(self.detector_graph))

    # ---- inference ----------------------------------------------------------------------------------------------
    def _check_pixels(self, name: str, pixels):
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels)
        # same checks and messages as FaceptorModel (it reads only self.config), then the graph's fixed crop size
        FaceptorModel._check_pixels(self, name, pixels)
        size = INPUT_SIZE_OF[name]
        if tuple(pixels.shape[2:]) != (size, size):
            raise ValueError(f"{name} has shape {tuple(pixels.shape)}: the ONNX graph takes {size}x{size} crops "
                             "(use FaceptorImageProcessor)")
        return pixels

    def __call__(self, pixel_values=None, dense_pixel_values=None, tasks=None, output_hidden_states=None,
                 return_dict=None, output_attentions=None, **kwargs) -> FaceptorOutput:
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}; the model takes pixel_values, "
                            "dense_pixel_values, tasks and return_dict")
        if output_hidden_states or output_attentions:
            raise ValueError("the ONNX graphs return task outputs only; use the PyTorch model for hidden states "
                             "and attention weights")
        inputs = {"pixel_values": pixel_values, "dense_pixel_values": dense_pixel_values}
        for name, pixels in inputs.items():
            if pixels is not None:
                inputs[name] = self._check_pixels(name, pixels)
        selected = FaceptorModel._select_tasks(self, tasks, inputs)  # same rules and messages as FaceptorModel
        logits = {}
        for input_name, pixels in inputs.items():
            names = [task.name for task in selected if task.model_input == input_name]
            if pixels is None or not names:
                continue
            for name, array in zip(names, self.graphs[input_name].run(pixels, names)):
                logits[name] = torch.from_numpy(array).to(self._device)
        ordered = {task.name: logits[task.name] for task in selected}
        landmarks = {task.name: heatmap_centroids(ordered[task.name]) for task in selected
                     if get_task_type(task).spatial == "points"}
        output = FaceptorOutput(task_logits=ordered, landmarks=landmarks or None,
                                untrained=True if self.is_untrained else None)
        return output if return_dict is not False else output.to_tuple()

    forward = __call__

    def __repr__(self) -> str:
        graphs = ", ".join(graph.path.name for graph in self.graphs.values())
        return f"FaceptorOnnxModel({self.name_or_path!r}: {graphs}; device {self.device})"


__all__ = ["FaceptorOnnxModel", "OnnxGraph", "OnnxRetinaFaceNetwork", "default_session_options"]
