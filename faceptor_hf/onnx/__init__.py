"""ONNX export of Faceptor and the face detector, and an ONNX Runtime backend for the face-analysis pipeline.

    from faceptor_hf.onnx import export_onnx
    export_onnx(model, "faceptor-onnx")                        # faceptor-hf export onnx --model M --output DIR
    pipe = pipeline("face-analysis", model="faceptor-onnx")    # detection and Faceptor run in ONNX Runtime

Needs the ``onnx`` extra (``pip install "faceptor-hf[onnx]"``: onnx, onnxscript, onnxruntime). Importing this
package imports none of them: they are loaded when an export or a session starts. Package-only code: nothing a
saved model ships imports it (the pipeline reaches the ONNX model by duck typing).

Hugging Face's exporter (optimum-onnx) is not used: its only release (0.1.0) requires transformers < 4.58 and
fails to import with transformers 5 (``transformers.utils.generic._CAN_RECORD_REGISTRY`` is gone), and it traces
with the TorchScript exporter rather than dynamo. No export config is registered for it.
"""

from .configuration import DETECTOR_FILE, GRAPH_FILES, FaceptorOnnxConfig
from .errors import MissingOnnxDependency, OnnxExportError, OnnxFolderError
from .export import DEFAULT_OPSET, MIN_OPSET, compare_with_pytorch, export_onnx, max_opset
from .runtime import FaceptorOnnxModel


def is_onnx_folder(path) -> bool:
    """Whether ``path`` is a local folder whose config.json is an ONNX export's (model_type "faceptor_onnx")."""
    import json
    import os

    config = os.path.join(str(path), "config.json")
    if not os.path.isfile(config):
        return False
    try:
        with open(config, encoding="utf-8") as handle:
            return json.load(handle).get("model_type") == FaceptorOnnxConfig.model_type
    except (OSError, ValueError):
        return False


def load_onnx_pipeline(folder, device=None, detector=None, **kwargs):
    """``FaceAnalysisPipeline`` over an ONNX folder, without going through ``transformers.pipeline`` (which
    reaches the same result: ``pipeline("face-analysis", model=folder)``)."""
    from ..image_processing_faceptor import FaceptorImageProcessor
    from ..pipeline_face_analysis import FaceAnalysisPipeline

    model = FaceptorOnnxModel.from_pretrained(folder)
    processor = kwargs.pop("image_processor", None) or FaceptorImageProcessor.from_pretrained(folder)
    return FaceAnalysisPipeline(model=model, image_processor=processor, device=device if device is not None else -1,
                                detector=detector, **kwargs)


__all__ = [
    "DEFAULT_OPSET",
    "DETECTOR_FILE",
    "GRAPH_FILES",
    "MIN_OPSET",
    "FaceptorOnnxConfig",
    "FaceptorOnnxModel",
    "MissingOnnxDependency",
    "OnnxExportError",
    "OnnxFolderError",
    "compare_with_pytorch",
    "export_onnx",
    "is_onnx_folder",
    "load_onnx_pipeline",
    "max_opset",
]
