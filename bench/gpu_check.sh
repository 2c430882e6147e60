#!/usr/bin/env bash
# The GPU check of issue 8 (docs/performance.md): on a machine with one NVIDIA GPU where only python3
# with PyTorch, torchvision, numpy, pandas, OpenCV and PyYAML is installed. Runs the package from src/
# (no install, no network). Takes about 5 minutes on an H100-class GPU; bounded to 8.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
timeout -k 10 480 python3 bench/gpu_check.py --device "${1:-cuda}" ${2:+"$2"}
