#!/usr/bin/env bash
# Run every GPU check in one go on a machine with CuPy and a CUDA GPU:
#   bash scripts/gpu_check.sh [OUTDIR]
# 1. the GPU tests (CuPy against NumPy; the fast paths and fused CUDA kernel against plain),
# 2. the benchmark, if present (CPU and GPU rows, PyTorch beside them when installed).
# Logs go to OUTDIR (default: runs/gpu_check).
set -uo pipefail
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__); print(cupy.cuda.runtime.getDeviceProperties(0)['name'])" 2>&1 | tee "$out/env.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$out/env.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_fast_paths.py -rs 2>&1 | tee "$out/gpu_tests.txt"
status=${PIPESTATUS[0]}
if [ -f bench/bench.py ]; then
  python3 bench/bench.py --device gpu --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
fi
exit $status
