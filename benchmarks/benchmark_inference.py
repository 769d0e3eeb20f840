"""Throughput of all-6-task analysis of aligned faces: one-pass FaceptorModel vs a per-task baseline.

The baseline follows the official evaluation protocol: for every task the encoder and the decoder run again,
one task at a time. Both run in the same process on the same weights, so the ratio is what matters.

    python benchmarks/benchmark_inference.py                         # CPU fp32, Faceptor-Base size
    python benchmarks/benchmark_inference.py --device cuda --dtype bfloat16 --batch-sizes 1 32 128 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from faceptor_hf import FaceptorConfig, FaceptorModel

SIX_TASKS = ["recog_ms1mv3", "age_morph2", "biattr_celeba", "affect_affectnet", "parsing_celebam", "align_300w"]


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup, iters):
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--json", default=None, help="append results as JSON lines to this file")
    args = parser.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = FaceptorModel(FaceptorConfig.faceptor_base()).eval().to(device=device, dtype=dtype)
    compiled = torch.compile(model) if args.compile else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {name}, dtype {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| batch | one-pass faces/s | ms/batch | per-task baseline faces/s | speed-up | compiled faces/s "
          "| peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        small = torch.randn(batch, 3, 112, 112, device=device, dtype=dtype)
        dense = torch.randn(batch, 3, 512, 512, device=device, dtype=dtype)

        @torch.inference_mode()
        def one_pass(m=model):
            return m(pixel_values=small, dense_pixel_values=dense, tasks=SIX_TASKS)

        @torch.inference_mode()
        def per_task():
            return [model(pixel_values=small, dense_pixel_values=dense, tasks=[task]) for task in SIX_TASKS]

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fast = timed(one_pass, device, args.warmup, args.iters)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        slow = float("nan") if args.skip_baseline else timed(per_task, device, args.warmup, args.iters)
        comp = float("nan")
        if compiled is not None:
            comp = timed(lambda: one_pass(compiled), device, max(args.warmup, 2), args.iters)
        row = dict(device=name, dtype=args.dtype, batch=batch, one_pass_fps=batch / fast, ms_per_batch=1000 * fast,
                   per_task_fps=batch / slow, speedup=slow / fast, compiled_fps=batch / comp, peak_gib=peak)
        print(f"| {batch} | {row['one_pass_fps']:.1f} | {row['ms_per_batch']:.1f} | {row['per_task_fps']:.1f} | "
              f"{row['speedup']:.2f}x | {row['compiled_fps']:.1f} | {peak:.2f} |")
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
