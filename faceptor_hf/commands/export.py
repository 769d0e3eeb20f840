"""``faceptor-hf export onnx``: a Faceptor model (and the face detector) -> a self-describing ONNX folder.

The work is ``faceptor_hf.onnx.export_onnx``; afterwards the folder is loaded with ONNX Runtime and compared with
the PyTorch model on random crops (``--no-verify`` skips that), one line per task.
"""

from __future__ import annotations

import argparse
import os

import torch

from ..configuration_faceptor import FaceptorConfig
from ..image_processing_faceptor import FaceptorImageProcessor
from ..modeling_faceptor import FaceptorModel
from ..onnx.export import DEFAULT_OPSET, MIN_OPSET, check_opset
from .errors import CommandError
from .formatting import HelpFormatter

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
    source = onnx.add_argument_group("model")
    source.add_argument("--model", default=None, help="faceptor-hf folder or Hub id (see `faceptor-hf convert`)")
    source.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model")
    source.add_argument("--random-weights", action="store_true",
                        help="untrained Faceptor-Base instead of --model (its config records that it is untrained)")
    source.add_argument("--seed", type=int, default=0, help="random seed of the --random-weights initialisation")
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
                           help="dynamic int8 quantisation of the Faceptor graphs' matrix weights (faster on CPUs; "
                                "outputs drift, see benchmarks/RESULTS.md)")
    graph.add_argument("--no-detector", action="store_true", help="do not export the RetinaFace detector")
    graph.add_argument("--allow-unregistered-task-types", action="store_true",
                       help="export tasks whose type is not registered in this process (decoded generically by "
                            "their readout) instead of refusing them")
    graph.add_argument("--no-verify", action="store_true",
                       help="skip the comparison of the ONNX Runtime outputs with PyTorch's after the export")
    onnx.set_defaults(run=run)
    parser.set_defaults(run=run)


def load_model(args: argparse.Namespace):
    """(model, image processor) of ``--model`` or ``--random-weights``."""
    if args.random_weights:
        torch.manual_seed(args.seed)
        return FaceptorModel(FaceptorConfig.faceptor_base()).eval(), FaceptorImageProcessor()
    if not args.model:
        raise CommandError("no model given: pass --model DIR_OR_HUB_ID (a folder written by `faceptor-hf convert`) or "
                           "--random-weights")
    hub = {"revision": args.revision} if args.revision else {}
    try:
        model = FaceptorModel.from_pretrained(args.model, **hub)
    except (OSError, ValueError) as error:
        hint = ""
        from ..onnx import is_onnx_folder

        if is_onnx_folder(args.model):
            hint = " (it is already an ONNX export)"
        raise CommandError(f"cannot load model {args.model!r}: {str(error).splitlines()[0]}{hint}") from error
    try:
        processor = FaceptorImageProcessor.from_pretrained(args.model, **hub)
    except OSError:
        processor = FaceptorImageProcessor()
    return model.eval(), processor


def run(args: argparse.Namespace) -> int:
    """Export as the options say, then (unless ``--no-verify``) compare with PyTorch; 0 on success."""
    from ..onnx import FaceptorOnnxModel, MissingOnnxDependency, OnnxExportError, compare_with_pytorch, export_onnx

    if getattr(args, "target", None) is None:  # pragma: no cover - argparse requires the target
        raise CommandError("name the export target: faceptor-hf export onnx ...")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise CommandError(f"--output {args.output}: exists and is not a folder")
    try:
        check_opset(args.opset)  # before the model is loaded
    except OnnxExportError as error:
        raise CommandError(str(error)) from error
    model, processor = load_model(args)
    try:
        folder = export_onnx(model, args.output, tasks=args.tasks,
                             opset=args.opset, fp16=args.fp16, int8=args.int8, detector=not args.no_detector,
                             allow_unregistered_task_types=args.allow_unregistered_task_types,
                             image_processor=processor)
    except (OnnxExportError, MissingOnnxDependency) as error:
        raise CommandError(str(error)) from error
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
