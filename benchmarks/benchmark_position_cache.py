"""Does caching the position tables pay? Share of a batch-1 forward spent rebuilding them.

Every forward rebuilds two weight-only tables: the encoder's position table resized to the token grid (bicubic,
1024 rows) and the decoder's memory positions (sine code through a 2-layer MLP plus level embeddings). This times
those two rebuilds against the whole forward of a Faceptor-Base model at batch 1 (the case where a fixed cost
weighs most), in the same process, for the 112-px and the 512-px input.

    python benchmarks/benchmark_position_cache.py [--device cuda] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json

import torch
from benchmark_inference import timed  # the same timing loop as the model benchmark (same folder)

from faceptor_hf import FaceptorConfig, FaceptorModel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = FaceptorModel(FaceptorConfig.faceptor_base()).to(device, dtype).eval()
    results = []
    with torch.inference_mode():
        for name, size, grid in (("pixel_values", 112, (7, 7)), ("dense_pixel_values", 512, (32, 32))):
            pixels = torch.randn(1, 3, size, size, device=device, dtype=dtype)

            def tables():
                model.encoder.embeddings.resized_position_embedding(grid, dtype)
                model.decoder.memory_positions(grid, dtype, device)

            forward = timed(lambda: model(**{name: pixels}), device, warmup=2, iters=5)
            rebuild = timed(tables, device, warmup=2, iters=50)
            results.append({"input": name, "device": str(device), "dtype": args.dtype, "forward_ms": forward * 1e3,
                            "tables_ms": rebuild * 1e3, "share_of_forward": rebuild / forward})
    for row in results:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
