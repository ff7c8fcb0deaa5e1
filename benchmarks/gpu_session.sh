#!/usr/bin/env bash
# What one lent GPU session runs (device tool): wheels for what the GPU image lacks, then the
# seed-group throughput benchmark (incl. the compiled step: torch.compile default and
# reduce-overhead = CUDA graphs), checkpoint rounds copied in the training thread or a background
# thread (group_checkpoints.py), and a timed 40-seed study. Results land in $OUT.
# One device call runs at most 600 s: PARTS="bench" (seed_groups + group_checkpoints, ~7 min) and
# PARTS="study" (~5 min) fit one call each; STUDY_COMPILE=reduce-overhead compiles the study's step.
# PARTS="pythia" (issue 31, not yet run on a GPU): the 160M series' weight metrics per CPU-second with
# the singular values on CUDA against the lazy kernels (pythia_scale.py --device cuda); it also needs
# safetensors, transformers and their dependencies in .whl/ (huggingface-hub, tokenizers, regex,
# requests, tqdm, filelock, pyyaml, packaging, certifi, charset-normalizer, idna, urllib3).
#
# The GPU image has Python 3.12 and torch but not vt's other dependencies; fetch them here first
# (into .whl/, listed in .git/info/exclude, carried with the run: `carry = [".whl"]`):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 hmmlearn==0.3.3 bokeh==3.9.2 \
#     tornado==6.6.1 xyzservices==2026.9.1 dask==2026.8.0 partd==1.4.2 locket==1.0.0 xarray==2026.9.0 \
#     narwhals==2.29.0 pandas==3.1.1 typing_extensions==4.16.0 fsspec==2026.9.0 universal_pathlib==0.3.10 \
#     pathlib_abc==0.5.2
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VT_WRITER=process
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, zarr, xarray, bokeh, hmmlearn, pydantic; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
PARTS="${PARTS:-bench study}"
if [[ " $PARTS " == *" bench "* ]]; then
  timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/seed_groups.py --epochs "${BENCH_EPOCHS:-100}" 2>&1 \
    | tee "$OUT/seed_groups.txt"
  timeout "${CKPT_TIMEOUT:-180}" python3 benchmarks/group_checkpoints.py --epochs "${CKPT_EPOCHS:-600}" 2>&1 \
    | tee "$OUT/group_checkpoints.txt"
fi
if [[ " $PARTS " == *" pythia "* ]]; then
  timeout "${PYTHIA_TIMEOUT:-420}" python3 benchmarks/pythia_scale.py --size 160m --seeds 1 --checkpoints 4 \
    --device cuda --no-workers 2>&1 | tee "$OUT/pythia_scale.txt"
fi
if [[ " $PARTS " == *" study "* ]]; then
  timeout "${STUDY_TIMEOUT:-300}" python3 benchmarks/study_timing.py --epochs "${STUDY_EPOCHS:-2000}" --seeds 40 \
    --analysis-workers "${ANALYSIS_WORKERS:-12}" --compile "${STUDY_COMPILE:-none}" --out /tmp/study 2>&1 \
    | tee "$OUT/study_timing.txt"
fi
