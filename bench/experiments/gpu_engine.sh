#!/usr/bin/env bash
# Issue #13 part 3 on a lent GPU machine, one call (about 5 minutes on an H200):
#   bash bench/experiments/gpu_engine.sh   (from the repository root; results: bench/results/bench_gpu.json,
#   bench_executor_gpu.json, gpu_engine_h200.log)
#   - keeps .gpu/gguf.part0 in /tmp/taosr1_gpu for bench/gpu_quality.sh (the next call);
#   - bench/bench_gpu.py: padded vs packed scoring, Qwen2 0.5B and 7B shapes, MFU;
#   - bench/bench_executor.py: the nightly's executor functions (prepare, grade) vs the raw engine.
# Needs the carried paths .gpu/gguf.part0 and .gpu/tokenizer (SmolLM2's tokenizer files).
set -o pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/taosr1_gpu && cp .gpu/gguf.part0 /tmp/taosr1_gpu/ && echo "kept gguf.part0 in /tmp/taosr1_gpu"
nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
echo "java: $(command -v java || echo none); pyspark: $(python3 -c 'import pyspark' 2>&1 | tail -1 || true)"
timeout 330 python3 bench/bench_gpu.py --shapes 0.5b,7b --out "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
timeout 150 python3 bench/bench_executor.py --random-shape 0.5b --tokenizer .gpu/tokenizer --rows 65536 \
  --out "$OUT/bench_executor.json" 2>&1 | tee "$OUT/bench_executor.log"
echo "gpu_engine.sh done"
