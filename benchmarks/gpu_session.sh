#!/usr/bin/env bash
# What one lent GPU session runs (device tool): wheels for what the GPU image lacks, then the
# seed-group throughput benchmark and a timed 40-seed study. Results land in $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VT_WRITER=process
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, zarr, xarray, bokeh, hmmlearn, pydantic; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
timeout "${BENCH_TIMEOUT:-150}" python3 benchmarks/seed_groups.py --epochs "${BENCH_EPOCHS:-100}" 2>&1 | tee "$OUT/seed_groups.txt"
timeout "${STUDY_TIMEOUT:-300}" python3 benchmarks/study_timing.py --epochs "${STUDY_EPOCHS:-2000}" --seeds 40 \
  --out /tmp/study 2>&1 | tee "$OUT/study_timing.txt"
