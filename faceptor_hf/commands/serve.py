"""``faceptor-hf serve``: the REST server (``faceptor_hf.serving.create_app``) on uvicorn.

Loads the model (``model_options``), builds the face-analysis pipeline and serves ``POST /analyze``, ``/embed``,
``/verify``, ``GET /health`` and ``/tasks`` until interrupted; ``--ui`` also mounts the Gradio demo at ``/ui``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..loading import load_model, model_identity
from ..pipeline_face_analysis import FaceAnalysisPipeline
from .errors import CommandError
from .formatting import HelpFormatter
from .model_options import add_model_arguments, model_source, parse_device


def register(subparsers) -> None:
    """Add the ``serve`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "serve", help="serve the model over HTTP (REST API, optional web demo)",
        description="A REST server for face analysis: POST /analyze, /embed and /verify take images as multipart "
                    "uploads or base64 JSON; GET /health and /tasks describe the server and the model. Concurrent "
                    "requests share model calls. See docs/serve.md.",
        formatter_class=HelpFormatter)
    add_model_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 for every interface, e.g. in a container)")
    server.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    server.add_argument("--max-batch", type=int, default=32,
                        help="photos of concurrent requests analyzed in one pipeline call (1: one request at a time)")
    server.add_argument("--max-wait-ms", type=float, default=10.0,
                        help="how long a request waits for others to share its pipeline call")
    server.add_argument("--max-image-pixels", type=int, default=None,
                        help="larger images are refused (413); when not given, the image processor's limit")
    server.add_argument("--max-body-mb", type=float, default=64.0, help="larger request bodies are refused (413)")
    server.add_argument("--ui", action="store_true", help="also serve the Gradio demo at /ui (needs the demo extra)")
    server.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 after a clean shutdown."""
    try:
        import uvicorn

        from ..serving import create_app, freeze_loaded_objects
    except ImportError as error:
        raise CommandError(f"serve needs the serve extra ({error.name} is missing): pip install "
                           "'faceptor-hf[serve]'") from error
    if args.max_batch < 1:
        raise CommandError(f"--max-batch must be at least 1, got {args.max_batch}")
    if args.max_wait_ms < 0:
        raise CommandError(f"--max-wait-ms must not be negative, got {args.max_wait_ms}")
    if args.max_image_pixels is not None and args.max_image_pixels < 1:
        raise CommandError(f"--max-image-pixels must be positive, got {args.max_image_pixels}")
    device = parse_device(args.device)
    source = model_source(args)
    model, processor = load_model(source, dtype=args.dtype, allow_onnx=True)
    if args.max_image_pixels is not None:
        processor.max_pixels = args.max_image_pixels
    pipe = FaceAnalysisPipeline(model=model, image_processor=processor, device=device, dtype=getattr(torch, args.dtype))
    ui = None
    if args.ui:
        try:
            from ..demo import build_demo
        except ImportError as error:
            raise CommandError(f"--ui needs the demo (faceptor_hf.demo and the demo extra; {error}): pip install "
                               "'faceptor-hf[demo]'") from error
        ui = build_demo(pipe)
    app = create_app(pipe, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     max_body_bytes=int(args.max_body_mb * 1024 * 1024), model_identity=model_identity(source), ui=ui)
    if getattr(model.config, "untrained", False):
        print("WARNING: the model is untrained (random weights); its results mean nothing", file=sys.stderr)
    freeze_loaded_objects()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
