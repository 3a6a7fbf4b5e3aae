#!/usr/bin/env bash
# Everything a lent GPU should do, in one call, into one folder:
#     bash scripts/gpu_run.sh OUTDIR
# 1. (background) the long-training arms of the study (docs/findings.md, "Is every head
#    counting the limit?"): 4 heads, max_len 64, weight decay 0.1, seeds 0-31, one arm with a
#    constant learning rate and one with a cosine decay, trained side by side on the GPU to
#    LONG_STEPS (default: as many as fit LONG_BUDGET seconds at the measured step rate, at most
#    60,000, in steps of 5,000), keeping the parameters at every snapshot (every 5,000 steps and
#    the doubling ones) and analysing nothing: `python -m minicount sweep --reanalyze DIR`
#    analyses them afterwards on any machine. All seeds of an arm see the same batches
#    (shared_data: one batch per step instead of 32, which would keep the GPU waiting on the
#    host's sampling).
# 2. (meanwhile) every GPU-marked test (CuPy against NumPy).
# 3. analyze_ensemble on ANALYSIS_MODELS trained models on the GPU against NumPy.
# 4. BENCH=1: the benchmark's GPU rows (off by default: the GPU is shared with step 1 then).
# 5. FULL=1: the full preset (64 seeds x 36 cells) by WORKERS (4) claiming workers sharing the
#    GPU, each taking the next free cell (`--claim`); killed at its time limit FULL_LIMIT (s),
#    it resumes when run again on the same folder. Hours of GPU time: not for a 15-minute loan.
# Settings (environment): DEVICE (gpu; cpu for a dry run), SEEDS (0-31), MAX_LEN (64),
# EXTRA (more sweep options, e.g. tiny sizes for the dry run), LONG_STEPS, LONG_BUDGET (420),
# TESTS (1), ANALYSIS_MODELS (1000), ANALYSIS_STEPS (400), BENCH (0), FULL (0), WORKERS (4),
# FULL_LIMIT (3600). The CPU dry run in tests/test_scripts.py runs
# this script with DEVICE=cpu and tiny sizes, so that it cannot rot while no GPU is lent.
set -uo pipefail
out=${1:-runs/gpu_run}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
DEVICE=${DEVICE:-gpu}; SEEDS=${SEEDS:-0-31}; MAX_LEN=${MAX_LEN:-64}; EXTRA=${EXTRA:-}
LONG_BUDGET=${LONG_BUDGET:-420}; TESTS=${TESTS:-1}; ANALYSIS_MODELS=${ANALYSIS_MODELS:-1000}
BENCH=${BENCH:-0}; PY=${PY:-python3}; ANALYSIS_STEPS=${ANALYSIS_STEPS:-400}
fused=$([ "$DEVICE" = gpu ] && echo --fused-kernel)
# the arms' folders live in WORK and come back packed: a device run returns only a limited
# number of files, none deeper than a few folders and none larger than a few MB (the first
# H200 run lost its arms that way), so the kept snapshots travel as 4 MB parts of one .tgz:
#   cat OUTDIR/long64.tgz.part_* | tar xzf -    then    python -m minicount sweep --reanalyze ...
WORK=${WORK:-$([ "$DEVICE" = gpu ] && echo /tmp/minicount_gpu_work || echo "$out/work")}
mkdir -p "$WORK"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$out/run.log"; }

log "device $DEVICE -> $out"
if [ "$DEVICE" = gpu ]; then
  $PY -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__); print(cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())" 2>&1 | tee "$out/env.txt"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$out/env.txt"
fi

# 1. the long arms: measure the step rate, choose the length, start both arms
arm_args="--set max_len=$MAX_LEN --set weight_decay=0.1 --set shared_data=on --seeds $SEEDS \
  --snapshot-every 5000 --train-only --device $DEVICE $fused --quiet $EXTRA"
if [ -z "${LONG_STEPS:-}" ]; then
  rate=$($PY - "$DEVICE" "$MAX_LEN" "$SEEDS" <<'PY'
import sys, time
import minicount as mc
from minicount.options import seeds_option
device, max_len, seeds = sys.argv[1], int(sys.argv[2]), seeds_option(sys.argv[3])
kw = dict(seed=seeds, max_len=max_len, weight_decay=0.1, data_seed=0, device=device,
          path="fused" if device == "gpu" else "fast", eval_every=0, n_eval=64, batch_size=128)
config = mc.ModelConfig(n_ctx=mc.data.context_length(max_len))
mc.train(config, steps=30, **kw)  # compile and warm up
t = time.perf_counter(); mc.train(config, steps=200, **kw); print(200 / (time.perf_counter() - t))
PY
)
  # two arms share the device; keep a margin for the snapshots and the start-up
  LONG_STEPS=$($PY -c "r=float('${rate:-0}'); s=int(r*0.55*$LONG_BUDGET)//5000*5000; print(max(5000, min(60000, s)))")
  log "measured ${rate:-?} steps/s for one arm alone -> LONG_STEPS=$LONG_STEPS"
fi
for arm in constant cosine; do
  timeout $((LONG_BUDGET + 60)) $PY -m minicount sweep $arm_args --set schedule=$arm \
    --steps "$LONG_STEPS" --out "$WORK/long64_$arm" > "$out/long64_$arm.log" 2>&1 &
done
log "long arms started: $LONG_STEPS steps each"

# 2. the GPU tests
if [ "$TESTS" = 1 ]; then
  timeout 240 $PY -m pytest -q -p no:cacheprovider -m gpu tests/ -rs 2>&1 | tail -25 > "$out/gpu_tests.txt"
  log "GPU tests: $(tail -1 "$out/gpu_tests.txt")"
fi

# 3. the analysis, GPU against NumPy
timeout 200 $PY scripts/gpu_analysis_check.py --models "$ANALYSIS_MODELS" --device "$DEVICE" \
  --steps "$ANALYSIS_STEPS" \
  --out "$out" > "$out/analysis_check.txt" 2>&1
log "analysis check (rc $?): $(head -2 "$out/analysis_check.txt" | tr '\n' ' ')"

# 4. the benchmark
if [ "$BENCH" = 1 ]; then
  timeout 200 $PY bench/bench.py --device "$DEVICE" --json "$out/bench.json" > "$out/bench.txt" 2>&1
  log "benchmark (rc $?)"
fi

# 5. the full preset, by workers sharing the GPU
if [ "${FULL:-0}" = 1 ]; then
  for k in $(seq 1 "${WORKERS:-4}"); do
    timeout "${FULL_LIMIT:-3600}" $PY -m minicount reproduce --preset full --device "$DEVICE" \
      $fused --claim --quiet --out "$out/full" > "$out/full_worker$k.log" 2>&1 &
  done
  log "full preset: ${WORKERS:-4} workers started (python -m minicount sweep --status $out/full)"
fi

wait
for arm in constant cosine; do
  log "arm $arm: kept up to $(ls "$WORK/long64_$arm"/cells/*/snapshots 2>/dev/null | tail -1)"
done
tar czf - -C "$WORK" --exclude=model.npz --exclude='*.lock' --exclude='*.tmp' \
  long64_constant long64_cosine | split -b 4m - "$out/long64.tgz.part_"
log "packed: $(ls "$out"/long64.tgz.part_* | wc -l) part(s) of $(cat "$out"/long64.tgz.part_* | wc -c) bytes"
log "done"
