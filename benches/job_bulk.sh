#!/usr/bin/env bash
# How fast is a bulk label job end to end, as a user runs it? For each round and backend:
# a fresh database with one registered model, `aelabel serve` (its own process), then the CLI:
# `jobs create`, `jobs add` of the whole pile (one stream, 500 images a message), `jobs status`
# until nothing is pending, `jobs export` of every row. Prints one line per run (end-to-end
# images/s, export rows/s, median `jobs status` wall time over 20 calls — process start
# included —, the server's peak RSS, the database's bytes per image) and the medians.
#
# Usage: benches/job_bulk.sh [--images N] [--rounds R] [--backends sqlite,postgres] [--out DIR]
#   --images N   70000 (default): Fashion-MNIST's train + t10k files; more: a pool of N
#                shifted and mirrored copies written once by `aelabel bench pool` (distinct
#                pixels, ids `FILE#index`).
#   BASELINE=PATH  another build's `aelabel` binary: its server alternates with this build's
#                in every round (who goes first swaps each round); the same CLI (this build's)
#                drives both.
#   BASE_MODEL=PATH  the model to register (default: trained once by `aelabel pipeline`).
#   POSTGRES=URL   admin URL of the PostgreSQL to create databases on
#                (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
images=70000 rounds=3 backends=sqlite,postgres out=""
while [ $# -gt 0 ]; do
  case $1 in
    --images) images=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --backends) backends=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
cargo build --release --locked -q
current=$PWD/target/release/aelabel
baseline=${BASELINE:-}
data=${AELABEL_DATA:-/usr/share/datasets/fashion-mnist}
admin=${POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
work=$(mktemp -d /tmp/job-bulk.XXXXXX)
out=${out:-$work}
mkdir -p "$out"
server=""
cleanup() { [ -n "$server" ] && kill -9 "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export RUST_LOG=${RUST_LOG:-warn}
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
echo "CPU: ${cpu:-unknown}, $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$images" -eq 70000 ]; then
  inputs=("$data/train-images-idx3-ubyte.gz" "$data/t10k-images-idx3-ubyte.gz")
else
  pool=${POOL_DIR:-/tmp/aelabel-pool-$images}
  [ -s "$pool/train-images-idx3-ubyte" ] || "$current" bench pool --images "$images" --out "$pool" --data "$data"
  inputs=("$pool/train-images-idx3-ubyte")
fi
model=${BASE_MODEL:-}
if [ -z "$model" ]; then
  AELABEL_HOME=$work/train "$current" pipeline --quiet --no-register --data "$data" --out "$work/train/run" > /dev/null
  model=$work/train/run/model.safetensors
fi

# One run: BUILD NAME, BINARY, BACKEND. Prints a `bulk` line.
run() {
  local name=$1 bin=$2 backend=$3 home=$work/home-$RANDOM url db=""
  mkdir -p "$home"
  if [ "$backend" = sqlite ]; then
    url="sqlite://$home/jobs.db?mode=rwc"
  else
    db=bulk_$RANDOM$RANDOM
    psql -q "$admin" -c "CREATE DATABASE $db" > /dev/null
    url="${admin%/*}/$db"
  fi
  AELABEL_HOME=$home DATABASE_URL=$url "$bin" models register "$model" > /dev/null
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  AELABEL_HOME=$home DATABASE_URL=$url "$bin" serve --addr "127.0.0.1:$port" --no-http 2> "$home/serve.log" &
  server=$!
  local at=127.0.0.1:$port job="" t0 t_added t_labelled t_end
  # The clock starts at the CreateJob that the server answers (the first once it is up).
  for _ in $(seq 600); do
    t0=$(date +%s.%N)
    job=$("$current" jobs create --server "$at" --name bulk 2> /dev/null | tail -n1) && break
    sleep 0.1
  done
  [ -n "$job" ] || { echo "the server did not come up:" >&2; cat "$home/serve.log" >&2; exit 1; }
  "$current" jobs add --quiet --batch 500 --server "$at" "$job" "${inputs[@]}" > /dev/null
  t_added=$(date +%s.%N)
  until "$current" jobs status --server "$at" "$job" --json | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["pending"] != 0)'; do
    sleep 0.1
  done
  t_labelled=$(date +%s.%N)
  "$current" jobs export --quiet --server "$at" "$job" --out "$home/export.csv" > /dev/null
  t_end=$(date +%s.%N)
  local rows
  rows=$(($(wc -l < "$home/export.csv") - 1))
  [ "$rows" -eq "$images" ] || { echo "exported $rows rows of $images" >&2; exit 1; }
  local status_ms
  status_ms=$(for _ in $(seq 20); do
    s=$(date +%s%N); "$current" jobs status --server "$at" "$job" > /dev/null; e=$(date +%s%N)
    echo $(((e - s) / 1000))
  done | sort -n | sed -n 10p)
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
  kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""
  local bytes
  if [ "$backend" = sqlite ]; then
    bytes=$(du -cb "$home"/jobs.db* | tail -n1 | cut -f1)
  else
    bytes=$(psql -qtA "$url" -c "SELECT pg_database_size(current_database())")
    psql -q "$admin" -c "DROP DATABASE $db" > /dev/null
  fi
  python3 - "$name" "$backend" "$images" "$t0" "$t_added" "$t_labelled" "$t_end" "$status_ms" "$rss" "$bytes" <<'PY' | tee -a "$out/runs.txt"
import sys
name, backend, n, t0, ta, tl, te, status_us, rss_kb, size = sys.argv[1:]
n, t0, ta, tl, te = int(n), float(t0), float(ta), float(tl), float(te)
print(f"bulk build={name} backend={backend} images={n} total_s={te - t0:.2f} "
      f"images_per_s={n / (te - t0):.0f} add_s={ta - t0:.2f} labelled_s={tl - t0:.2f} "
      f"export_rows_per_s={n / (te - tl):.0f} status_ms={int(status_us) / 1000:.1f} "
      f"peak_rss_mb={int(rss_kb) / 1024:.0f} db_bytes_per_image={int(size) / n:.0f}")
PY
  rm -rf "$home"
}

for r in $(seq "$rounds"); do
  for backend in ${backends//,/ }; do
    if [ -z "$baseline" ]; then
      run current "$current" "$backend"
    elif [ $((r % 2)) -eq 1 ]; then
      run baseline "$baseline" "$backend"; run current "$current" "$backend"
    else
      run current "$current" "$backend"; run baseline "$baseline" "$backend"
    fi
  done
done
python3 - "$out/runs.txt" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = dict(kv.split("=") for kv in line.split()[1:])
    runs[(f["build"], f["backend"], f["images"])].append(f)
for (build, backend, n), rs in sorted(runs.items()):
    med = lambda k: statistics.median(float(r[k]) for r in rs)
    print(f"{build:8} {backend:8} {n:>8} images: median {med('images_per_s'):7.0f} images/s "
          f"({', '.join(r['images_per_s'] for r in rs)}); export {med('export_rows_per_s'):.0f} rows/s; "
          f"status {med('status_ms'):.1f} ms; peak RSS {med('peak_rss_mb'):.0f} MB; "
          f"{med('db_bytes_per_image'):.0f} B/image")
PY
