#!/usr/bin/env bash
# bench/gpu_suite.py on the lent GPU machine: installs the carried wheels, runs the suite into $OUT.
#
# That machine has torch, transformers, numpy, safetensors, huggingface-hub, regex, requests,
# pillow, filelock, opencv-python-headless, tokenizers and sentencepiece, and no network. What the
# suite's import path needs besides (diffusers; accelerate for group offloading, and its psutil;
# ftfy for the prompt cleaner, and its wcwidth) is fetched here first, into the ignored .whl/:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl diffusers==0.42.1 accelerate==1.15.0 psutil==7.2.2 ftfy==6.3.1 wcwidth==0.9.4
#
# (about 8 MB; importlib_metadata is not needed on Python 3.12, gguf and av are not on this path)
# and carried with the run:  run(command="bash bench/gpu_suite.sh", carry=[".whl"], timeout_s=590)
# Extra arguments go to the suite (e.g. --budget-s 300). The suite ends within its budget (510 s
# by default); the timeout below is a backstop, and the JSON it wrote so far survives it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout -s INT 570 python3 bench/gpu_suite.py --out "$OUT/gpu_suite.json" --results-md "$OUT/RESULTS_gpu.md" "$@"
