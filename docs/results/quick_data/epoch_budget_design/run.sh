#!/bin/bash
# On the GPU machine, from the repo root: the epoch-budget study, then its tables. Outputs under $OUT
# (at most 8 files come back: the minor ones go into extra.tar.gz).
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src
PY=$(command -v python3 || command -v python)
mkdir -p "$OUT/extra"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; } 2>&1 | tee "$OUT/log.txt"
find src -name '*.py' | sort | xargs md5sum > "$OUT/extra/src_md5.txt"
ls scratch_gpu/data/cache/s32 scratch_gpu/data/external/*/cache/s32.npz >> "$OUT/log.txt" 2>&1
timeout 235 "$PY" scratch_gpu/epochs/epoch_study.py --out "$OUT" 2>&1 | tee -a "$OUT/log.txt"
echo "study rc $?" | tee -a "$OUT/log.txt"
timeout 40 "$PY" scratch_gpu/epochs/analyze_epochs.py --res "$OUT" > "$OUT/extra/analysis_stdout.txt" 2>&1
echo "analysis rc $?" | tee -a "$OUT/log.txt"
tail -25 "$OUT/extra/analysis_stdout.txt"
for f in env.json errors.txt; do [ -f "$OUT/$f" ] && mv "$OUT/$f" "$OUT/extra/"; done
tar -C "$OUT" -czf "$OUT/extra.tar.gz" extra && rm -rf "$OUT/extra"
ls -la "$OUT"
