"""Start a Faceptor model from a FaRL or CLIP image encoder, as the official training does.

The official code builds its ViT-B/16 from FaRL (``FaRL-Base-Patch16-LAIONFace20M-ep64.pth``, a CLIP-format
checkpoint) and resizes FaRL's 14x14 position table once, bicubic with ``align_corners=False``, to the 32x32 grid of
512-px input (lxq1000/Faceptor, ``core/model/backbone/farl_vit.py``); at every forward the model resizes that table
again to the actual grid. This module reads such an encoder and writes it into a ``FaceptorModel``:

    python -m faceptor_hf.convert_farl_encoder_to_hf --encoder-checkpoint FaRL-Base-Patch16-LAIONFace20M-ep64.pth \\
        --preset base --output faceptor-base-farl
    faceptor-hf convert --encoder-checkpoint openai/clip-vit-base-patch16 --preset base --output faceptor-base-clip

Accepted layouts:

* FaRL / OpenAI CLIP (``visual.*`` keys, with or without a ``state_dict`` wrapper, in a ``.pth``/``.pt``/``.bin`` or
  ``.safetensors`` file): the text tower and CLIP's output head (``ln_post``, ``proj``) are dropped, as Faceptor never
  reads them.
* transformers ``CLIPVisionModel`` / ``CLIPModel`` (``vision_model.*`` keys, or the bare ``embeddings.*``,
  ``encoder.*`` keys transformers 5 writes for a ``CLIPVisionModel``): a folder or a Hub id with
  ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``); separate q/k/v projections are fused into the
  encoder's one projection. The activation must be ``quick_gelu`` (CLIP's and FaRL's).

The encoder shape must be the model's (ViT-B/16 for every preset: patch 16, width 768, 12 blocks); anything else is
a ``EncoderCheckpointError`` naming the mismatching key and both shapes. Decoder and heads keep their fresh
initialization and the model stays flagged untrained until it is trained.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .configuration_faceptor import FaceptorConfig
from .convert_faceptor_original_to_hf import BACKBONE, matching_rules
from .modeling_faceptor import FaceptorModel

FARL_PREFIX = "visual."
TRANSFORMERS_PREFIX = "vision_model."
# transformers CLIP vision names (after ``vision_model.``) -> FaRL visual names; q/k/v are fused separately.
_TRANSFORMERS_RULES = (
    (r"embeddings\.class_embedding", "class_embedding"),
    (r"embeddings\.patch_embedding\.weight", "conv1.weight"),
    (r"embeddings\.position_embedding\.weight", "positional_embedding"),
    (r"pre_layrnorm\.(weight|bias)", r"ln_pre.\1"),
    (r"post_layernorm\.(weight|bias)", r"ln_post.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"transformer.resblocks.\1.attn.out_proj.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)", r"transformer.resblocks.\1.ln_1.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)", r"transformer.resblocks.\1.ln_2.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_fc.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_proj.\2"),
)
_QKV = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")
# Parts of a CLIP checkpoint the encoder has no use for: the text tower, the projections, the position ids buffer.
_UNUSED_TRANSFORMERS = re.compile(r"embeddings\.position_ids")


class EncoderCheckpointError(ValueError):
    """The encoder checkpoint cannot start this model; the message names the file, key and shapes."""


@dataclass
class EncoderInit:
    """What ``load_encoder_checkpoint`` did.

    Attributes:
        source: the path or Hub id given.
        layout: ``"farl"`` (FaRL / OpenAI CLIP ``visual.*``) or ``"transformers-clip"`` (``vision_model.*``).
        source_grid: side of the checkpoint's position grid (14 for FaRL/CLIP ViT-B/16 at 224 px).
        target_grid: side of the model's stored grid (``config.position_grid_size``, 32 for 512-px input).
        dropped: checkpoint keys the encoder does not use (text tower, ``ln_post``/``proj``, ...), counted.
    """

    source: str
    layout: str
    source_grid: int
    target_grid: int
    dropped: int = 0
    loaded: list[str] = field(default_factory=list, repr=False)

    def as_config_entry(self) -> dict:
        return {"source": self.source, "layout": self.layout, "position_grid": [self.source_grid, self.target_grid]}


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------
def _read_file(path: str) -> dict:
    if os.path.getsize(path) == 0:
        raise EncoderCheckpointError(f"{path}: the file is empty (0 bytes)")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return dict(load_file(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - safetensors and the unpickler raise many types for bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EncoderCheckpointError(f"{path}: cannot be read as a weights file (truncated download, or not a "
                                     f"checkpoint?): {reason}") from error


def _shard_names(index_path: str) -> list[str]:
    """The weight files a ``model.safetensors.index.json`` names, each once."""
    with open(index_path, encoding="utf-8") as handle:
        return sorted(set(json.load(handle)["weight_map"].values()))


def _read_folder(folder: str) -> tuple[dict, dict | None]:
    """Weights and config.json of a transformers model folder (single or sharded safetensors, or a .bin)."""
    config = None
    config_path = os.path.join(folder, "config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        state = {}
        for shard in _shard_names(index):
            state.update(_read_file(os.path.join(folder, shard)))
        return state, config
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(folder, name)):
            return _read_file(os.path.join(folder, name)), config
    weights = sorted(name for name in os.listdir(folder) if name.endswith((".pth", ".pt", ".safetensors", ".bin")))
    if len(weights) == 1:
        return _read_file(os.path.join(folder, weights[0])), config
    raise EncoderCheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin (found {weights or 'none'})")


def _download(repo_id: str, revision: str | None, token) -> str:
    """The snapshot folder of a Hub model with its config and weights (safetensors, sharded safetensors, or a
    ``pytorch_model.bin``), fetched file by file as ``from_pretrained`` does."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    def fetch(filename: str) -> str | None:
        try:
            return hf_hub_download(repo_id, filename, revision=revision, token=token)
        except EntryNotFoundError:
            return None

    try:
        config = fetch("config.json")
        for weights in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
            path = fetch(weights)
            if path is None:
                continue
            if weights.endswith(".index.json"):
                for shard in _shard_names(path):
                    fetch(shard)
            return os.path.dirname(path)
    except (LocalEntryNotFoundError, HfHubHTTPError, ValueError) as error:
        raise EncoderCheckpointError(f"{repo_id!r} is neither a file, a folder nor a reachable Hub model: "
                                     f"{str(error).splitlines()[0]}") from error
    where = "has config.json but" if config else "has neither config.json nor"
    raise EncoderCheckpointError(f"Hub model {repo_id!r} {where} model.safetensors / pytorch_model.bin")


def read_encoder_checkpoint(source: str, revision: str | None = None, token=None) -> tuple[dict, dict | None]:
    """The tensors of ``source`` (file, folder or Hub id) without wrappers (``state_dict``, ``module.``), and the
    transformers config dict where the source has one."""
    if os.path.isfile(source):
        state, config = _read_file(source), None
    elif os.path.isdir(source):
        state, config = _read_folder(source)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        state, config = _read_folder(_download(source, revision, token))
    else:
        raise EncoderCheckpointError(f"{source}: no such file or folder (nor a Hub id of the form owner/name)")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise EncoderCheckpointError(f"{source}: expected a dict of tensors, found {type(state).__name__}")
    tensors = {key[len("module."):] if key.startswith("module.") else key: value
               for key, value in state.items() if isinstance(value, torch.Tensor)}
    return tensors, config


# ---------------------------------------------------------------------------------------------------------------
# Layouts -> FaRL visual names -> faceptor-hf encoder names
# ---------------------------------------------------------------------------------------------------------------
def _farl_from_transformers(state: dict, source: str, hf_config: dict | None, prefix: str) -> tuple[dict, int]:
    """transformers CLIP vision tensors (names under ``prefix``) -> FaRL ``visual`` names (q/k/v fused); returns
    them and the count of dropped tensors."""
    if hf_config is not None:
        vision = hf_config.get("vision_config", hf_config)
        activation = vision.get("hidden_act", "quick_gelu")
        if activation != "quick_gelu":
            raise EncoderCheckpointError(f"{source}: the encoder uses hidden_act={activation!r}; Faceptor's FaRL/CLIP "
                                         "blocks use quick_gelu")
    visual, parts, dropped = {}, {}, 0
    for key, value in state.items():
        if not key.startswith(prefix):
            dropped += 1
            continue
        name = key[len(prefix):]
        qkv = _QKV.fullmatch(name)
        if qkv:
            parts.setdefault((qkv.group(1), qkv.group(3)), {})[qkv.group(2)] = value
            continue
        for pattern, target in _TRANSFORMERS_RULES:
            if re.fullmatch(pattern, name):
                visual[re.sub(pattern, target, name)] = value
                break
        else:
            if not _UNUSED_TRANSFORMERS.fullmatch(name):
                raise EncoderCheckpointError(f"{source}: unexpected key {key!r} in a transformers CLIP checkpoint")
            dropped += 1
    for (block, param), qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise EncoderCheckpointError(f"{source}: block {block} has only {sorted(qkv)} of its q/k/v {param}s")
        visual[f"transformer.resblocks.{block}.attn.in_proj_{param}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    return visual, dropped


def resize_position_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """(1 + g*g, D) -> (1 + grid*grid, D): class row kept, patch rows (row-major) resized bicubically with
    ``align_corners=False`` and no antialias in float32, as the official model resizes FaRL's table once."""
    rows, width = table.shape
    side = math.isqrt(rows - 1)
    if side == grid:
        return table.clone()
    patches = table[1:].float().reshape(1, side, side, width).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([table[:1].float(), patches.flatten(2)[0].t()]).to(table.dtype)


def _check_shape(source: str, key: str, tensor: torch.Tensor, expected: torch.Size, what: str):
    if tuple(tensor.shape) != tuple(expected):
        raise EncoderCheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)}, this model's {what} needs "
                                     f"{tuple(expected)}")


def encoder_state_dict(state: dict, config: FaceptorConfig, source: str = "checkpoint",
                       hf_config: dict | None = None) -> tuple[dict, EncoderInit]:
    """A FaRL/CLIP checkpoint's tensors -> ``{encoder.*: tensor}`` for a model of ``config``, with the position
    table resized to ``config.position_grid_size``.

    Raises ``EncoderCheckpointError`` for a foreign checkpoint, a missing block, or any shape that differs from the
    model's encoder (naming the key, its shape and the expected one)."""
    if any(key.startswith(FARL_PREFIX) for key in state):
        layout = "farl"
        visual = {key[len(FARL_PREFIX):]: value for key, value in state.items() if key.startswith(FARL_PREFIX)}
        dropped = len(state) - len(visual)
    elif any(key.startswith(TRANSFORMERS_PREFIX) for key in state):  # CLIPModel (and CLIPVisionModel before v5)
        layout = "transformers-clip"
        visual, dropped = _farl_from_transformers(state, source, hf_config, TRANSFORMERS_PREFIX)
    elif "embeddings.patch_embedding.weight" in state and "pre_layrnorm.weight" in state:  # CLIPVisionModel, v5
        layout = "transformers-clip"
        visual, dropped = _farl_from_transformers(state, source, hf_config, "")
    else:
        raise EncoderCheckpointError(f"{source}: foreign checkpoint: no 'visual.*' (FaRL / OpenAI CLIP) or "
                                     f"'vision_model.*' / 'embeddings.*' (transformers CLIP) keys; found e.g. "
                                     f"{list(state)[:3]}")
    if "class_embedding" not in visual or "positional_embedding" not in visual:
        raise EncoderCheckpointError(f"{source}: the image encoder lacks class_embedding / positional_embedding")
    table = visual["positional_embedding"]
    if table.ndim != 2 or math.isqrt(table.shape[0] - 1) ** 2 != table.shape[0] - 1:
        raise EncoderCheckpointError(f"{source}: positional_embedding has shape {tuple(table.shape)}, not a class "
                                     "row plus a square grid")
    source_grid = math.isqrt(table.shape[0] - 1)
    width = config.hidden_size
    _check_shape(source, "class_embedding", visual["class_embedding"], torch.Size([width]), "width")
    patch = visual.get("conv1.weight")
    if patch is None:
        raise EncoderCheckpointError(f"{source}: the image encoder lacks its patch embedding (conv1.weight)")
    _check_shape(source, "conv1.weight (patch embedding)", patch,
                 torch.Size([width, config.num_channels, config.patch_size, config.patch_size]), "patch size")
    blocks = {int(match.group(1)) for key in visual for match in [re.match(r"transformer\.resblocks\.(\d+)\.", key)]
              if match}
    if blocks != set(range(config.num_hidden_layers)):
        raise EncoderCheckpointError(f"{source}: the image encoder has {len(blocks)} blocks, this model has "
                                     f"{config.num_hidden_layers}")
    visual["positional_embedding"] = resize_position_table(table, config.position_grid_size)

    out, unused = {}, 0
    for key, value in visual.items():
        matches = matching_rules(BACKBONE + key)
        if not matches or not matches[0][0].targets:
            unused += 1  # ln_post, proj, or another part Faceptor never reads
            continue
        rule, match = matches[0]
        tensors = rule.transform(value) if rule.transform is not None else (value,)
        for target, tensor in zip(rule.targets, tensors):
            out[target.format(**match.groupdict())] = tensor.detach().clone().float()
    info = EncoderInit(source=source, layout=layout, source_grid=source_grid,
                       target_grid=config.position_grid_size, dropped=dropped + unused)
    return out, info


def load_encoder_checkpoint(model: FaceptorModel, source: str, revision: str | None = None,
                            token=None) -> EncoderInit:
    """Copy the encoder of ``source`` (file, folder or Hub id; see the module docstring) into ``model.encoder``.

    Every encoder tensor of the model is replaced (a missing one is an error); decoder and heads are untouched.
    The model's config records where the encoder came from (``encoder_init``). Returns what was done."""
    state, hf_config = read_encoder_checkpoint(source, revision=revision, token=token)
    weights, info = encoder_state_dict(state, model.config, source=source, hf_config=hf_config)
    expected = {name: tensor for name, tensor in model.state_dict().items() if name.startswith("encoder.")}
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise EncoderCheckpointError(f"{source}: the image encoder lacks {missing[:5]} (faceptor-hf names)")
    for name, tensor in weights.items():
        _check_shape(source, name, tensor, expected[name].shape, "encoder")
    with torch.no_grad():  # in place: the model keeps its untrained flag, as its decoder and heads are random
        for name, tensor in weights.items():
            expected[name].copy_(tensor.to(expected[name].dtype))
    model.config.encoder_init = info.as_config_entry()
    info.loaded = sorted(weights)
    return info


def build_from_encoder(source: str, preset: str = "base", config_overrides: dict | None = None,
                       revision: str | None = None, token=None) -> tuple[FaceptorModel, EncoderInit]:
    """A complete model of ``preset`` whose encoder comes from ``source`` and whose decoder and heads are freshly
    initialized (flagged untrained)."""
    try:
        config = FaceptorConfig.from_preset(preset, **(config_overrides or {}))
    except (TypeError, ValueError) as error:
        raise EncoderCheckpointError(str(error)) from error
    model = FaceptorModel(config)
    info = load_encoder_checkpoint(model, source, revision=revision, token=token)
    return model, info


def main(argv=None) -> int:
    """``python -m faceptor_hf.convert_farl_encoder_to_hf ARGS`` is ``faceptor-hf convert ARGS``."""
    from .commands import main as command_line

    return command_line(["convert", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
