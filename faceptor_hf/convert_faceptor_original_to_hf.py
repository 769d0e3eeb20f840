"""Convert an official Faceptor checkpoint (``checkpoint_rank0_iter_*.pth.tar``) to a faceptor-hf folder.

    python -m faceptor_hf.convert_faceptor_original_to_hf --checkpoint PATH --output DIR

The variant (Faceptor-Base / Faceptor-Full stage 1 / stage 2 / Naive Faceptor) and the task list are read from
the parameter names and shapes; the weights are renamed by one declarative table (``RENAME_RULES``, plus
``TRANSFORM_RULES`` for tensors that are split or reshaped and ``DROPPED_KEYS``). Training-only entries (CosFace
classifier, ``Norm2d`` alias keys) and the encoder's unused ``ln_post``/``proj`` are dropped.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections import OrderedDict
from typing import Callable, NamedTuple

import torch

from .configuration_faceptor import (
    LAYER_ATTENTION_LEVELS,
    OFFICIAL_TASKS,
    FaceptorConfig,
    make_task,
    with_official_loss_weights,
)
from .image_processing_faceptor import FaceptorImageProcessor
from .modeling_faceptor import FaceptorModel

BACKBONE = "backbone_module.visual."
DECODER = "heads_module.decoder."
INTERPRETERS = "heads_module.interpreters."
NAIVE = "heads_module.heads."
# Naive Faceptor keeps one dense head per type and stores no dense task names, so a head is named after the official
# task of its type with the same output count.
NAIVE_DENSE_TYPES = ("parsing", "align")
NAIVE_DENSE_NAMES = {(spec["type"], len(spec["labels"])): name for name, spec in OFFICIAL_TASKS.items()
                     if spec["type"] in NAIVE_DENSE_TYPES}


# ---------------------------------------------------------------------------------------------------------------
# Rule table: official key (without ``module.``) -> faceptor-hf key. Each pattern must match a whole key and no key
# may match two rules. Targets are ``str.format`` templates over the pattern's named groups plus ``recognition``
# (the config's recognition task name). ``param`` is the leaf: weight, bias or a BatchNorm buffer.
# ---------------------------------------------------------------------------------------------------------------
_P = r"\.(?P<param>\w+)"
_ENC = re.escape(BACKBONE)
_BLOCK = _ENC + r"transformer\.resblocks\.(?P<i>\d+)\."
_DEC = re.escape(DECODER)
_CROSS = _DEC + r"transformer_cross_attention_layers\.(?P<i>\d+)\."
_SELF = _DEC + r"transformer_self_attention_layers\.(?P<i>\d+)\."
_FFN = _DEC + r"transformer_ffn_layers\.(?P<i>\d+)\."
_INTERP = re.escape(INTERPRETERS)
# The Faceptor and the Naive recognition heads have the same layout.
_RECOG = r"heads_module\.(?:interpreters\.feature_v2|heads\.recog)\."
_NAIVE_VALUE = re.escape(NAIVE) + r"(?P<type>(?!(?:recog|" + "|".join(NAIVE_DENSE_TYPES) + r")\.)[^.]+)\."
_NAIVE_DENSE = re.escape(NAIVE) + r"(?P<type>" + "|".join(NAIVE_DENSE_TYPES) + r")\."
_UPERNET = _NAIVE_DENSE + r"head\."
_CONV_NORM = r"\.(?P<leaf>(?:conv|bn)\.\w+)"

RENAME_RULES: tuple[tuple[str, str], ...] = (
    # ---- encoder (FaRL ViT-B/16) ----
    (_ENC + r"class_embedding", "encoder.embeddings.class_embedding"),
    (_ENC + r"positional_embedding", "encoder.embeddings.position_embedding"),
    (_ENC + r"conv1\.weight", "encoder.embeddings.patch_embedding.weight"),
    (_ENC + r"ln_pre" + _P, "encoder.pre_layernorm.{param}"),
    (_BLOCK + r"attn\.in_proj_(?P<param>weight|bias)", "encoder.layers.{i}.self_attn.qkv_proj.{param}"),
    (_BLOCK + r"attn\.out_proj" + _P, "encoder.layers.{i}.self_attn.out_proj.{param}"),
    (_BLOCK + r"ln_1" + _P, "encoder.layers.{i}.layer_norm1.{param}"),
    (_BLOCK + r"ln_2" + _P, "encoder.layers.{i}.layer_norm2.{param}"),
    (_BLOCK + r"mlp\.c_fc" + _P, "encoder.layers.{i}.mlp.fc1.{param}"),
    (_BLOCK + r"mlp\.c_proj" + _P, "encoder.layers.{i}.mlp.fc2.{param}"),
    # ---- task decoder ----
    (_DEC + r"query_feat\.(?P<task>[^.]+)\.weight", "decoder.query_content.{task}"),
    (_DEC + r"query_embed\.(?P<task>[^.]+)\.weight", "decoder.query_position.{task}"),
    (_DEC + r"level_embed\.weight", "decoder.level_embeddings"),
    (_DEC + r"input_proj\.(?P<j>\d+)\.bias", "decoder.level_projections.{j}.bias"),
    (_DEC + r"new_level_embed\.weight", "decoder.layer_attention_embeddings"),
    (_DEC + r"new_input_proj\.(?P<j>\d+)\.bias", "decoder.layer_attention_projections.{j}.bias"),
    (_DEC + r"adapt_pos2d\.0" + _P, "decoder.position_mlp.fc1.{param}"),
    (_DEC + r"adapt_pos2d\.2" + _P, "decoder.position_mlp.fc2.{param}"),
    (_CROSS + r"multihead_attn\.out_proj" + _P, "decoder.layers.{i}.cross_attn.out_proj.{param}"),
    (_CROSS + r"norm" + _P, "decoder.layers.{i}.cross_attn_layer_norm.{param}"),
    (_SELF + r"self_attn\.out_proj" + _P, "decoder.layers.{i}.self_attn.out_proj.{param}"),
    (_SELF + r"norm" + _P, "decoder.layers.{i}.self_attn_layer_norm.{param}"),
    (_FFN + r"linear1" + _P, "decoder.layers.{i}.fc1.{param}"),
    (_FFN + r"linear2" + _P, "decoder.layers.{i}.fc2.{param}"),
    (_FFN + r"norm" + _P, "decoder.layers.{i}.final_layer_norm.{param}"),
    # ---- heads: recognition (Faceptor and Naive), value, map ----
    (_RECOG + r"norm" + _P, "recognition_heads.{recognition}.layer_norm.{param}"),
    (_RECOG + r"head\.0" + _P, "recognition_heads.{recognition}.fc1.{param}"),
    (_RECOG + r"head\.1" + _P, "recognition_heads.{recognition}.batch_norm1.{param}"),
    (_RECOG + r"head\.2" + _P, "recognition_heads.{recognition}.fc2.{param}"),
    (_RECOG + r"head\.3" + _P, "recognition_heads.{recognition}.batch_norm2.{param}"),
    (_INTERP + r"value\.fc" + _P, "value_head.fc.{param}"),
    (_INTERP + r"map_v2\.mask_map\.0" + _P, "map_head.upsample1.{param}"),
    (_INTERP + r"map_v2\.mask_map\.1\.(?P<param>weight|bias)", "map_head.norm.{param}"),
    (_INTERP + r"map_v2\.mask_map\.3" + _P, "map_head.upsample2.{param}"),
    (_INTERP + r"map_v2\.mask_embed\.layers\.(?P<k>\d+)" + _P, "map_head.query_mlp.{k}.{param}"),
    # ---- Naive value heads (one per type: age, biattr, affect, ...) ----
    (_NAIVE_VALUE + r"conv\.(?P<n>\d+)\.weight", "naive_value_heads.{type}.level_convs.{n}.weight"),
    (_NAIVE_VALUE + r"channel_attention\.mlp\.1" + _P, "naive_value_heads.{type}.gate_fc1.{param}"),
    (_NAIVE_VALUE + r"channel_attention\.mlp\.3" + _P, "naive_value_heads.{type}.gate_fc2.{param}"),
    (_NAIVE_VALUE + r"norm" + _P, "naive_value_heads.{type}.batch_norm.{param}"),
    (_NAIVE_VALUE + r"feature\.0" + _P, "naive_value_heads.{type}.fc1.{param}"),
    (_NAIVE_VALUE + r"feature\.3" + _P, "naive_value_heads.{type}.fc2.{param}"),
    (_NAIVE_VALUE + r"fcs\.(?P<task>[^.]+)" + _P, "naive_value_heads.{type}.classifiers.{task}.{param}"),
    # ---- Naive dense heads (UPerNet; one per type: parsing, align) ----
    (_NAIVE_DENSE + r"fpns\.0\.0" + _P, "naive_dense_heads.{type}.upsample4_deconv1.{param}"),
    (_NAIVE_DENSE + r"fpns\.0\.1" + _P, "naive_dense_heads.{type}.upsample4_norm.{param}"),
    (_NAIVE_DENSE + r"fpns\.0\.3" + _P, "naive_dense_heads.{type}.upsample4_deconv2.{param}"),
    (_NAIVE_DENSE + r"fpns\.1" + _P, "naive_dense_heads.{type}.upsample2_deconv.{param}"),
    (_UPERNET + r"psp_modules\.(?P<n>\d+)\.1" + _CONV_NORM, "naive_dense_heads.{type}.pyramid_convs.{n}.{leaf}"),
    (_UPERNET + r"bottleneck" + _CONV_NORM, "naive_dense_heads.{type}.bottleneck.{leaf}"),
    (_UPERNET + r"lateral_convs\.(?P<n>\d+)" + _CONV_NORM, "naive_dense_heads.{type}.lateral_convs.{n}.{leaf}"),
    (_UPERNET + r"fpn_convs\.(?P<n>\d+)" + _CONV_NORM, "naive_dense_heads.{type}.fpn_convs.{n}.{leaf}"),
    (_UPERNET + r"fpn_bottleneck" + _CONV_NORM, "naive_dense_heads.{type}.fpn_bottleneck.{leaf}"),
    (_UPERNET + r"conv_seg" + _P, "naive_dense_heads.{type}.classifier.{param}"),
)


def _split_in_three(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tensor.chunk(3, dim=0)


def _conv1x1_as_linear(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (tensor.flatten(1),)


def _qkv(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{part}_proj.{{param}}" for part in "qkv")


# Keys whose tensor changes form, not just name: (pattern, target templates, transform -> one tensor per target).
TRANSFORM_RULES: tuple[tuple[str, tuple[str, ...], Callable[[torch.Tensor], tuple[torch.Tensor, ...]]], ...] = (
    # nn.MultiheadAttention's fused projection -> separate q/k/v projections.
    (_CROSS + r"multihead_attn\.in_proj_(?P<param>weight|bias)", _qkv("decoder.layers.{i}.cross_attn"),
     _split_in_three),
    (_SELF + r"self_attn\.in_proj_(?P<param>weight|bias)", _qkv("decoder.layers.{i}.self_attn"), _split_in_three),
    # 1x1 convolutions are stored here as linear layers.
    (_DEC + r"input_proj\.(?P<j>\d+)\.weight", ("decoder.level_projections.{j}.weight",), _conv1x1_as_linear),
    (_DEC + r"new_input_proj\.(?P<j>\d+)\.weight", ("decoder.layer_attention_projections.{j}.weight",),
     _conv1x1_as_linear),
)

# Keys dropped on purpose.
DROPPED_KEYS: tuple[str, ...] = (
    r"losses_module\..+",  # training losses: the CosFace classifier over the training identities
    # CLIP's output head (final norm + projection): Faceptor reads the blocks' hidden states, never these.
    _ENC + r"ln_post\.(?:weight|bias)",
    _ENC + r"proj",
    _INTERP + r"map_v2\.mask_map\.1\.ln\.(?:weight|bias)",  # Norm2d saves its LayerNorm twice; mask_map.1.* is kept
)


class ConversionRule(NamedTuple):
    """One compiled entry of the rule table; ``targets`` is empty for a dropped key."""

    pattern: re.Pattern[str]
    targets: tuple[str, ...]
    transform: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None


CONVERSION_RULES: tuple[ConversionRule, ...] = (
    tuple(ConversionRule(re.compile(pattern), (target,)) for pattern, target in RENAME_RULES)
    + tuple(ConversionRule(re.compile(pattern), targets, transform) for pattern, targets, transform in TRANSFORM_RULES)
    + tuple(ConversionRule(re.compile(pattern), ()) for pattern in DROPPED_KEYS)
)


def matching_rules(key: str) -> list[tuple[ConversionRule, re.Match[str]]]:
    """Every rule whose pattern matches the whole official ``key`` (without ``module.``), with its match."""
    return [(rule, match) for rule in CONVERSION_RULES for match in [rule.pattern.fullmatch(key)] if match]


class ConversionError(ValueError):
    """The file is not a convertible official Faceptor checkpoint; the message says why."""


def load_official_state_dict(path: str) -> "OrderedDict[str, torch.Tensor]":
    """Read ``path`` safely (``weights_only=True``) and return its model state dict without the ``module.`` prefix."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ConversionError(f"{path}: the file is empty (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the unpickler raises many types on corrupt input; all mean the same
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(
            f"{path}: cannot be read as a PyTorch checkpoint (truncated download or not a checkpoint?): {reason}"
        ) from error
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        state = checkpoint["state_dict"]
    else:
        state = checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(
            f"{path}: expected a dict with a 'state_dict' of tensors (an official Faceptor training checkpoint), "
            f"found {type(checkpoint).__name__} with keys "
            f"{list(checkpoint)[:5] if isinstance(checkpoint, dict) else '-'}"
        )
    state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())
    if not any(k.startswith(BACKBONE) for k in state):
        sample = list(state)[:3]
        raise ConversionError(
            f"{path}: foreign checkpoint: no '{BACKBONE}*' keys (found e.g. {sample}); this is not an official "
            "Faceptor checkpoint")
    if not any(k.startswith(DECODER) or k.startswith(NAIVE) or k.startswith(INTERPRETERS) for k in state):
        raise ConversionError(f"{path}: has a FaRL backbone but no Faceptor heads ('{DECODER}' or '{NAIVE}' keys)")
    return state


def _count(state, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state for m in [regex.match(k)] if m})


def _require(state, key: str) -> torch.Tensor:
    if key not in state:
        raise ConversionError(f"missing key {key!r}: the checkpoint is incomplete or from another model")
    return state[key]


def _recognition_task_name(state) -> str:
    for key in state:
        match = re.match(r"losses_module\.losses\.(recog_[^.]+)\.", key)
        if match:
            return match.group(1)
    return "recog_ms1mv3"


def _task(name: str, **fields):
    try:
        return make_task(name, **fields)
    except ValueError as error:
        raise ConversionError(f"cannot read task {name!r} from the checkpoint: {error}") from error


def _read_tasks(state, recognition_key: str, query_pattern: str) -> list:
    """Recognition task (if its head exists) then one task per key matching ``query_pattern``, in key order
    (the official ModuleDicts keep the training config's task order). A ``type`` group in the pattern (the Naive
    head a classifier sits in) gives the task's type; otherwise it follows from the task name."""
    tasks = []
    if recognition_key in state:
        tasks.append(_task(_recognition_task_name(state), embedding_size=state[recognition_key].shape[0]))
    for key, value in state.items():
        match = re.match(query_pattern, key)
        if match:
            tasks.append(_task(match.group("task"), num_queries=value.shape[0], type=match.groupdict().get("type")))
    return tasks


def infer_config(state, overrides: dict | None = None) -> tuple[FaceptorConfig, str]:
    """Config and a human-readable variant name from the official parameter names and shapes."""
    overrides = dict(overrides or {})
    width = _require(state, BACKBONE + "class_embedding").shape[0]
    positions = _require(state, BACKBONE + "positional_embedding").shape[0] - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise ConversionError(f"positional_embedding has {positions} patch rows, not a square grid")
    layers = _count(state, re.escape(BACKBONE) + r"transformer\.resblocks\.(\d+)\.")
    kwargs = dict(
        hidden_size=width, num_hidden_layers=layers, num_attention_heads=max(1, width // 64),
        intermediate_size=_require(state, BACKBONE + "transformer.resblocks.0.mlp.c_fc.weight").shape[0],
        patch_size=_require(state, BACKBONE + "conv1.weight").shape[-1], position_grid_size=grid,
    )
    naive = any(k.startswith(NAIVE) for k in state)
    if naive:
        kwargs["head_type"] = "naive"
        tasks = _read_tasks(state, NAIVE + "recog.head.2.weight",
                            re.escape(NAIVE) + r"(?P<type>\w+)\.fcs\.(?P<task>[^.]+)\.weight$")
        for task_type in NAIVE_DENSE_TYPES:
            key = NAIVE + task_type + ".head.conv_seg.weight"
            if key in state:
                outputs = state[key].shape[0]
                name = NAIVE_DENSE_NAMES.get((task_type, outputs), f"{task_type}_custom")
                tasks.append(_task(name, type=task_type, num_queries=outputs))
        classifier = next((k for k in state if ".fcs." in k and k.endswith(".weight")), None)
        if classifier is not None:
            kwargs["naive_value_hidden_size"] = state[classifier].shape[1]
        seg = next((k for k in state if k.endswith("head.conv_seg.weight")), None)
        if seg is not None:
            kwargs["naive_dense_channels"] = state[seg].shape[1]
    else:
        tasks = _read_tasks(state, INTERPRETERS + "feature_v2.head.2.weight",
                            re.escape(DECODER) + r"query_feat\.(?P<task>[^.]+)\.weight$")
        hidden = _require(state, DECODER + "level_embed.weight").shape[1]
        levels = _require(state, DECODER + "level_embed.weight").shape[0]
        if levels != 1:
            raise ConversionError(f"level_embed has {levels} rows; official checkpoints read one level (11)")
        kwargs.update(
            decoder_hidden_size=hidden, decoder_num_attention_heads=max(1, hidden // 32),
            decoder_num_layers=_count(state, re.escape(DECODER) + r"transformer_ffn_layers\.(\d+)\."),
            decoder_ffn_dim=_require(state, DECODER + "transformer_ffn_layers.0.linear1.weight").shape[0],
            decoder_levels=[layers - 1],
        )
        stage2 = DECODER + "new_level_embed.weight" in state
        if stage2:
            extra = state[DECODER + "new_level_embed.weight"].shape[0]
            if extra != len(LAYER_ATTENTION_LEVELS) and "layer_attention_levels" not in overrides:
                raise ConversionError(
                    f"new_level_embed has {extra} rows; give layer_attention_levels explicitly for this checkpoint")
            kwargs["layer_attention_levels"] = list(LAYER_ATTENTION_LEVELS)
    if not tasks:
        raise ConversionError("no task heads found in the checkpoint")
    # The loss weights of the recipe that trained the checkpoint travel with its tasks, so fine-tuning a converted
    # model weighs its tasks as the paper did (Base or Full by the task set; tasks outside the recipe weigh 1).
    kwargs["tasks"] = with_official_loss_weights(tasks, recipe="naive" if naive else None)
    kwargs.update(overrides)
    try:
        config = FaceptorConfig(**kwargs)
        return config, config.variant_name
    except ValueError as error:
        raise ConversionError(f"inconsistent checkpoint: {error}") from error


def convert_state_dict(state, config: FaceptorConfig) -> "OrderedDict[str, torch.Tensor]":
    """Official names -> faceptor-hf names by ``CONVERSION_RULES`` (see the table in the README).

    Every key must match exactly one rule; keys that match none raise ``ConversionError`` naming up to five of
    them, as does a recognition head when ``config`` has no recognition task to name it after.
    """
    fields = {"recognition": next((t.name for t in config.tasks if t.readout == "embedding"), None)}
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unknown = []
    for key, value in state.items():
        matches = matching_rules(key)
        if len(matches) > 1:
            raise RuntimeError(f"{key!r} matches several conversion rules "
                               f"{[rule.pattern.pattern for rule, _ in matches]}: the rule table is ambiguous")
        if not matches:
            unknown.append(key)
            continue
        rule, match = matches[0]
        groups = {**fields, **match.groupdict()}
        if any("{recognition}" in target for target in rule.targets) and groups["recognition"] is None:
            unknown.append(key)
            continue
        tensors = rule.transform(value) if rule.transform is not None else (value,)
        for target, tensor in zip(rule.targets, tensors):
            out[target.format(**groups)] = tensor.clone()
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ConversionError(f"unexpected key{'s' if len(unknown) > 1 else ''} {unknown[:5]}{more}: not part of "
                              "an official Faceptor checkpoint")
    return out


def convert_checkpoint(checkpoint_path: str, output_dir: str | None = None, config_overrides: dict | None = None,
                       verbose: bool = False) -> tuple[FaceptorModel, str]:
    """Convert and (when ``output_dir`` is given) save config + model.safetensors + preprocessor_config.json.

    Returns the loaded model (eval mode) and the detected variant name.
    """
    state = load_official_state_dict(checkpoint_path)
    config, variant = infer_config(state, config_overrides)
    converted = convert_state_dict(state, config)
    model = FaceptorModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ConversionError(f"{checkpoint_path}: incomplete or altered {variant} checkpoint; missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]} (faceptor-hf parameter names)")
    for name, tensor in converted.items():
        if tensor.shape != expected[name].shape:
            raise ConversionError(f"{checkpoint_path}: {name} has shape {tuple(tensor.shape)}, expected "
                                  f"{tuple(expected[name].shape)}")
    model.load_state_dict(converted, strict=True)
    model.eval()
    if verbose:
        print(f"{checkpoint_path}: {variant}, tasks {config.task_names}, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters")
    # Provenance travels with the config (and so with every save and push).
    model.config.converted_from = {"checkpoint": os.path.basename(checkpoint_path), "variant": variant}
    if output_dir is not None:
        model.save_pretrained(output_dir)
        FaceptorImageProcessor().save_pretrained(output_dir)
    return model, variant


def main(argv=None) -> int:
    """``python -m faceptor_hf.convert_faceptor_original_to_hf ARGS`` is ``faceptor-hf convert ARGS``."""
    from .commands import main as command_line

    return command_line(["convert", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
