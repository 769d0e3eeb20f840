"""``faceptor-hf demo``: the Gradio app of ``faceptor_hf.demo`` in a local web server.

    faceptor-hf demo --model M [--index gallery/] [--host 127.0.0.1 --port 7860]
    faceptor-hf demo --random-weights            # untrained weights: the page shows the UNTRAINED banner

Serves until interrupted (Ctrl-C); exit status 0, or 2 for a user's mistake (no model, gradio not installed, an
index built by another model, a port in use).
"""

from __future__ import annotations

import argparse
import os

from .errors import CommandError
from .formatting import HelpFormatter
from .model_options import add_model_arguments, model_source, parse_device

DEMO_EXTRA = 'pip install "faceptor-hf[demo]"'


def register(subparsers) -> None:
    """Add the ``demo`` parser to ``subparsers``."""
    parser = subparsers.add_parser("demo", help="a Gradio web app: analyze, verify, search and video tabs",
                                   description="Start the Gradio app of faceptor_hf.demo: Analyze (overlay, per-face "
                                               "table, JSON), Verify, Search (with --index) and Video (with PyAV). "
                                               "Serves until interrupted.",
                                   formatter_class=HelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--index", default=None,
                        help="a face index folder (`faceptor-hf index build`) for the Search tab; without it the tab "
                             "is hidden")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 makes the app reachable from other machines)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    try:
        import gradio  # noqa: F401 - checked before the model is loaded
    except ImportError as error:
        raise CommandError(f"the demo needs gradio: {DEMO_EXTRA}") from error
    from ..demo import build_demo, demo_theme
    from ..loading import load_model
    from ..pipeline_face_analysis import FaceAnalysisPipeline

    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be between 1 and 65535, got {args.port}")
    if args.index is not None and not os.path.isdir(args.index):
        raise CommandError(f"--index {args.index}: no such folder (write one with `faceptor-hf index build`)")
    source = model_source(args)
    device = parse_device(args.device)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    model, processor = load_model(source, dtype=args.dtype, allow_onnx=True)
    pipe = FaceAnalysisPipeline(model=model, image_processor=processor, device=device,
                                dtype=getattr(torch, args.dtype))
    demo = build_demo(pipe, index=args.index)
    try:
        demo.launch(server_name=args.host, server_port=args.port, theme=demo_theme(), show_error=True)
    except OSError as error:  # the port is taken
        raise CommandError(f"cannot serve on {args.host}:{args.port}: {str(error).splitlines()[0]}") from error
    except KeyboardInterrupt:
        demo.close()
    return 0
