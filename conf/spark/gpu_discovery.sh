#!/usr/bin/env bash
# Spark GPU discovery script (spark.{executor,worker,driver}.resource.gpu.discoveryScript):
# prints the GPUs nvidia-smi sees as {"name": "gpu", "addresses": ["0", "1", ...]}.
# Ship it with `spark-submit --files conf/spark/gpu_discovery.sh`; Spark runs it when an executor starts.
set -euo pipefail
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_discovery.sh: nvidia-smi not found on $(hostname); this node has no NVIDIA driver" >&2
  exit 1
fi
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ' | sed '/^$/d' | sed 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
