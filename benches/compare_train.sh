#!/usr/bin/env bash
# A/B: aelabel's training epoch against PyTorch's, alternated in one run on the same machine.
# Usage: benches/compare_train.sh [ROUNDS=5] [THREADS=1]
# Needs `pip install torch numpy` (not part of CI). Prints each round, then medians and ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
threads=${2:-1}
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/aelabel"
ours=(); theirs=()
for r in $(seq "$rounds"); do
  a=$("$bin" bench train --threads "$threads" --epochs 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds_per_epoch"])')
  b=$(OMP_NUM_THREADS=$threads python3 benches/pytorch_epoch.py "$threads" 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds_per_epoch"])')
  echo "round $r: aelabel ${a}s  pytorch ${b}s"
  ours+=("$a"); theirs+=("$b")
done
python3 - "${ours[*]}" "${theirs[*]}" "$threads" <<'PY'
import statistics, sys
a = [float(v) for v in sys.argv[1].split()]
b = [float(v) for v in sys.argv[2].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"threads {sys.argv[3]}: aelabel median {ma:.3f} s/epoch, pytorch median {mb:.3f} s/epoch, "
      f"aelabel/pytorch time ratio {ma / mb:.2f} (pytorch takes {mb / ma:.2f}x as long)")
PY
