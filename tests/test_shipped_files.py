"""The exact set of code files a saved model, processor and pipeline ship, and the rule that shipped code never
imports package-only code.

transformers copies every module a shipped file imports relatively (also inside functions) next to the weights;
a relative import of package-only code (training, data, evaluation, commands, hub) would travel to the Hub, and
one of a module that is not there would break loading with trust_remote_code.
"""

import ast
import sys
from pathlib import Path

import pytest
import torch

from faceptor_hf import FaceptorImageProcessor, FaceptorModel
from faceptor_hf.hub import save_release

from conftest import tiny_config

PACKAGE = Path(__file__).parent.parent / "faceptor_hf"
MODEL_FILES = {"configuration_faceptor.py", "modeling_faceptor.py", "task_types.py", "task_decoding.py"}
PROCESSOR_FILES = {"image_processing_faceptor.py", "face_alignment.py", "dataset_crops.py", "tanh_warp.py",
                   "image_loading.py", "task_types.py", "task_decoding.py"}
PIPELINE_FILES = MODEL_FILES | PROCESSOR_FILES | {"pipeline_face_analysis.py", "face_detection.py",
                                                     "face_quality.py", "face_tracking.py", "video_frames.py"}
# What a remote-code loader must have installed: the standard library and the design card's packages, nothing of
# faceptor_hf.
ALLOWED_ABSOLUTE = set(sys.stdlib_module_names) | {"numpy", "PIL", "torch", "transformers", "huggingface_hub",
                                                   "safetensors"}
# Packages of the optional ``video`` extra: shipped code imports them only inside a function and inside a ``try``
# (whose ImportError names the extra). transformers' remote-code check skips imports under ``try``, so a saved
# model still loads where they are missing; one at module level would make every remote load require them.
LAZY_OPTIONAL = {"av", "scipy"}


def python_files(folder: Path) -> set[str]:
    return {path.name for path in folder.glob("*.py")}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return FaceptorModel(tiny_config()).eval()


def test_plain_model_save_ships_only_the_model_files(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert python_files(tmp_path) == MODEL_FILES


def test_processor_save_ships_only_the_processing_files(tmp_path):
    FaceptorImageProcessor().save_pretrained(tmp_path)
    assert python_files(tmp_path) == PROCESSOR_FILES


def test_pipeline_save_and_release_ship_the_pipeline_files(tiny_model, tmp_path):
    from faceptor_hf import FaceAnalysisPipeline

    FaceAnalysisPipeline(model=tiny_model, image_processor=FaceptorImageProcessor()).save_pretrained(tmp_path / "pipe")
    assert python_files(tmp_path / "pipe") == PIPELINE_FILES
    save_release(tmp_path / "release", tiny_model, FaceptorImageProcessor())
    assert python_files(tmp_path / "release") == PIPELINE_FILES


def _imports(path: Path):
    """(level, module) of every import statement anywhere in the file, including inside functions."""
    for level, module, _ in _imports_with_place(path):
        yield level, module


def _imports_with_place(path: Path):
    """(level, module, lazy) of every import statement; ``lazy``: inside a function and inside a ``try`` body."""
    def visit(node, in_function: bool, in_try: bool):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", in_function and in_try
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, in_function and in_try
        for child in ast.iter_child_nodes(node):
            function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            guarded = in_try or (isinstance(node, ast.Try) and child in node.body)
            yield from visit(child, function, guarded)

    yield from visit(ast.parse(path.read_text(), str(path)), False, False)


@pytest.mark.parametrize("name", sorted(PIPELINE_FILES))
def test_shipped_files_import_only_shipped_files_and_installed_packages(name):
    for level, module, lazy in _imports_with_place(PACKAGE / name):
        if level:
            assert level == 1 and f"{module}.py" in PIPELINE_FILES, \
                f"{name} imports .{module}: shipped code may import only shipped siblings"
        elif module.split(".")[0] in LAZY_OPTIONAL:
            assert lazy, f"{name} imports {module} outside a function's try block: the video extra is optional"
        else:
            assert module.split(".")[0] in ALLOWED_ABSOLUTE, f"{name} imports {module}, which a remote loader lacks"


def test_video_extra_is_imported_lazily_and_named_when_missing(monkeypatch, tmp_path):
    """The video modules import without av and scipy; reading a video or tracking then names the extra, and the
    transformers remote-code check asks for neither."""
    from transformers.dynamic_module_utils import get_imports

    from faceptor_hf.face_tracking import FaceTracker
    from faceptor_hf.video_frames import VideoFrames

    for name in ("pipeline_face_analysis.py", "face_tracking.py", "video_frames.py"):
        assert not LAZY_OPTIONAL & set(get_imports(PACKAGE / name)), name
    lazy = {module.split(".")[0] for name in ("face_tracking.py", "video_frames.py")
            for _, module, is_lazy in _imports_with_place(PACKAGE / name) if is_lazy}
    assert lazy == LAZY_OPTIONAL
    sample = tmp_path / "sample.py"  # the rule itself: only an import in a function's try body is lazy
    sample.write_text("import av\ntry:\n    import scipy\nexcept ImportError:\n    pass\n\n\ndef read():\n"
                      "    import av\n    try:\n        from scipy import optimize\n    except ImportError:\n"
                      "        raise\n")
    assert list(_imports_with_place(sample)) == [(0, "av", False), (0, "scipy", False), (0, "av", False),
                                                 (0, "scipy", True)]
    for module in ("av", "scipy", "scipy.optimize"):
        monkeypatch.setitem(sys.modules, module, None)  # import of a None entry raises ImportError
    (tmp_path / "clip.mp4").write_bytes(b"not read")
    with pytest.raises(ImportError, match=r'pip install "faceptor-hf\[video\]"'):
        VideoFrames(tmp_path / "clip.mp4")
    with pytest.raises(ImportError, match=r'pip install "faceptor-hf\[video\]"'):
        FaceTracker()


def test_no_package_only_module_is_imported_by_a_shipped_file():
    shipped_modules = {name[:-3] for name in PIPELINE_FILES}
    package_only = {path.stem for path in PACKAGE.glob("*.py")} - shipped_modules - {"__init__", "__main__"}
    assert {"hub", "visualization", "convert_faceptor_original_to_hf"} <= package_only
    for name in PIPELINE_FILES:
        for level, module in _imports(PACKAGE / name):
            assert not (level and module.split(".")[0] in package_only), f"{name} imports package-only .{module}"
