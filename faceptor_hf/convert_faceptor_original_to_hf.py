"""Convert an official Faceptor checkpoint (``checkpoint_rank0_iter_*.pth.tar``) to a faceptor-hf folder.

    python -m faceptor_hf.convert_faceptor_original_to_hf --checkpoint PATH --output DIR

The variant (Faceptor-Base / Faceptor-Full stage 1 / stage 2 / Naive Faceptor) and the task list are read from
the parameter names and shapes. Training-only entries (CosFace classifier, optimizer, ``Norm2d`` alias keys) and the
encoder's unused ``ln_post``/``proj`` are dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections import OrderedDict

import torch

from .configuration_faceptor import LAYER_ATTENTION_LEVELS, FaceptorConfig, make_task, task_type_of
from .image_processing_faceptor import FaceptorImageProcessor
from .modeling_faceptor import FaceptorModel

BACKBONE = "backbone_module.visual."
DECODER = "heads_module.decoder."
INTERPRETERS = "heads_module.interpreters."
NAIVE = "heads_module.heads."
# Known official dense heads of Naive Faceptor, by output count (the checkpoint stores no dense task names).
NAIVE_DENSE_NAMES = {
    ("parsing", 19): "parsing_celebam", ("parsing", 11): "parsing_lapa", ("align", 68): "align_300w",
    ("align", 98): "align_wflw", ("align", 29): "align_cofw", ("align", 19): "align_aflw",
}


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
            f"found {type(checkpoint).__name__} with keys {list(checkpoint)[:5] if isinstance(checkpoint, dict) else '-'}"
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


def _read_tasks(state, recognition_key: str, query_pattern: str) -> list[dict]:
    """Recognition task (if its head exists) then one task per key matching ``query_pattern``, in key order
    (the official ModuleDicts keep the training config's task order)."""
    tasks = []
    if recognition_key in state:
        tasks.append(make_task(_recognition_task_name(state), embedding_size=state[recognition_key].shape[0]))
    for key, value in state.items():
        match = re.match(query_pattern, key)
        if match:
            tasks.append(make_task(match.group("task"), num_queries=value.shape[0]))
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
        tasks = _read_tasks(state, NAIVE + "recog.head.2.weight", re.escape(NAIVE) + r"\w+\.fcs\.(?P<task>[^.]+)\.weight$")
        for task_type in ("parsing", "align"):
            key = NAIVE + task_type + ".head.conv_seg.weight"
            if key in state:
                outputs = state[key].shape[0]
                name = NAIVE_DENSE_NAMES.get((task_type, outputs), f"{task_type}_custom")
                tasks.append(make_task(name, type=task_type, num_queries=outputs))
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
    for task in tasks:
        if task_type_of(task["name"]) != task["type"]:
            raise ConversionError(f"task {task['name']!r}: type could not be read from its name")
    kwargs["tasks"] = tasks
    kwargs.update(overrides)
    try:
        config = FaceptorConfig(**kwargs)
        return config, config.variant_name
    except ValueError as error:
        raise ConversionError(f"inconsistent checkpoint: {error}") from error


def _split_qkv(prefix_out: str, weight: torch.Tensor, bias: torch.Tensor) -> dict:
    out = {}
    for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3, dim=0), bias.chunk(3, dim=0)):
        out[f"{prefix_out}.{name}.weight"] = w.clone()
        out[f"{prefix_out}.{name}.bias"] = b.clone()
    return out


def _map_recognition(source: str, task: str, suffix: str) -> str | None:
    table = {"norm": "layer_norm", "head.0": "fc1", "head.1": "batch_norm1", "head.2": "fc2", "head.3": "batch_norm2"}
    for old, new in table.items():
        if suffix.startswith(old + "."):
            return f"recognition_heads.{task}.{new}{suffix[len(old):]}"
    return None


def convert_state_dict(state, config: FaceptorConfig) -> "OrderedDict[str, torch.Tensor]":
    """Official names -> faceptor-hf names (see the table in the README)."""
    recog = next((t["name"] for t in config.tasks if t["readout"] == "embedding"), None)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    handled = set()
    encoder_names = {
        "class_embedding": "encoder.embeddings.class_embedding",
        "positional_embedding": "encoder.embeddings.position_embedding",
        "conv1.weight": "encoder.embeddings.patch_embedding.weight",
        "ln_pre.weight": "encoder.pre_layernorm.weight",
        "ln_pre.bias": "encoder.pre_layernorm.bias",
    }
    block_names = {"attn.in_proj_weight": "self_attn.qkv_proj.weight", "attn.in_proj_bias": "self_attn.qkv_proj.bias",
                   "attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                   "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    decoder_layer_names = {
        "transformer_cross_attention_layers.{i}.multihead_attn.out_proj": "layers.{i}.cross_attn.out_proj",
        "transformer_cross_attention_layers.{i}.norm": "layers.{i}.cross_attn_layer_norm",
        "transformer_self_attention_layers.{i}.self_attn.out_proj": "layers.{i}.self_attn.out_proj",
        "transformer_self_attention_layers.{i}.norm": "layers.{i}.self_attn_layer_norm",
        "transformer_ffn_layers.{i}.linear1": "layers.{i}.fc1",
        "transformer_ffn_layers.{i}.linear2": "layers.{i}.fc2",
        "transformer_ffn_layers.{i}.norm": "layers.{i}.final_layer_norm",
    }
    naive_value_names = {"channel_attention.mlp.1": "gate_fc1", "channel_attention.mlp.3": "gate_fc2",
                         "norm": "batch_norm", "feature.0": "fc1", "feature.3": "fc2"}
    naive_dense_names = {"fpns.0.0": "upsample4_deconv1", "fpns.0.1": "upsample4_norm",
                         "fpns.0.3": "upsample4_deconv2", "fpns.1": "upsample2_deconv", "head.conv_seg": "classifier",
                         "head.bottleneck": "bottleneck", "head.fpn_bottleneck": "fpn_bottleneck"}

    def rename(old: str, table: dict) -> str | None:
        for prefix, new in table.items():
            if old == prefix or old.startswith(prefix + "."):
                return new + old[len(prefix):]
        return None

    for key, value in state.items():
        new = None
        if key.startswith("losses_module.") or key in (BACKBONE + "ln_post.weight", BACKBONE + "ln_post.bias",
                                                       BACKBONE + "proj"):
            handled.add(key)
            continue
        if key.startswith(BACKBONE):
            rest = key[len(BACKBONE):]
            new = encoder_names.get(rest)
            match = re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", rest)
            if match:
                mapped = rename(match.group(2), block_names)
                new = f"encoder.layers.{match.group(1)}.{mapped}" if mapped else None
        elif key.startswith(DECODER):
            rest = key[len(DECODER):]
            match = re.match(r"transformer_(cross|self)_attention_layers\.(\d+)\.(multihead_attn|self_attn)\.in_proj_"
                             r"(weight|bias)$", rest)
            if match:
                kind, index = match.group(1), match.group(2)
                if match.group(4) == "weight":
                    bias_key = key[: -len("weight")] + "bias"
                    out.update(_split_qkv(f"decoder.layers.{index}.{kind}_attn", value, _require(state, bias_key)))
                    handled.update({key, bias_key})
                continue
            match = re.match(r"(query_feat|query_embed)\.([^.]+)\.weight$", rest)
            if match:
                field = "query_content" if match.group(1) == "query_feat" else "query_position"
                new = f"decoder.{field}.{match.group(2)}"
            elif rest == "level_embed.weight":
                new = "decoder.level_embeddings"
            elif rest == "new_level_embed.weight":
                new = "decoder.layer_attention_embeddings"
            elif re.match(r"(new_)?input_proj\.\d+\.(weight|bias)$", rest):
                field = "layer_attention_projections" if rest.startswith("new_") else "level_projections"
                index, param = rest.split(".")[-2:]
                new = f"decoder.{field}.{index}.{param}"
                value = value.flatten(1) if param == "weight" else value
            elif rest.startswith("adapt_pos2d."):
                new = "decoder.position_mlp." + {"0": "fc1", "2": "fc2"}[rest.split(".")[1]] + "." + rest.split(".")[2]
            else:
                match = re.match(r"(transformer_\w+_layers)\.(\d+)\.(.+)$", rest)
                if match:
                    table = {k.format(i=match.group(2)): v.format(i=match.group(2)) for k, v in decoder_layer_names.items()}
                    mapped = rename(rest, table)
                    new = f"decoder.{mapped}" if mapped else None
        elif key.startswith(INTERPRETERS):
            rest = key[len(INTERPRETERS):]
            if rest.startswith("feature_v2.") and recog:
                new = _map_recognition(rest, recog, rest[len("feature_v2."):])
            elif rest.startswith("value.fc."):
                new = "value_head.fc." + rest.split(".")[-1]
            elif rest.startswith("map_v2.mask_map.1.ln."):
                handled.add(key)  # Norm2d alias of mask_map.1.weight/bias
                continue
            elif rest.startswith("map_v2.mask_map."):
                index, param = rest.split(".")[2], rest.split(".")[3]
                new = "map_head." + {"0": "upsample1", "1": "norm", "3": "upsample2"}[index] + "." + param
            elif rest.startswith("map_v2.mask_embed.layers."):
                index, param = rest.split(".")[3], rest.split(".")[4]
                new = f"map_head.query_mlp.{index}.{param}"
        elif key.startswith(NAIVE):
            rest = key[len(NAIVE):]
            head_type, sub = rest.split(".", 1)
            if head_type == "recog" and recog:
                new = _map_recognition(sub, recog, sub)
            elif head_type in ("parsing", "align"):
                match = re.match(r"head\.(psp_modules)\.(\d+)\.1\.(.+)$", sub)
                if match:
                    new = f"pyramid_convs.{match.group(2)}.{match.group(3)}"
                else:
                    new = rename(sub, naive_dense_names)
                    if new is None and sub.startswith("head."):
                        new = sub[len("head."):]
                new = f"naive_dense_heads.{head_type}.{new}" if new else None
            else:
                match = re.match(r"conv\.(\d+)\.weight$", sub)
                if match:
                    new = f"naive_value_heads.{head_type}.level_convs.{match.group(1)}.weight"
                elif sub.startswith("fcs."):
                    new = f"naive_value_heads.{head_type}.classifiers.{sub[len('fcs.'):]}"
                else:
                    mapped = rename(sub, naive_value_names)
                    new = f"naive_value_heads.{head_type}.{mapped}" if mapped else None
        if new is None:
            raise ConversionError(f"unexpected key {key!r}: not part of an official Faceptor checkpoint")
        out[new] = value.clone()
        handled.add(key)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="official checkpoint_rank0_iter_*.pth.tar")
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument("--config-overrides", default=None,
                        help="JSON object of FaceptorConfig fields to set (e.g. head counts of a custom model)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None,
                        help="also publish model, processor, code and model card to this Hub repo (one commit each)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if needed)")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")


def run(args: argparse.Namespace) -> int:
    overrides = json.loads(args.config_overrides) if args.config_overrides else None
    try:
        model, variant = convert_checkpoint(args.checkpoint, args.output, overrides, verbose=True)
    except ConversionError as error:
        print(f"error: {error}")
        return 2
    print(f"wrote {variant} to {args.output}")
    if args.push_to_hub:
        from .hub import PushError

        processor = FaceptorImageProcessor.from_pretrained(args.output)
        try:
            print(f"pushing model, code and model card to {args.push_to_hub} ...", flush=True)
            info = model.push_to_hub(args.push_to_hub, private=args.private or None, token=args.token,
                                     revision=args.revision, commit_message=f"Add {variant} (converted)")
            print(f"  {info.commit_url}", flush=True)
            print("pushing image processor ...", flush=True)
            info = processor.push_to_hub(args.push_to_hub, token=args.token, revision=args.revision)
            print(f"  {info.commit_url}")
        except PushError as error:
            print(f"error: {error}")
            return 3
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
