#!/usr/bin/env bash
# A/B: aelabel's inference engine against PyTorch on the same model.safetensors, alternated in
# one run on the same machine (who goes first swaps every round). For encode and label, batch 1
# and 1024, 1 and 2 threads: images/s per round, then medians and the ratio aelabel / PyTorch
# (> 1: aelabel is faster), with the CPU model name and the load average before and after (on a
# shared machine the neighbours' load moves wall-clock figures; images per CPU-second, the
# process's own CPU time, shows each engine's efficiency apart from it).
# Usage: benches/compare_engine.sh MODEL [ROUNDS=5] [SECONDS=2]
# Needs a python3 with torch, numpy and safetensors (pip install torch numpy safetensors;
# PYTHON=path/to/python picks one). PyTorch's OpenMP threads wait passively
# (TORCH_WAIT_POLICY=PASSIVE, the default here): on a loaded machine libgomp's spinning default
# makes its 2-thread figures collapse; TORCH_WAIT_POLICY=ACTIVE measures that default. Not part of CI.
set -euo pipefail
model=${1:?usage: benches/compare_engine.sh MODEL [ROUNDS] [SECONDS]}
rounds=${2:-5}
secs=${3:-2}
py=${PYTHON:-python3}
policy=${TORCH_WAIT_POLICY:-PASSIVE}
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/aelabel"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "CPU: $cpu ($(nproc) cores); $("$py" -c 'import torch; print("pytorch", torch.__version__)'), OMP_WAIT_POLICY=$policy"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
ours() { "$bin" bench engine --model "$model" --rpc "$1" --batch "$2" --threads "$3" --seconds "$secs" --json; }
theirs() { OMP_WAIT_POLICY=$policy OMP_NUM_THREADS=$3 MKL_NUM_THREADS=$3 "$py" benches/pytorch_engine.py "$model" "$1" "$2" "$3" "$secs"; }
for r in $(seq "$rounds"); do
  for task in encode label; do
    for batch in 1 1024; do
      for threads in 1 2; do
        if (( r % 2 )); then order="ours theirs"; else order="theirs ours"; fi
        for who in $order; do
          printf '%s\t%s\t%s\t%s\t%s\n' "$who" "$task" "$batch" "$threads" \
            "$($who "$task" "$batch" "$threads")" >> "$results"
        done
      done
    done
  done
  echo "round $r/$rounds done" >&2
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$results" "$cpu" <<'PY'
import collections, json, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    who, task, batch, threads, report = line.rstrip("\n").split("\t")
    r = json.loads(report)
    runs[(task, int(batch), int(threads), who)].append(r)
print(f"\nmedians over {len(next(iter(runs.values())))} alternated rounds, CPU: {sys.argv[2]}")
print("| task | batch | threads | aelabel images/s | PyTorch images/s | ratio | aelabel images/CPU-s | PyTorch images/CPU-s | CPU ratio | aelabel 1-image p50 µs | PyTorch 1-image p50 µs |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for task, batch, threads in sorted({k[:3] for k in runs}):
    a, b = runs[(task, batch, threads, "ours")], runs[(task, batch, threads, "theirs")]
    ma = statistics.median(x["images_per_second"] for x in a)
    mb = statistics.median(x["images_per_second"] for x in b)
    ca = statistics.median(x.get("images_per_cpu_second") or 0 for x in a)
    cb = statistics.median(x.get("images_per_cpu_second") or 0 for x in b)
    la = statistics.median(x["single_image_p50_us"] for x in a)
    lb = statistics.median(x["single_image_p50_us"] for x in b)
    print(f"| {task} | {batch} | {threads} | {ma:,.0f} | {mb:,.0f} | **{ma / mb:.2f}** | "
          f"{ca:,.0f} | {cb:,.0f} | {ca / max(cb, 1e-9):.2f} | {la:.1f} | {lb:.1f} |")
PY
