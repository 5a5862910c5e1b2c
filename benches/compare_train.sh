#!/usr/bin/env bash
# A/B/C: aelabel's training epoch with its default kernel (AVX-512 where the CPU has it), with
# gemm forced (AELABEL_TRAIN_KERNEL=gemm), and PyTorch's, alternated in one run on one machine.
# Usage: benches/compare_train.sh [ROUNDS=5] [THREADS=1]
# Needs `pip install torch numpy` (not part of CI). Prints each round, then medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
threads=${2:-1}
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/aelabel"
seconds() { python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds_per_epoch"])'; }
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(grep -qw avx512f /proc/cpuinfo && echo with || echo without) AVX-512F; $threads thread(s)"
ours=(); gemm=(); theirs=()
for r in $(seq "$rounds"); do
  a=$("$bin" bench train --threads "$threads" --epochs 1 --json | seconds)
  g=$(AELABEL_TRAIN_KERNEL=gemm "$bin" bench train --threads "$threads" --epochs 1 --json | seconds)
  b=$(OMP_NUM_THREADS=$threads python3 benches/pytorch_epoch.py "$threads" 1 | seconds)
  echo "round $r: aelabel ${a}s  aelabel-gemm ${g}s  pytorch ${b}s"
  ours+=("$a"); gemm+=("$g"); theirs+=("$b")
done
python3 - "${ours[*]}" "${gemm[*]}" "${theirs[*]}" "$threads" <<'PY'
import statistics, sys
a, g, b = ([float(v) for v in arg.split()] for arg in sys.argv[1:4])
ma, mg, mb = statistics.median(a), statistics.median(g), statistics.median(b)
print(f"threads {sys.argv[4]}: medians aelabel {ma:.3f} s/epoch, aelabel with gemm {mg:.3f}, "
      f"pytorch {mb:.3f}; aelabel/pytorch {ma / mb:.2f}, gemm/pytorch {mg / mb:.2f}")
PY
