#!/usr/bin/env bash
# Does switching models cost calls in flight latency? Trains two small models into a scratch
# registry, serves it, and runs `aelabel bench` (1-image Label, 16 clients) in alternated
# rounds: one round untouched, one round during which the two versions are activated in
# turn 10 times. Prints each round's p50/p99 and errors, then the medians and their ratio.
# Usage: benches/switch_latency.sh [ROUNDS] [SECONDS_PER_ROUND]
set -euo pipefail
rounds=${1:-3}
seconds=${2:-20}
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/target/release/aelabel
work=$(mktemp -d)
export DATABASE_URL="sqlite://$work/registry.db?mode=rwc"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for seed in 1 2; do
  "$bin" pipeline --quiet --seed "$seed" --train-limit 6000 --eval-limit 1000 --labels 200 \
    --pretrain-epochs 2 --finetune-epochs 5 --self-training-rounds 0 --tsne-points 0 \
    --out "$work/m$seed" > "$work/train$seed.log"
done
mapfile -t versions < <("$bin" models list --json | python3 -c 'import json,sys; [print(m["version"]) for m in json.load(sys.stdin)]')
"$bin" serve --addr 127.0.0.1:50071 --no-http --threads 1 2> "$work/serve.log" &
server=$!
until grep -q '"serving"\|serving' "$work/serve.log"; do sleep 0.2; done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); versions ${versions[*]}"
bench() {
  "$bin" bench --server 127.0.0.1:50071 --rpc label --batch 1 --concurrency 16 \
    --duration "$seconds" --json
}
field() { python3 -c "import json,sys; r=json.load(sys.stdin); print(r['latency']['$1'] if '$1' in r['latency'] else r['$1'])"; }
quiet_p99=(); switch_p99=()
for r in $(seq "$rounds"); do
  q=$(bench)
  quiet_p99+=("$(echo "$q" | field p99_ms)")
  bench > "$work/switch.json" &
  b=$!
  gap=$(python3 -c "print($seconds / 11)")
  for i in $(seq 10); do
    sleep "$gap"
    "$bin" models activate "${versions[$((i % 2))]}" > /dev/null
  done
  wait "$b"
  s=$(cat "$work/switch.json")
  switch_p99+=("$(echo "$s" | field p99_ms)")
  echo "round $r: quiet p50 $(echo "$q" | field p50_ms) ms p99 ${quiet_p99[-1]} ms errors $(echo "$q" | field errors);" \
    "10 switches p50 $(echo "$s" | field p50_ms) ms p99 ${switch_p99[-1]} ms errors $(echo "$s" | field errors)"
done
python3 - "${quiet_p99[*]}" "${switch_p99[*]}" <<'PY'
import statistics, sys
q = [float(x) for x in sys.argv[1].split()]
s = [float(x) for x in sys.argv[2].split()]
mq, ms = statistics.median(q), statistics.median(s)
print(f"median p99: quiet {mq:.3f} ms, with 10 switches {ms:.3f} ms, ratio {ms / mq:.2f}")
PY
grep -c '"now serving"\|now serving' "$work/serve.log" | xargs echo "switches logged by the server:"
