"""Whole-pipeline throughput (decode, detect, align, analyze, post-process) on 1080p photos with 5 faces each.

Compares one batched call over all photos against one call per photo, in the same process, and reports the share
of time per stage: ``stage_timer`` wraps the pipeline's stage methods from outside (synchronizing the GPU around
each), so the pipeline itself never waits for the device. The photos are built from the repository's example
portraits, pasted at several sizes.

    python benchmarks/benchmark_pipeline.py                       # CPU, Faceptor-Base size, random weights
    python benchmarks/benchmark_pipeline.py --device cuda --dtype bfloat16 --images 64 --batch-size 128
"""

from __future__ import annotations

import argparse
import io
import json
import time
from contextlib import contextmanager
from pathlib import Path

import PIL.Image
import torch

from faceptor_hf import FaceAnalysisPipeline, FaceptorConfig, FaceptorImageProcessor, FaceptorModel

IMAGES = Path(__file__).parent.parent / "examples" / "images"


def synthetic_photos(count: int, faces: int = 5) -> list[bytes]:
    """JPEG bytes of 1920x1080 photos with ``faces`` portraits each (decoding is part of the measured work)."""
    portraits = [PIL.Image.open(IMAGES / name).convert("RGB") for name in ("astronaut.png", "grace_hopper.jpg")]
    photos = []
    for index in range(count):
        canvas = PIL.Image.new("RGB", (1920, 1080), (90 + index % 50, 110, 130))
        for face in range(faces):
            portrait = portraits[(index + face) % 2]
            scale = 0.45 + 0.1 * ((index + face) % 4)
            resized = portrait.resize((int(portrait.width * scale), int(portrait.height * scale)))
            canvas.paste(resized, (40 + face * 370, 120 + 60 * (face % 3)))
        buffer = io.BytesIO()
        canvas.save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


# Stage name -> (object attribute path on the pipeline, method name): what each stage of the table times.
STAGES = {"decode": ((), "decode"), "detect": ((), "detect"), "align": (("image_processor",), "align"),
          "analyze": ((), "_forward"), "postprocess": ((), "postprocess")}


@contextmanager
def stage_timer(pipe):
    """Inside the block, ``seconds[stage]`` accumulates the wall time of each stage method of ``pipe``
    (device-synchronized before and after each call); the methods are restored on exit."""
    seconds = dict.fromkeys(STAGES, 0.0)

    def synchronize():
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)

    def timed(stage, method):
        def call(*args, **kwargs):
            synchronize()
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                synchronize()
                seconds[stage] += time.perf_counter() - start
        return call

    owners = []
    for stage, (path, name) in STAGES.items():
        owner = pipe
        for attribute in path:
            owner = getattr(owner, attribute)
        owners.append((owner, name))
        setattr(owner, name, timed(stage, getattr(owner, name)))
    try:
        yield seconds
    finally:
        for owner, name in owners:
            delattr(owner, name)  # the instance attribute goes; the class's method shows through again


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = FaceptorModel(FaceptorConfig.faceptor_base()).eval()
    pipe = FaceAnalysisPipeline(model=model, image_processor=FaceptorImageProcessor(), device=args.device, dtype=dtype)
    photos = synthetic_photos(args.images)
    pipe(photos[:1], batch_size=args.batch_size)  # warm-up (detector weights, kernels)
    with stage_timer(pipe) as stages:
        start = time.perf_counter()
        results = pipe(photos, batch_size=args.batch_size, mask_format="rle")
        batched = time.perf_counter() - start
    faces = sum(len(r) for r in results)
    start = time.perf_counter()
    for photo in photos:
        pipe(photo, batch_size=args.batch_size, mask_format="rle")
    sequential = time.perf_counter() - start
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    total = sum(stages.values())
    row = {"device": device, "dtype": args.dtype, "images": len(photos), "faces": faces,
           "batched_images_per_s": len(photos) / batched, "batched_faces_per_s": faces / batched,
           "per_image_calls_images_per_s": len(photos) / sequential, "speedup": sequential / batched,
           "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
           "model_busy": stages["analyze"] / batched}
    print(json.dumps(row, indent=2))
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
