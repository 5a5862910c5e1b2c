#!/usr/bin/env bash
# Closing the loop, as a user would with the CLI alone: train (or register) a model, serve it,
# label the 60,000 Fashion-MNIST training images as a job, review the N least confident with
# their true labels standing in for the person, retrain from the job, and report the change
# in test accuracy (t10k, never part of the job) and in the auto-accepted share.
# Usage: benches/review_loop.sh [REVIEWS] [DATABASE_URL]
#   BASE_MODEL=path/model.safetensors skips training and registers that model instead;
#   PICK=random reviews a random sample of the items below the threshold instead of the least
#   confident (the comparison for uncertainty sampling).
set -euo pipefail
reviews=${1:-500}
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/target/release/aelabel
data=${AELABEL_DATA:-/usr/share/datasets/fashion-mnist}
work=$(mktemp -d)
export AELABEL_HOME=$work/home
export DATABASE_URL=${2:-"sqlite://$work/registry.db?mode=rwc"}
export RUST_LOG=${RUST_LOG:-warn}
pick=${PICK:-least-confident}
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); database ${DATABASE_URL%%:*}"
if [ -n "${BASE_MODEL:-}" ]; then
  "$bin" models register "$BASE_MODEL"
else
  /usr/bin/time -f "pipeline: %e s, peak RSS %M KB" "$bin" pipeline --quiet --data "$data"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server_url=127.0.0.1:$port
"$bin" serve --addr "$server_url" --no-http 2> "$work/serve.log" &
server=$!
job=""
for _ in $(seq 300); do
  if job=$("$bin" jobs create --server "$server_url" --name "train-60k" 2>/dev/null | tail -n1); then break; fi
  sleep 0.2
done
[ -n "$job" ] || { echo "the server did not come up; see $work/serve.log" >&2; cat "$work/serve.log" >&2; exit 1; }
start=$(date +%s.%N)
"$bin" jobs add --quiet --server "$server_url" "$job" "$data/train-images-idx3-ubyte.gz"
until "$bin" jobs status --server "$server_url" "$job" --json | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["pending"] != 0)'; do
  sleep 0.2
done
echo "labelled 60,000 images in $(python3 -c "import time; print(f'{time.time() - $start:.1f}')") s"
"$bin" jobs status --server "$server_url" "$job"
"$bin" jobs export --quiet --server "$server_url" "$job" --out "$work/before.csv"
# The "person": the true class of the N least confident items still waiting for review.
"$bin" models list --json > "$work/models.json"
python3 - "$work/before.csv" "$data/train-labels-idx1-ubyte.gz" "$reviews" "$work/reviews.csv" "$work/models.json" "$pick" <<'PY'
import csv, gzip, json, random, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["source"] == "pending_review"]
rows.sort(key=lambda r: float(r["confidence"]))
if sys.argv[6] == "random":
    random.Random(42).shuffle(rows)
labels = gzip.open(sys.argv[2]).read()[8:]
names = next(m["class_names"] for m in json.load(open(sys.argv[5])) if m["active"])
picked = rows[: int(sys.argv[3])]
wrong = sum(names[labels[int(r["id"].rsplit("#", 1)[1])]] != r["class"] for r in picked)
with open(sys.argv[4], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "class"])
    for r in picked:
        w.writerow([r["id"], names[labels[int(r["id"].rsplit("#", 1)[1])]]])
print(f"reviewing {len(picked)} ({sys.argv[6]}) of {len(rows)} items below the threshold; the model had {wrong} of them wrong")
PY
"$bin" jobs review --server "$server_url" "$job" --csv "$work/reviews.csv"
/usr/bin/time -f "retrain: %e s, peak RSS %M KB" "$bin" retrain --quiet --job "$job" --activate
cat "$AELABEL_HOME"/runs/retrain-*/retrain.md
