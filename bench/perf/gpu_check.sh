#!/usr/bin/env bash
# Issue 5's GPU check as one command for the lent device machine (`run` tool; see
# ../.library/device/README.md). That machine's python3 has torch (CUDA), numba, numpy, scipy and
# the rest bench.perf.gpu imports, but not hessQuik: carry its wheel. Here, once per session:
#
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux2014_x86_64 -d .whl hessQuik==0.0.6
#
# then: run(command="bench/perf/gpu_check.sh", carry=[".whl"], timeout_s=540). The report and the
# raw figures come back as $OUT/gpu.md and $OUT/gpu.json (the log as $OUT/gpu.log).
set -euo pipefail
cd "$(dirname "$0")/../.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.log" || true
python3 -m bench.perf.gpu --json "$OUT/gpu.json" --out "$OUT/gpu.md" 2>&1 | tee -a "$OUT/gpu.log"
