"""faceptor-hf: Faceptor (ECCV 2024) face perception for the Hugging Face stack.

Importing the package registers ``faceptor`` with ``AutoConfig``, ``AutoModel`` and ``AutoImageProcessor`` and the
``face-analysis`` pipeline.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_faceptor import OFFICIAL_TASKS, FaceptorConfig, make_task
from .image_processing_faceptor import FaceptorImageProcessor
from .modeling_faceptor import FaceptorModel, FaceptorOutput, FaceptorPreTrainedModel
from .pipeline_face_analysis import FaceAnalysisError, FaceAnalysisPipeline
from .task_decoding import heatmap_centroids
from .task_types import TASK_TYPES, FaceptorTask, TaskType, get_task_type, register_task_type

__version__ = "0.2.0"

from .analysis import analyze_inputs  # noqa: E402 - package-only; imports no optional extra
from .onnx.configuration import FaceptorOnnxConfig  # noqa: E402 - after __version__, which the export records
from .onnx.runtime import FaceptorOnnxModel  # noqa: E402
from .results_dataset import load_results  # noqa: E402 - package-only; imports datasets only when called

AutoConfig.register("faceptor", FaceptorConfig, exist_ok=True)
AutoModel.register(FaceptorConfig, FaceptorModel, exist_ok=True)
AutoImageProcessor.register(
    FaceptorConfig, image_processor_classes={"pil": FaceptorImageProcessor, "torchvision": FaceptorImageProcessor},
    exist_ok=True,
)
# Saved folders carry their own code so they load with trust_remote_code=True where this package is absent.
FaceptorConfig.register_for_auto_class()
FaceptorModel.register_for_auto_class("AutoModel")
FaceptorImageProcessor.register_for_auto_class("AutoImageProcessor")
PIPELINE_REGISTRY.register_pipeline("face-analysis", pipeline_class=FaceAnalysisPipeline, pt_model=AutoModel,
                                    type="image")
# An ONNX export (faceptor-hf export onnx) has model_type "faceptor_onnx": AutoModel, and so pipeline("face-analysis",
# model=folder), load it as an ONNX Runtime model. Nothing here imports onnx or onnxruntime.
AutoConfig.register(FaceptorOnnxConfig.model_type, FaceptorOnnxConfig, exist_ok=True)
AutoModel.register(FaceptorOnnxConfig, FaceptorOnnxModel, exist_ok=True)
AutoImageProcessor.register(
    FaceptorOnnxConfig, image_processor_classes={"pil": FaceptorImageProcessor, "torchvision": FaceptorImageProcessor},
    exist_ok=True,
)

__all__ = [
    "FaceAnalysisError",
    "FaceAnalysisPipeline",
    "FaceptorConfig",
    "FaceptorImageProcessor",
    "FaceptorModel",
    "FaceptorOnnxConfig",
    "FaceptorOnnxModel",
    "FaceptorOutput",
    "FaceptorPreTrainedModel",
    "FaceptorTask",
    "OFFICIAL_TASKS",
    "TASK_TYPES",
    "TaskType",
    "analyze_inputs",
    "get_task_type",
    "heatmap_centroids",
    "load_results",
    "make_task",
    "register_task_type",
]
