"""``faceptor-hf convert``: a faceptor-hf model folder (optionally pushed to the Hub) from either

* an official Faceptor checkpoint (``--checkpoint``, ``faceptor_hf.convert_faceptor_original_to_hf``): the trained
  model, or
* a FaRL or CLIP image encoder (``--encoder-checkpoint`` with ``--preset``, ``faceptor_hf.convert_farl_encoder_to_hf``):
  where the paper's training starts — encoder from the checkpoint, decoder and heads freshly initialized.
"""

from __future__ import annotations

import argparse
import json

from ..configuration_faceptor import PRESET_NAMES
from .errors import CommandError
from .formatting import HelpFormatter


def register(subparsers) -> None:
    """Add the ``convert`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "convert", help="convert an official Faceptor checkpoint, or start a model from a FaRL/CLIP encoder",
        description="Write a faceptor-hf folder (config.json, model.safetensors, preprocessor_config.json) from an "
                    "official Faceptor checkpoint (checkpoint_rank0_iter_*.pth.tar), or a freshly initialized "
                    "model of a preset whose encoder comes from FaRL / CLIP (the paper's starting point for "
                    "training).", formatter_class=HelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="official checkpoint_rank0_iter_*.pth.tar to convert")
    source.add_argument("--encoder-checkpoint", metavar="PATH_OR_HUB_ID",
                        help="FaRL / OpenAI-CLIP checkpoint (visual.* keys, e.g. "
                             "FaRL-Base-Patch16-LAIONFace20M-ep64.pth) or a transformers CLIP folder / Hub id "
                             "(e.g. openai/clip-vit-base-patch16)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default=None,
                        help="with --encoder-checkpoint: the architecture and tasks (default base)")
    parser.add_argument("--encoder-revision", default=None, help="Hub revision of --encoder-checkpoint")
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument("--config-overrides", default=None,
                        help="JSON object of FaceptorConfig fields to set (e.g. head counts of a custom model)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None,
                        help="also publish model, processor, code and model card to this Hub repo (one commit)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if needed)")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    parser.set_defaults(run=run)


def _overrides(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError(f"--config-overrides is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise CommandError(f"--config-overrides must be a JSON object, got {type(value).__name__}")
    return value


def run(args: argparse.Namespace) -> int:
    """Convert (and push) as the options say; 0 on success, 3 when the push fails."""
    from ..image_processing_faceptor import FaceptorImageProcessor

    overrides = _overrides(args.config_overrides)
    if args.checkpoint:
        from ..convert_faceptor_original_to_hf import ConversionError, convert_checkpoint

        if args.preset or args.encoder_revision:
            raise CommandError("--preset and --encoder-revision go with --encoder-checkpoint; an official checkpoint "
                               "brings its own architecture")
        try:
            model, variant = convert_checkpoint(args.checkpoint, args.output, overrides, verbose=True)
        except ConversionError as error:
            raise CommandError(str(error)) from error
        print(f"wrote {variant} to {args.output}")
        message = f"Add {variant} (converted)"
    else:
        from ..convert_farl_encoder_to_hf import EncoderCheckpointError, build_from_encoder

        try:
            model, info = build_from_encoder(args.encoder_checkpoint, args.preset or "base", overrides,
                                             revision=args.encoder_revision, token=args.token)
        except EncoderCheckpointError as error:
            raise CommandError(str(error)) from error
        model.save_pretrained(args.output)
        FaceptorImageProcessor().save_pretrained(args.output)
        variant = model.config.variant_name
        print(f"wrote {variant} to {args.output}: encoder from {info.source} ({info.layout}; position grid "
              f"{info.source_grid}x{info.source_grid} resized to {info.target_grid}x{info.target_grid}; "
              f"{info.dropped} unused tensors dropped); decoder and heads freshly initialized, flagged untrained "
              "until trained")
        message = f"Add {variant} with its encoder from {info.source} (untrained heads)"
    if args.push_to_hub:
        from ..hub import PushError, push_to_hub

        processor = FaceptorImageProcessor.from_pretrained(args.output)
        try:
            print(f"pushing model, processor, code and model card to {args.push_to_hub} ...", flush=True)
            commit = push_to_hub(args.push_to_hub, model=model, processor=processor, private=args.private or None,
                                 token=args.token, revision=args.revision, commit_message=message)
            print(f"  {commit.commit_url}", flush=True)
        except PushError as error:
            print(f"error: {error}")
            return 3
    return 0
