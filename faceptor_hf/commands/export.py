"""``faceptor-hf export onnx``: a Faceptor model (and the face detector) -> a self-describing ONNX folder.

The work is ``faceptor_hf.onnx.export_onnx``; afterwards the folder is loaded with ONNX Runtime and compared with
the PyTorch model on random crops (``--no-verify`` skips that), one line per task.
"""

from __future__ import annotations

import argparse
import os

from ..onnx.export import DEFAULT_OPSET, MIN_OPSET, check_opset
from .errors import CommandError
from .formatting import HelpFormatter
from .model_options import add_model_arguments, model_source

TARGETS = ("onnx",)
#: fp32 graphs must match PyTorch to this relative difference (max |ort - torch| / max |torch| per task)
FP32_TOLERANCE = 1e-4


def register(subparsers) -> None:
    """Add the ``export`` parser (with its ``onnx`` target) to ``subparsers``."""
    parser = subparsers.add_parser(
        "export", help="export a model for another runtime (onnx)",
        description="Export a faceptor-hf model for another runtime. Targets: onnx.",
        formatter_class=HelpFormatter)
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    onnx = targets.add_parser(
        "onnx", help="ONNX graphs for ONNX Runtime, with config.json and preprocessor_config.json",
        description="Write the model as ONNX (torch.onnx.export with dynamo): faceptor_pixel_values.onnx for the "
                    "112-px tasks and faceptor_dense_pixel_values.onnx for the 512-px tasks, each with a dynamic "
                    "batch dimension and one output per task holding its raw logits, plus retinaface.onnx (the face "
                    "detector, dynamic image size), config.json and preprocessor_config.json. "
                    "pipeline('face-analysis', model=OUTPUT) then runs in ONNX Runtime. Needs the onnx extra: "
                    'pip install "faceptor-hf[onnx]".',
        formatter_class=HelpFormatter)
    # The export traces a float32 copy on the CPU; --fp16 / --int8 set the graphs' precision, not --dtype.
    add_model_arguments(onnx, device_and_dtype=False)
    graph = onnx.add_argument_group("export")
    graph.add_argument("--output", required=True, help="folder to write (created; must not hold a PyTorch model)")
    graph.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                       help="task names to export, space- or comma-separated; when not given, all of the model's")
    graph.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                       help=f"ONNX opset, {MIN_OPSET} to the newest this torch writes")
    precision = graph.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true",
                           help="float16 graphs (for GPUs; ONNX Runtime's CPU kernels are float32)")
    precision.add_argument("--int8", action="store_true",
                           help="dynamic int8 quantization of the Faceptor graphs' matrix weights (faster on CPUs; "
                                "outputs drift, see benchmarks/RESULTS.md)")
    graph.add_argument("--no-detector", action="store_true", help="do not export the RetinaFace detector")
    graph.add_argument("--allow-unregistered-task-types", action="store_true",
                       help="export tasks whose type is not registered in this process (decoded generically by "
                            "their readout) instead of refusing them")
    graph.add_argument("--no-verify", action="store_true",
                       help="skip the comparison of the ONNX Runtime outputs with PyTorch's after the export")
    onnx.set_defaults(run=run)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Export as the options say, then (unless ``--no-verify``) compare with PyTorch; 0 on success."""
    from ..loading import load_model
    from ..onnx import FaceptorOnnxModel, MissingOnnxDependency, compare_with_pytorch, export_onnx

    if getattr(args, "target", None) is None:  # pragma: no cover - argparse requires the target
        raise CommandError("name the export target: faceptor-hf export onnx ...")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise CommandError(f"--output {args.output}: exists and is not a folder")
    check_opset(args.opset)  # before the model is loaded
    model, processor = load_model(model_source(args))
    folder = export_onnx(model, args.output, tasks=args.tasks, opset=args.opset, fp16=args.fp16, int8=args.int8,
                         detector=not args.no_detector, image_processor=processor,
                         allow_unregistered_task_types=args.allow_unregistered_task_types)
    for name in sorted(os.listdir(folder)):
        size = os.path.getsize(os.path.join(folder, name))
        print(f"{os.path.join(folder, name)}  {size / 2**20:.1f} MiB")
    if args.no_verify:
        return 0
    try:
        onnx_model = FaceptorOnnxModel.from_pretrained(folder)
    except MissingOnnxDependency as error:
        raise CommandError(f"the export is written, but it cannot be verified: {error}") from error
    drift = compare_with_pytorch(model, onnx_model, batch_size=2)
    exact = not (args.fp16 or args.int8)
    print("ONNX Runtime vs PyTorch, max |difference| / max |PyTorch| per task (2 random crops):")
    for name, value in drift.items():
        print(f"  {name:24s} {value:.2e}")
    worst = max(drift, key=drift.get)
    if exact and drift[worst] > FP32_TOLERANCE:
        raise CommandError(f"the ONNX output of {worst!r} differs from PyTorch by {drift[worst]:.2e} (relative), "
                           f"more than {FP32_TOLERANCE:g}: the export is not faithful; please report it")
    return 0
