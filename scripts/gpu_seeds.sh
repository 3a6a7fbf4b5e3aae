#!/usr/bin/env bash
# Time a 1,000-seed training run of the paper model on one GPU (shared batches, fused kernel),
# beside a short run of the plain path:  bash scripts/gpu_seeds.sh [OUTDIR]
set -uo pipefail
out=${1:-runs/gpu_seeds}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_fast_paths.py tests/test_train.py 2>&1 | tail -3
for run in "fused 1000" "plain 100"; do
  set -- $run
  flag=$([ "$1" = fused ] && echo --fused-kernel)
  start=$(date +%s.%N)
  timeout 240 python3 -m minicount train --seeds 0-999 --data-seed 0 --steps "$2" --device gpu \
      $flag --eval-every 0 --n-eval 256 --out /tmp/seeds_$1.npz > "$out/seeds_$1.json" 2> "$out/seeds_$1.log"
  rc=$?
  end=$(date +%s.%N)
  python3 - "$out/seeds_$1.json" "$1" "$2" "$rc" "$start" "$end" <<'PY'
import json, sys
path, name, steps, rc, start, end = sys.argv[1:]
secs = float(end) - float(start)
try:
    r = json.load(open(path))
    import numpy as np
    la, sa = np.array(r["l_acc"]), np.array(r["s_acc"])
    print(f"{name}: 1000 models x {steps} steps: {secs:.1f} s wall (rc {rc}); "
          f"l-acc mean {la.mean():.4f} min {la.min():.4f}; s-acc mean {sa.mean():.4f}; "
          f"models at l-acc=s-acc=1: {int(((la == 1) & (sa == 1)).sum())}")
except Exception as e:
    print(f"{name}: rc {rc}, {secs:.1f} s, no result ({e})")
PY
  tail -2 "$out/seeds_$1.log"
done
