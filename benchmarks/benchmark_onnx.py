"""ONNX Runtime vs PyTorch, in one process on the same weights: 6-task analysis of aligned faces and the whole
face-analysis pipeline, in faces/s; optionally an int8-quantized export, with its output drift per head.

Model rows (interleaved repetitions, best of ``--iters``): the per-task PyTorch baseline that stands in for the
official code (encoder and decoder again for every task, as ``benchmark_inference.py``), PyTorch one-pass, ONNX
Runtime fp32 and ONNX Runtime int8 (``--int8``). Pipeline rows: decode -> detect -> align -> analyze ->
post-process on 1920x1080 photos with 5 pasted portraits each (as ``benchmark_pipeline.py``), PyTorch vs ONNX
Runtime (detector included).
Drift: int8 vs PyTorch fp32 on the faces of the shipped photos, raw (max |d| / max |ref| per head) and decoded.

    python benchmarks/benchmark_onnx.py --int8                    # CPU, Faceptor-Base size, random weights
    python benchmarks/benchmark_onnx.py --model DIR --int8        # trained weights: drift figures that mean more
    python benchmarks/benchmark_onnx.py --device cuda --fp16 --batch-sizes 1 32 --pipeline-images 16
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from benchmark_pipeline import IMAGES, stage_timer, synthetic_photos  # noqa: E402

from faceptor_hf import FaceAnalysisPipeline, FaceptorConfig, FaceptorImageProcessor, FaceptorModel  # noqa: E402
from faceptor_hf.face_detection import RetinaFaceDetector  # noqa: E402
from faceptor_hf.image_loading import load_image  # noqa: E402
from faceptor_hf.onnx import FaceptorOnnxModel, export_onnx  # noqa: E402
from faceptor_hf.task_decoding import (  # noqa: E402
    attribute_probabilities,
    class_predictions,
    class_probabilities,
    expected_age,
    heatmap_centroids,
    parsing_labels,
    upsampled_mask_logits,
)

SIX_TASKS = ["recog_ms1mv3", "age_morph2", "biattr_celeba", "affect_affectnet", "parsing_celebam", "align_300w"]


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(functions: dict, device, warmup: int, iters: int) -> dict[str, float]:
    """Best (least disturbed) seconds per call of each function over ``iters`` rounds in which the functions take
    turns: on a shared machine other work slows single calls down, never speeds them up."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in functions}
    for _ in range(iters):
        for name, function in functions.items():
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def face_crops(device) -> dict[str, torch.Tensor]:
    """Aligned crops of the faces of the shipped photos (one per photo), for the drift figures."""
    images = [load_image(str(IMAGES / name), 0) for name in ("astronaut.png", "grace_hopper.jpg")]
    found = RetinaFaceDetector(device=device)(images)
    processor = FaceptorImageProcessor()
    crops = [processor.align([image], face_keypoints=[faces["keypoints"][:1]]) for image, faces in zip(images, found)]
    return {key: torch.cat([crop[key] for crop in crops]) for key in ("pixel_values", "dense_pixel_values")}


def drift(reference, actual) -> dict[str, dict]:
    """Per head: raw relative difference and one decoded figure (what a user of the result would notice)."""
    rows = {}
    for name, expected in reference.task_logits.items():
        expected, got = expected.float().cpu(), actual.task_logits[name].float().cpu()
        row = {"raw": float((got - expected).abs().max() / expected.abs().max())}
        if name.startswith("recog"):
            row["decoded"] = ("min cosine to fp32", float(torch.cosine_similarity(got, expected).min()))
        elif name.startswith("age"):
            years = (expected_age(got) - expected_age(expected)).abs().max()
            row["decoded"] = ("max |age difference| (years)", float(years))
        elif name.startswith("biattr"):
            row["decoded"] = ("max |probability difference|",
                              float((attribute_probabilities(got) - attribute_probabilities(expected)).abs().max()))
        elif name.startswith("affect"):
            row["decoded"] = ("max |probability difference|, top-1 agreement",
                              (float((class_probabilities(got) - class_probabilities(expected)).abs().max()),
                               float((class_predictions(got) == class_predictions(expected)).float().mean())))
        elif name.startswith("parsing"):
            labels = [parsing_labels(upsampled_mask_logits(x, (512, 512))) for x in (got, expected)]
            row["decoded"] = ("pixel label agreement", float((labels[0] == labels[1]).float().mean()))
        elif name.startswith("align"):
            shift = (heatmap_centroids(got) - heatmap_centroids(expected)) * 512
            row["decoded"] = ("mean point shift (px of the 512 crop)", float(shift.norm(dim=-1).mean()))
        rows[name] = row
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="faceptor-hf folder; default: random Faceptor-Base weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="PyTorch's dtype in the speed rows (the drift reference is always float32)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also export and time an int8-quantized folder")
    parser.add_argument("--fp16", action="store_true", help="also export and time a float16 folder (GPUs)")
    parser.add_argument("--skip-baseline", action="store_true", help="leave out the per-task PyTorch baseline")
    parser.add_argument("--pipeline-images", type=int, default=3, help="1080p photos for the pipeline rows (0: none)")
    parser.add_argument("--workdir", default=None, help="folder for the exports (default: a temporary one)")
    parser.add_argument("--json", default=None, help="append results as JSON lines to this file")
    args = parser.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda":
        import onnxruntime

        if hasattr(onnxruntime, "preload_dlls"):  # CUDA/cuDNN from the pip wheels torch brought
            onnxruntime.preload_dlls()
    torch.manual_seed(0)
    if args.model:
        model = FaceptorModel.from_pretrained(args.model).eval()
        tasks = [name for name in SIX_TASKS if name in model.config.task_names] or model.config.task_names
    else:
        model, tasks = FaceptorModel(FaceptorConfig(tasks=SIX_TASKS)).eval(), SIX_TASKS
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="faceptor-onnx-bench-"))
    variants = {"fp32": {}}
    if args.int8:
        variants["int8"] = {"int8": True}
    if args.fp16:
        variants["fp16"] = {"fp16": True}
    exported, export_seconds = {}, {}
    for variant, options in variants.items():
        start = time.perf_counter()
        folder = export_onnx(model, workdir / variant, tasks=tasks, **options)
        export_seconds[variant] = time.perf_counter() - start
        exported[variant] = FaceptorOnnxModel.from_pretrained(folder).to(device)
    model.to(device)
    import onnxruntime

    providers = exported["fp32"].graphs["pixel_values"].session.get_providers()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {name}, PyTorch {args.dtype}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"onnxruntime {onnxruntime.__version__} ({', '.join(providers)}), "
          f"export s: {', '.join(f'{k} {v:.0f}' for k, v in export_seconds.items())}")

    # ---- drift against PyTorch fp32, per head (before --dtype applies) ------------------------------------------
    crops = {key: value.to(device) for key, value in face_crops(device).items()}
    with torch.inference_mode():
        reference = model(**crops, tasks=tasks)
    for key, onnx_model in exported.items():
        rows = drift(reference, onnx_model(**crops, tasks=tasks))
        print(f"\nORT {key} vs PyTorch fp32 on the faces of the shipped photos:")
        print("| head | max abs diff / max abs | decoded |")
        print("|---|---|---|")
        for head, values in rows.items():
            label, value = values.get("decoded", ("", ""))
            shown = ", ".join(f"{v:.6g}" for v in value) if isinstance(value, tuple) else f"{value:.6g}"
            print(f"| {head} | {values['raw']:.2e} | {label}: {shown} |")
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps({"kind": "drift", "variant": key, "device": name, "heads": rows}) + "\n")

    model.to(dtype)

    # ---- model: aligned faces -> all six heads --------------------------------------------------------------------
    print("\n| batch | per-task PyTorch (official protocol) faces/s | PyTorch one-pass faces/s | "
          + " | ".join(f"ORT {k} faces/s" for k in exported) + " | ORT fp32 / PyTorch | ORT fp32 / official | "
          + " | ".join(f"ORT {k} / official" for k in exported if k != "fp32") + " |")
    print("|---" * (4 + 2 * len(exported)) + "|")
    for batch in args.batch_sizes:
        small = torch.randn(batch, 3, 112, 112, device=device)
        dense = torch.randn(batch, 3, 512, 512, device=device)
        small_pt, dense_pt = small.to(dtype), dense.to(dtype)

        @torch.inference_mode()
        def one_pass():
            return model(pixel_values=small_pt, dense_pixel_values=dense_pt, tasks=tasks)

        @torch.inference_mode()
        def per_task():
            return [model(pixel_values=small_pt, dense_pixel_values=dense_pt, tasks=[task]) for task in tasks]

        functions = {} if args.skip_baseline else {"per_task": per_task}
        functions["pytorch"] = one_pass
        for key, onnx_model in exported.items():
            functions[key] = lambda m=onnx_model: m(pixel_values=small, dense_pixel_values=dense, tasks=tasks)
        seconds = interleaved(functions, device, args.warmup, args.iters)
        fps = {key: batch / value for key, value in seconds.items()}
        official = fps.get("per_task", float("nan"))
        row = {"kind": "model", "device": name, "dtype": args.dtype, "batch": batch, "faces_per_s": fps,
               "ort_fp32_over_pytorch": fps["fp32"] / fps["pytorch"],
               "over_official": {key: fps[key] / official for key in fps}}
        print(f"| {batch} | {official:.2f} | {fps['pytorch']:.2f} | "
              + " | ".join(f"{fps[k]:.2f}" for k in exported)
              + f" | {row['ort_fp32_over_pytorch']:.2f}x | {row['over_official']['fp32']:.2f}x | "
              + " | ".join(f"{row['over_official'][k]:.2f}x" for k in exported if k != "fp32") + " |")
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps(row) + "\n")

    # ---- whole pipeline --------------------------------------------------------------------------------------------
    if args.pipeline_images <= 0:
        return
    photos = synthetic_photos(args.pipeline_images)
    pipes = {"pytorch": FaceAnalysisPipeline(model=model, image_processor=FaceptorImageProcessor(), device=device,
                                             dtype=dtype)}
    for key, onnx_model in exported.items():
        pipes[key] = FaceAnalysisPipeline(model=onnx_model, image_processor=FaceptorImageProcessor(), device=device)
    counts, stages = {}, {}

    def run(key):
        def call():
            with stage_timer(pipes[key]) as seconds:
                results = pipes[key](photos, batch_size=32, mask_format="rle")
            counts[key] = sum(len(faces) for faces in results)
            stages[key] = seconds
        return call

    for pipe in pipes.values():
        pipe(photos[:1], mask_format="rle")  # warm-up: detector, kernels, sessions
    seconds = interleaved({key: run(key) for key in pipes}, device, 0, max(1, args.iters - 1))
    print(f"\nWhole pipeline, {len(photos)} photos 1920x1080, {counts['pytorch']} faces:")
    print("| backend | faces/s | vs PyTorch | stage share decode / detect / align / analyze / post-process |")
    print("|---|---|---|---|")
    for key, value in seconds.items():
        total = sum(stages[key].values())
        share = " / ".join(f"{100 * stages[key][s] / total:.1f}" for s in ("decode", "detect", "align", "analyze",
                                                                            "postprocess"))
        print(f"| {'PyTorch' if key == 'pytorch' else 'ORT ' + key} | {counts[key] / value:.2f} | "
              f"{seconds['pytorch'] / value:.2f}x | {share} % |")
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps({"kind": "pipeline", "backend": key, "device": name, "photos": len(photos),
                                         "faces": counts[key], "faces_per_s": counts[key] / value,
                                         "over_pytorch": seconds["pytorch"] / value, "stages": stages[key]}) + "\n")


if __name__ == "__main__":
    main()
