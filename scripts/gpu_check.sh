#!/usr/bin/env bash
# Run every GPU check in one go on a machine with CuPy and a CUDA GPU:
#   bash scripts/gpu_check.sh [OUTDIR]
# 1. every GPU-marked test (CuPy against NumPy: forward, backward, training, ensembles,
#    checkpoints, analysis; the fast paths and the fused CUDA kernel against the plain path;
#    the tutorials with MINICOUNT_DEVICE=gpu),
# 2. the benchmark's GPU rows (minicount on CuPy beside PyTorch on CUDA when installed),
# 3. a quick study on the GPU (reproduce --quick --device gpu),
# 4. the analysis benchmark on the GPU: analyze_ensemble on 1,000 default models.
# Logs go to OUTDIR (default: runs/gpu_check); each step has its own time limit.
set -uo pipefail
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__); print(cupy.cuda.runtime.getDeviceProperties(0)['name'])" 2>&1 | tee "$out/env.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$out/env.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ -rs --durations=8 2>&1 | tee "$out/gpu_tests.txt"
status=${PIPESTATUS[0]}
timeout 200 python3 bench/bench.py --device gpu --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
timeout 90 python3 -m minicount reproduce --quick --device gpu --out "$out/study_quick" 2>&1 | tail -5 | tee "$out/study_quick.txt"
timeout 180 python3 bench/bench.py --analysis --device gpu --analysis-models 1000 2>&1 | tee "$out/bench_analysis.txt"
exit $status
