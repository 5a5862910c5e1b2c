#!/usr/bin/env bash
# The labelling loop measured end to end through the CLI, from an empty registry: builds
# aelabel, starts `aelabel serve` on a fresh AELABEL_HOME (SQLite, no model), and runs
# benches/labelling_loop.py (loop, uncertain and random picks on all 70,000 Fashion-MNIST
# images; true labels stand in for people). While the loop's rounds train, a load generator
# calls `Label` on the same server (the loop's first model is activated for it) and the
# script records its p99. Results: OUT/loop.json, OUT/loop.md, OUT/loop.png.
#
# Usage: benches/labelling_loop.sh [OUT] [-- extra labelling_loop.py flags]
#   e.g. benches/labelling_loop.sh target/loop -- --parts t10k --rounds 300
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/labelling-loop}
shift || true
[ "${1:-}" = "--" ] && shift
[ -d /usr/share/datasets/fashion-mnist ] || apt-get install -y dataset-fashion-mnist
cargo build --release --locked --bin aelabel
home=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
AELABEL_HOME=$home target/release/aelabel --log-format json serve --addr 127.0.0.1:$port \
  --no-http >"$home/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$home"' EXIT
for _ in $(seq 100); do
  grep -q '"listening"\|listening' "$home/serve.log" && break
  sleep 0.1
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
python3 benches/labelling_loop.py --server 127.0.0.1:$port --aelabel target/release/aelabel \
  --out "$out" "$@"
