"""The configuration of an exported ONNX folder: a ``FaceptorConfig`` plus the ``onnx`` manifest.

An ONNX folder (written by ``faceptor_hf.onnx.export_onnx`` / ``faceptor-hf export onnx``) holds::

    config.json                      this config: model_type "faceptor_onnx", the exported tasks, the manifest
    preprocessor_config.json         the FaceptorImageProcessor settings
    faceptor_pixel_values.onnx       112-px tasks (when the export has any)
    faceptor_dense_pixel_values.onnx 512-px tasks (when the export has any)
    retinaface.onnx                  the face detector's network (unless exported without it)

Its own ``model_type`` is what lets ``AutoModel`` (and so ``pipeline("face-analysis", model=folder)``) pick the
ONNX Runtime model for such a folder and ``FaceptorModel`` for a PyTorch one, without looking at file names.
This module imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

from ..configuration_faceptor import FaceptorConfig

#: version of the manifest layout below; a reader refuses a folder written with a newer one
MANIFEST_VERSION = 1
GRAPH_FILES = {"pixel_values": "faceptor_pixel_values.onnx", "dense_pixel_values": "faceptor_dense_pixel_values.onnx"}
DETECTOR_FILE = "retinaface.onnx"
DETECTOR_INPUT = "images"
DETECTOR_OUTPUTS = ("box_offsets", "face_scores", "point_offsets")
# Keys of a PyTorch config that do not describe an ONNX folder (code references, weights layout, pipelines).
_NOT_COPIED = ("auto_map", "architectures", "custom_pipelines", "transformers_version", "model_type", "dtype",
               "torch_dtype", "_name_or_path", "onnx")


class FaceptorOnnxConfig(FaceptorConfig):
    """``FaceptorConfig`` of an ONNX export.

    Args:
        onnx (`dict`): the manifest: ``manifest_version``, ``opset``, ``dtype`` ("float32" or "float16"),
            ``quantization`` (None, or with ``--int8`` ``{"method": "int8-dynamic", "weights", "scope"}``),
            ``exporter`` (what wrote the graphs), ``graphs`` (model input name -> ``{"file", "input",
            "input_size", "outputs"}``; outputs are task names, in the config's task order, each the task's raw
            ``task_logits`` with a dynamic batch dimension) and ``detector`` (None or ``{"file", "input",
            "outputs"}``).
        Everything else: as ``FaceptorConfig``; ``tasks`` lists exactly the exported tasks.
    """

    model_type = "faceptor_onnx"
    # The folder ships no Python code: never write an auto_map or copy code files next to the graphs.
    _auto_class = None

    def __init__(self, onnx: dict | None = None, **kwargs):
        self.onnx = dict(onnx or {})
        super().__init__(**kwargs)

    @classmethod
    def from_model_config(cls, config: FaceptorConfig, tasks, onnx: dict) -> "FaceptorOnnxConfig":
        """The ONNX folder's config from the exported model's: same architecture and labels, ``tasks`` only."""
        values = {key: value for key, value in config.to_dict().items() if key not in _NOT_COPIED}
        values["tasks"] = [task.to_dict() for task in tasks]
        return cls(onnx=onnx, **values)


__all__ = ["DETECTOR_FILE", "DETECTOR_INPUT", "DETECTOR_OUTPUTS", "FaceptorOnnxConfig", "GRAPH_FILES",
           "MANIFEST_VERSION"]
