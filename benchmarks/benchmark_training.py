"""Training-step throughput and peak memory for the Faceptor-Base task mix: our step against the official path.

Both steps run in the same process on the same weights and the same synthetic batches (per-task batch sizes of
the official Base recipe, scaled by ``--batch-scale``):
* ours: each input group (112 / 512 px) through the encoder once, each task's head on its own rows
  (``FaceptorModel.forward_task_batches``), SDPA attention, optional bf16 autocast, optional gradient
  checkpointing;
* official path: fp32, eager attention with materialised weights, the same grouping (the official solver also
  concatenates a size group), one decoder call per task.
Losses are the registry's (official formulas); the step includes backward and an AdamW update.

    python benchmarks/benchmark_training.py --batch-scale 0.0625            # CPU: 1/16 of the official batches
    python benchmarks/benchmark_training.py --device cuda --dtypes float32 bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from faceptor_hf import FaceptorConfig, FaceptorModel
from faceptor_hf.task_types import get_task_type
from faceptor_hf.training.losses import combine_task_losses, official_loss_weights
from faceptor_hf.training.trainer import TrainingModule

# Official per-GPU batch sizes of Faceptor-Base (model.md §5.3).
BASE_BATCHES = {"recog_ms1mv3": 128, "age_morph2": 32, "biattr_celeba": 32, "affect_affectnet": 32,
                "affect_rafdb": 8, "parsing_celebam": 2, "align_300w": 2}
IDENTITIES = 1000  # the real classifier has 93,431 rows; its matmul is small next to the encoder


def synthetic_batch(model, scale: float, device, seed: int = 0):
    """{model_input: (pixels, ranges)} and targets per task, in the forms the builder produces."""
    generator = torch.Generator().manual_seed(seed)
    groups, targets = {}, {}
    for name, full in BASE_BATCHES.items():
        task = model.config.get_task(name)
        size = 112 if task.model_input == "pixel_values" else 512
        count = max(1, round(full * scale))
        groups.setdefault(task.model_input, []).append((name, torch.randn(count, 3, size, size, generator=generator)))
        column = get_task_type(task).label_column
        if column == "identity":
            targets[name] = torch.randint(0, IDENTITIES, (count,), generator=generator)
        elif column == "age":
            targets[name] = torch.rand(count, generator=generator) * 80 + 10
        elif column == "attributes":
            targets[name] = torch.randint(-1, 2, (count, task.num_queries), generator=generator).to(torch.int8)
        elif column == "expression":
            targets[name] = torch.randint(0, task.num_queries, (count,), generator=generator)
        elif column == "mask":
            targets[name] = torch.randint(0, task.num_queries, (count, 512, 512), generator=generator)
        else:
            targets[name] = torch.rand(count, task.num_queries, 2, generator=generator) * 511
    batches = {}
    for model_input, parts in groups.items():
        start, ranges = 0, []
        for name, pixels in parts:
            ranges.append((name, start, start + pixels.shape[0]))
            start += pixels.shape[0]
        batches[model_input] = (torch.cat([p for _, p in parts]).to(device), ranges)
    return batches, {name: value.to(device) for name, value in targets.items()}


def make_step(module, optimizer, batches, targets, weights, autocast_dtype):
    def step():
        device_type = next(module.parameters()).device.type
        context = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else torch.autocast(
            device_type, enabled=False)
        with context:
            raw, classifiers = module(batches)
        losses = {}
        for name, output in raw.items():
            task = module.model.config.get_task(name)
            state = {"classifier_weight": classifiers[name]} if name in classifiers else {}
            losses[name] = get_task_type(task).loss(task, output.float(), targets[name], state)
        combine_task_losses(losses, weights).backward()
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
    import faceptor_hf.training  # noqa: F401 - attaches the losses to the registry

    config = FaceptorConfig.faceptor_base()
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = FaceptorModel(config)
    module = TrainingModule(model, {"recog_ms1mv3": (IDENTITIES, 512)}).to(device).train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
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
    batches, targets = synthetic_batch(official.model, args.batch_scale, device)
    samples = sum(pixels.shape[0] for pixels, _ in batches.values())
    weights = official_loss_weights(list(BASE_BATCHES), recipe="base")
    baseline, baseline_peak = measure(make_step(official, official_optimizer, batches, targets, weights, None),
                                      device, args.warmup, args.iters)
    del official, official_optimizer
    rows = [{"path": "official", "dtype": "float32", "seconds_per_step": baseline, "samples_per_s": samples / baseline,
             "peak_gib": baseline_peak, "speedup": 1.0}]
    for dtype_name in args.dtypes:
        module, optimizer = build("sdpa", device, args.gradient_checkpointing)
        dtype = None if dtype_name == "float32" else getattr(torch, dtype_name)
        seconds, peak = measure(make_step(module, optimizer, batches, targets, weights, dtype), device,
                                args.warmup, args.iters)
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
