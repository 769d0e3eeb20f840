"""Which Faceptor model a run uses, and loading it: a saved folder or Hub id (at a revision, optionally from the
cache only), or untrained Faceptor-Base weights from a seed.

    source = ModelSource("your-org/faceptor-base", revision="v1").pinned()   # v1 -> the commit it points to now
    model, processor = load_model(source, dtype="bfloat16", device="cuda")  # config, weights, processor: that commit
    model_identity(source)      # {"model": "your-org/faceptor-base", "revision": "v1", "commit": "<that commit>"}

The ``faceptor-hf`` commands (analyze, evaluate, export) take these as ``--model``, ``--revision``,
``--local-files-only``, ``--random-weights`` and ``--seed`` and load through here.

Package-only code: no file a saved model ships imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace

import torch

from .configuration_faceptor import FaceptorConfig
from .image_processing_faceptor import FaceptorImageProcessor
from .modeling_faceptor import FaceptorModel

#: Precisions a model can be loaded in (the ``--dtype`` choices).
DTYPES = ("float32", "bfloat16", "float16")
#: Files of a model folder whose content changes what the model computes (besides the weights themselves).
CONFIG_FILES = ("config.json", "preprocessor_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx")


class ModelLoadError(ValueError):
    """The model named by a ``ModelSource`` cannot be loaded (absent, not a Faceptor model, not in the cache while
    offline); the message names it and says why in one line."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``model`` (folder or Hub id) at ``revision``, from the local cache only when
    ``local_files_only``; or, with ``random_weights``, untrained Faceptor-Base weights drawn with ``seed``."""

    model: str | None = None
    revision: str | None = None
    local_files_only: bool = False
    random_weights: bool = False
    seed: int = 0

    def pinned(self) -> "ModelSource":
        """This source with its Hub revision resolved to the commit it points to now
        (``huggingface_hub.HfApi.resolve_revision``, which remembers it in the cache, so offline runs resolve it
        too): loading it reads every file from that one commit, and ``model_identity`` names it. Unchanged for a
        folder, random weights, or a revision that cannot be resolved (loading then says why)."""
        if self.random_weights or not self.model or os.path.isdir(self.model) or hasattr(self.revision, "resolved"):
            return self
        from huggingface_hub import HfApi

        try:
            revision = HfApi().resolve_revision(self.model, revision=self.revision,
                                                local_files_only=self.local_files_only)
        except Exception:  # noqa: BLE001 - absent, gated or unreachable: the load reports it in its own words
            return self
        return replace(self, revision=revision)

    def hub_options(self) -> dict:
        """The ``from_pretrained`` keywords of the Hub options that are set."""
        options = {"revision": self.revision, "local_files_only": self.local_files_only or None}
        return {key: value for key, value in options.items() if value is not None}


def _offline_hint(source: ModelSource) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or source.local_files_only
    if offline and not os.path.isdir(source.model):
        return (" Offline mode is on (HF_HUB_OFFLINE / --local-files-only) and it is not in the local cache: "
                "download it once while online, or pass a local folder.")
    return ""


def load_model(source: ModelSource, dtype: str = "float32", device: str | int | None = None,
               allow_onnx: bool = False):
    """(model in eval mode, image processor) of ``source`` in ``dtype`` (one of ``DTYPES``), moved to ``device``
    when given. With ``allow_onnx`` a ``faceptor-hf export onnx`` folder loads as its ONNX Runtime model (through
    ``AutoModel``); otherwise only a PyTorch ``FaceptorModel`` will do. A folder without its own processor config
    gets the default ``FaceptorImageProcessor``. Raises ``ModelLoadError``."""
    torch_dtype = getattr(torch, dtype)
    if source.random_weights:
        torch.manual_seed(source.seed)
        config = FaceptorConfig.faceptor_base()
        config.untrained = True
        model = FaceptorModel(config).to(torch_dtype)
        processor = FaceptorImageProcessor()
    elif source.model:
        hub = source.hub_options()
        try:
            if allow_onnx:
                from transformers import AutoModel

                model = AutoModel.from_pretrained(source.model, dtype=torch_dtype, **hub)
            else:
                model = FaceptorModel.from_pretrained(source.model, dtype=torch_dtype, **hub)
        except (OSError, ValueError) as error:
            hint = _offline_hint(source)
            if not hint and not allow_onnx:
                from .onnx import is_onnx_folder

                if is_onnx_folder(source.model):
                    hint = " (it is already an ONNX export)"
            raise ModelLoadError(f"cannot load model {source.model!r}: {str(error).splitlines()[0]}{hint}") from error
        try:
            processor = FaceptorImageProcessor.from_pretrained(source.model, **hub)
        except OSError:
            processor = FaceptorImageProcessor()
    else:
        raise ModelLoadError("no model given: name a folder or Hub id, or ask for random weights")
    if device is not None and isinstance(model, torch.nn.Module):
        model = model.to(f"cuda:{device}" if isinstance(device, int) else device)
    return model.eval(), processor


def folder_fingerprint(folder: str) -> str:
    """16 hex digits that change when a weight file of ``folder`` is replaced or its configuration edited."""
    parts = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(WEIGHT_SUFFIXES) and os.path.isfile(path):
            info = os.stat(path)
            parts.append([name, info.st_size, info.st_mtime_ns])
        elif name in CONFIG_FILES:
            with open(path, "rb") as handle:
                parts.append([name, hashlib.sha256(handle.read()).hexdigest()])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_identity(source: ModelSource) -> dict:
    """What identifies the weights of ``source`` (JSON-serializable): the seed of random weights, a folder's path
    and fingerprint, or a Hub id, the revision asked for and, for a ``pinned`` source, the commit it was pinned to
    (the one ``load_model`` read)."""
    if source.random_weights:
        return {"model": "random-weights", "seed": source.seed}
    if os.path.isdir(source.model):
        return {"model": os.path.realpath(source.model), "fingerprint": folder_fingerprint(source.model)}
    revision = source.revision
    return {"model": source.model, "revision": getattr(revision, "initial", revision),
            "commit": getattr(revision, "resolved", None)}


__all__ = ["DTYPES", "ModelLoadError", "ModelSource", "folder_fingerprint", "load_model", "model_identity"]
