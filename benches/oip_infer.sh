#!/usr/bin/env bash
# A/B: the Open Inference Protocol's ModelInfer (aelabel-encoder, raw UINT8 [256, 28, 28]
# input) against Labeller.Encode (256 raw images) on one server, same load, alternated in one
# run (who goes first swaps every round): images/s per round, then the medians and the ratio
# ModelInfer / Encode (1.0: the same; the goal is within 10 %), with the CPU model name and the
# load average before and after.
# Usage: benches/oip_infer.sh MODEL [ROUNDS=5] [SECONDS=5] [CONCURRENCY=4]
# Ports: AELABEL_BENCH_GRPC (default 50391) and AELABEL_BENCH_HTTP (default 9391). Not part of CI.
set -euo pipefail
model=${1:?usage: benches/oip_infer.sh MODEL [ROUNDS] [SECONDS] [CONCURRENCY]}
rounds=${2:-5}
secs=${3:-5}
clients=${4:-4}
grpc=127.0.0.1:${AELABEL_BENCH_GRPC:-50391}
http=127.0.0.1:${AELABEL_BENCH_HTTP:-9391}
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/aelabel"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" serve --model "$model" --addr "$grpc" --http-addr "$http" --log-format json >/dev/null 2>&1 &
server=$!
results=$(mktemp)
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -f "$results"' EXIT
for _ in $(seq 300); do
  curl -sf "http://$http/v2/health/ready" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "the server stopped before it was ready" >&2; exit 1; }
  sleep 0.1
done
curl -sf "http://$http/v2/health/ready" >/dev/null || { echo "the server never became ready" >&2; exit 1; }
run() {
  "$bin" bench --server "$grpc" --rpc "$1" --batch 256 --concurrency "$clients" --duration "$secs" --json |
    jq -r --arg rpc "$1" '"\($rpc) \(.images_per_second) \(.latency.p50_ms) \(.errors | length)"' | tee -a "$results"
}
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then run encode; run model-infer; else run model-infer; run encode; fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
median() { grep "^$1 " "$results" | awk '{print $2}' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
enc=$(median encode)
inf=$(median model-infer)
errors=$(awk '{s += $4} END {print s}' "$results")
echo "median images/s: Encode $enc, ModelInfer $inf; ratio ModelInfer/Encode $(awk -v a="$inf" -v b="$enc" 'BEGIN {printf "%.3f", a / b}'); rounds with errors: $errors"
