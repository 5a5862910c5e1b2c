#!/usr/bin/env bash
# A label job's first training round on a large pile, as a user runs it: `aelabel serve` (its
# own process, SQLite, training on 2 threads), `jobs create`, `jobs add` of a pool written by
# `aelabel bench pool` (ids `FILE#index`), people's labels for N random items (the pool's true
# classes stand in for them) by `jobs review --csv`, then `jobs train` timed: the round pretrains
# the job's autoencoder, teaches, spreads, trains the student and relabels the pile. Prints the
# round's wall seconds and stages, the server's peak RSS and the round's own estimates; writes
# round.json to --out.
#
# Usage: benches/job_round_scale.sh [--images 1000000] [--labels 1000] [--out DIR]
#   POOL_DIR=DIR   where the pool is kept between runs (default /tmp).
set -euo pipefail
images=1000000 labels=1000 out=""
while [ $# -gt 0 ]; do
  case $1 in
    --images) images=$2; shift 2 ;;
    --labels) labels=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/${CARGO_TARGET_DIR:-target}/release/aelabel
data=${AELABEL_DATA:-/usr/share/datasets/fashion-mnist}
work=$(mktemp -d /tmp/job-round.XXXXXX)
out=${out:-$work}
mkdir -p "$out"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export AELABEL_HOME=$work/home RUST_LOG=${RUST_LOG:-warn}
export DATABASE_URL="sqlite://$work/jobs.db?mode=rwc"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  "$(grep -qw avx512f /proc/cpuinfo && echo with || echo without) AVX-512, $(nproc) cores"

pool=${POOL_DIR:-/tmp}/aelabel-pool-$images
[ -s "$pool/train-images-idx3-ubyte" ] ||
  "$bin" bench pool --images "$images" --out "$pool" --data "$data" > /dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=127.0.0.1:$port
"$bin" serve --addr "$url" --no-http --threads 2 --training-threads 2 \
  --jobs-dir "$work/jobs" 2> "$work/serve.log" &
server=$!
classes="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
job=""
for _ in $(seq 300); do
  if job=$("$bin" jobs create --server "$url" --name "pool-$images" --classes "$classes" \
    2> /dev/null | tail -n1); then break; fi
  kill -0 "$server" 2> /dev/null || break
  sleep 0.2
done
[ -n "$job" ] || { echo "the server did not come up; see its log:" >&2; cat "$work/serve.log" >&2; exit 1; }
start=$(date +%s.%N)
"$bin" jobs add --quiet --server "$url" "$job" "$pool/train-images-idx3-ubyte"
added=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
echo "added $images images in $added s"

# The "people": the true classes of N items drawn at random (seed 42).
python3 - "$pool/train-labels-idx1-ubyte" "$pool/train-images-idx3-ubyte" "$labels" \
  "$classes" > "$work/reviews.csv" <<'PY'
import random, sys
labels = open(sys.argv[1], "rb").read()[8:]
names = sys.argv[4].split(",")
print("id,class")
for i in sorted(random.Random(42).sample(range(len(labels)), int(sys.argv[3]))):
    print(f"{sys.argv[2]}#{i},{names[labels[i]]}")
PY
"$bin" jobs review --server "$url" "$job" --csv "$work/reviews.csv" > /dev/null
start=$(date +%s.%N)
"$bin" jobs train --quiet --server "$url" "$job" --json > "$work/train.json"
wall=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
python3 - "$work/train.json" "$images" "$labels" "$added" "$wall" "$peak_kb" "$out/round.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
report = run.get("result") or {}
summary = {"images": int(sys.argv[2]), "labels": int(sys.argv[3]),
           "add_seconds": float(sys.argv[4]), "round_wall_seconds": float(sys.argv[5]),
           "server_peak_rss_mb": int(sys.argv[6]) / 1024, "run": run}
json.dump(summary, open(sys.argv[7], "w"), indent=1)
stages = ", ".join(f"{name} {s:.1f} s" for name, s in report.get("stage_seconds", []))
print(f"round: {summary['round_wall_seconds']:.1f} s wall ({stages}); "
      f"server peak RSS {summary['server_peak_rss_mb']:.0f} MB; auto-accepted "
      f"{100 * report.get('auto_accepted_share', 0):.1f} % at estimated accuracy "
      f"{report.get('estimated_accepted_accuracy')}")
PY
echo "wrote $out/round.json"
