"""Video analysis throughput: ``pipe.video`` with faces of several frames in shared batches against one frame at
a time, in the same process, on an H.264 clip of the repository's portraits moving across the frame; and the share
of the time spent matching faces to tracks.

The baseline (``chunk_size=1``) is what a loop of photo calls over decoded frames does; the default
(``chunk_size=16``) detects 16 frames in one detector batch and runs their faces in model batches of
``--batch-size``. Both decode the same file with PyAV and track faces.

    python benchmarks/benchmark_video.py                           # CPU, Faceptor-Base size, random weights
    python benchmarks/benchmark_video.py --device cuda --dtype bfloat16 --frames 256 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import PIL.Image
import torch

from faceptor_hf import FaceAnalysisPipeline, FaceptorConfig, FaceptorImageProcessor, FaceptorModel
from faceptor_hf.face_tracking import FaceTracker

IMAGES = Path(__file__).parent.parent / "examples" / "images"


def write_clip(path: Path, frames: int, size: tuple[int, int], faces: int, fps: int = 25) -> None:
    """An H.264 clip of ``faces`` portraits drifting across a ``size`` frame, a few pixels per frame."""
    portraits = [PIL.Image.open(IMAGES / name).convert("RGB") for name in ("astronaut.png", "grace_hopper.jpg")]
    side = size[1] // 2
    heads = [portraits[face % 2].resize((side, side)) for face in range(faces)]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(frames):
            canvas = PIL.Image.new("RGB", size, (96, 112, 128))
            for face, head in enumerate(heads):
                x = (face * size[0] // faces + 3 * index) % max(1, size[0] - side)
                canvas.paste(head, (x, (face % 2) * (size[1] - side)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def timed_run(pipe, path: Path, chunk_size: int, batch_size: int, tasks) -> dict:
    """Frames per second of one ``pipe.video`` pass, and the seconds spent in ``FaceTracker.update``."""
    tracking = [0.0]
    update = FaceTracker.update

    def timed_update(self, *arguments):
        started = time.perf_counter()
        try:
            return update(self, *arguments)
        finally:
            tracking[0] += time.perf_counter() - started

    FaceTracker.update = timed_update
    try:
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
        started = time.perf_counter()
        records = list(pipe.video(path, chunk_size=chunk_size, batch_size=batch_size, tasks=tasks))
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
        seconds = time.perf_counter() - started
    finally:
        FaceTracker.update = update
    faces = sum(len(record["faces"]) for record in records)
    tracks = len({face["track_id"] for record in records for face in record["faces"]})
    return {"chunk_size": chunk_size, "frames": len(records), "faces": faces, "tracks": tracks,
            "seconds": round(seconds, 3), "frames_per_s": round(len(records) / seconds, 3),
            "tracking_share": round(tracking[0] / seconds, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--faces", type=int, default=3, help="portraits per frame")
    parser.add_argument("--size", default="640x360", help="frame width x height")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tasks", nargs="+", default=None, help="task names (default: all)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--output", default=None, help="also append the results as JSON lines to this file")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = FaceptorModel(FaceptorConfig.faceptor_base()).eval()
    pipe = FaceAnalysisPipeline(model=model, image_processor=FaceptorImageProcessor(), device=args.device,
                                dtype=getattr(torch, args.dtype))
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        write_clip(path, args.frames, (width, height), args.faces)
        timed_run(pipe, path, 16, args.batch_size, args.tasks)  # warm-up: weights, detector, allocator
        rows = []
        for _ in range(args.repeats):
            for chunk_size in (1, 16):
                rows.append(timed_run(pipe, path, chunk_size, args.batch_size, args.tasks))
    baseline = {row["chunk_size"]: row["frames_per_s"] for row in rows}
    print(f"{'chunk':>5s} {'frames':>6s} {'faces':>5s} {'tracks':>6s} {'s':>8s} {'frames/s':>9s} {'tracking':>8s}")
    for row in rows:
        print(f"{row['chunk_size']:5d} {row['frames']:6d} {row['faces']:5d} {row['tracks']:6d} {row['seconds']:8.2f} "
              f"{row['frames_per_s']:9.2f} {100 * row['tracking_share']:7.2f}%")
    print(f"speedup of 16-frame chunks over frame by frame: {baseline[16] / baseline[1]:.2f}x")
    if args.output:
        with open(args.output, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({**row, "device": args.device, "dtype": args.dtype, "size": args.size}) + "\n")


if __name__ == "__main__":
    main()
