"""Training-step throughput and peak memory for the Faceptor-Base task mix: our step against the official path.

Both steps run in the same process on the same weights and the same synthetic batches (per-task batch sizes of
the official Base recipe, scaled by ``--batch-scale``):
* ours: each input group (112 / 512 px) through the encoder once, each task's head on its own rows
  (``FaceptorModel.forward_task_batches``), SDPA attention, optional bf16 autocast, optional gradient
  checkpointing;
* official path: fp32, eager attention with materialized weights, the same grouping (the official solver also
  concatenates a size group), one decoder call per task.
Both steps are ``FaceptorForMultiTaskTraining`` forward passes that return the loss (the registry's losses, official
formulas); the step includes backward and an AdamW update.

    python benchmarks/benchmark_training.py --batch-scale 0.0625            # CPU: 1/16 of the official batches
    python benchmarks/benchmark_training.py --device cuda --dtypes float32 bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from faceptor_hf import FaceptorConfig
from faceptor_hf.task_types import get_task_type
from faceptor_hf.training import FaceptorForMultiTaskTraining

# Official per-GPU batch sizes of Faceptor-Base (docs/architecture.md §5.3).
BASE_BATCHES = {"recog_ms1mv3": 128, "age_morph2": 32, "biattr_celeba": 32, "affect_affectnet": 32,
                "affect_rafdb": 8, "parsing_celebam": 2, "align_300w": 2}
IDENTITIES = 1000  # the real classifier has 93,431 rows; its matmul is small next to the encoder


def synthetic_batch(model, scale: float, device, seed: int = 0) -> dict:
    """``FaceptorForMultiTaskTraining`` keyword arguments: pixels per model input, each task's rows and its
    targets in the forms the example builder produces."""
    generator = torch.Generator().manual_seed(seed)
    pixels, task_rows, labels = {}, {}, {}
    for name, full in BASE_BATCHES.items():
        task = model.config.get_task(name)
        size = 112 if task.model_input == "pixel_values" else 512
        count = max(1, round(full * scale))
        parts = pixels.setdefault(task.model_input, [])
        start = sum(part.shape[0] for part in parts)
        parts.append(torch.randn(count, 3, size, size, generator=generator))
        task_rows[name] = slice(start, start + count)
        column = get_task_type(task).label_column
        if column == "identity":
            labels[name] = torch.randint(0, IDENTITIES, (count,), generator=generator)
        elif column == "age":
            labels[name] = torch.rand(count, generator=generator) * 80 + 10
        elif column == "attributes":
            labels[name] = torch.randint(-1, 2, (count, task.num_queries), generator=generator).to(torch.int8)
        elif column == "expression":
            labels[name] = torch.randint(0, task.num_queries, (count,), generator=generator)
        elif column == "mask":
            labels[name] = torch.randint(0, task.num_queries, (count, 512, 512), generator=generator)
        else:
            labels[name] = torch.rand(count, task.num_queries, 2, generator=generator) * 511
    inputs = {model_input: torch.cat(parts).to(device) for model_input, parts in pixels.items()}
    return {**inputs, "task_rows": task_rows, "labels": {name: value.to(device) for name, value in labels.items()}}


def make_step(module, optimizer, batch, autocast_dtype):
    def step():
        device_type = next(module.parameters()).device.type
        context = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else torch.autocast(
            device_type, enabled=False)
        with context:
            loss = module(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(step, device, warmup: int, iters: int) -> tuple[float, float]:
    """(seconds per step, peak CUDA memory in GiB; None on the CPU, where the process-wide RSS peak cannot be told
    apart between the two paths run in one process)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = None
    return (time.perf_counter() - start) / iters, peak


def build(attn: str, device, checkpointing: bool):
    config = FaceptorConfig.faceptor_base()
    config._attn_implementation = attn  # the preset's tasks carry the official Base recipe's loss weights
    torch.manual_seed(0)
    module = FaceptorForMultiTaskTraining(config, {"recog_ms1mv3": IDENTITIES}).to(device).train()
    if checkpointing:
        module.faceptor.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return module, torch.optim.AdamW(module.parameters(), lr=1e-5, weight_decay=0.05)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-scale", type=float, default=1.0, help="fraction of the official batch sizes")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="autocast dtypes of ours")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--json", default=None, help="append results as JSON lines to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    official, official_optimizer = build("eager", device, checkpointing=False)
    batch = synthetic_batch(official, args.batch_scale, device)
    samples = sum(rows.stop - rows.start for rows in batch["task_rows"].values())
    baseline, baseline_peak = measure(make_step(official, official_optimizer, batch, None), device, args.warmup,
                                      args.iters)
    del official, official_optimizer
    rows = [{"path": "official", "dtype": "float32", "seconds_per_step": baseline, "samples_per_s": samples / baseline,
             "peak_gib": baseline_peak, "speedup": 1.0}]
    for dtype_name in args.dtypes:
        module, optimizer = build("sdpa", device, args.gradient_checkpointing)
        dtype = None if dtype_name == "float32" else getattr(torch, dtype_name)
        seconds, peak = measure(make_step(module, optimizer, batch, dtype), device, args.warmup, args.iters)
        rows.append({"path": "ours" + (" + checkpointing" if args.gradient_checkpointing else ""),
                     "dtype": dtype_name, "seconds_per_step": seconds, "samples_per_s": samples / seconds,
                     "peak_gib": peak, "speedup": baseline / seconds})
        del module, optimizer
    header = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "batch_scale": args.batch_scale, "samples_per_step": samples}
    for row in rows:
        line = json.dumps({**header, **row})
        print(line)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(line + "\n")


if __name__ == "__main__":
    main()
