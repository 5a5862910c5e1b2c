#!/usr/bin/env bash
# How does the default pipeline grow with the pool, and does it keep its accuracy? For each pool
# size, seed and label count: `aelabel pipeline` with the default recipe, its wall time and peak
# RSS (/usr/bin/time), every stage's seconds, the test accuracy and the auto-accepted share from
# report.json. Pools larger than Fashion-MNIST's 55,000 are written once by `aelabel bench pool`
# (the 60,000 training images, then copies shifted by one pixel, then by two, then mirrored;
# 5,000 more than the pool, since the last 5,000 validate the autoencoder); t10k stays the test
# set. Writes scale.json, scale.md (every run, then medians and means per build) and scale.png.
#
# Usage: benches/pipeline_scale.sh [--pools 55000,250000,1000000] [--seeds 42] [--labels 1000]
#                                  [--rounds 1] [--out DIR]
#   --seeds, --labels  comma-separated lists; every combination runs --rounds times.
#   BASELINE=PATH  another build's `aelabel`: run on every combination too, alternating with
#                  this build (who goes first swaps from one pair of runs to the next).
#   POOL_DIR=DIR   where the large pools are kept between runs (default /tmp).
set -euo pipefail
pools=55000,250000,1000000 seeds=42 label_counts=1000 rounds=1 out=""
while [ $# -gt 0 ]; do
  case $1 in
    --pools) pools=$2; shift 2 ;;
    --seeds | --seed) seeds=$2; shift 2 ;;
    --labels) label_counts=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
cargo build --release --locked -q
current=$PWD/${CARGO_TARGET_DIR:-target}/release/aelabel
baseline=${BASELINE:-}
data=${AELABEL_DATA:-/usr/share/datasets/fashion-mnist}
work=$(mktemp -d /tmp/pipeline-scale.XXXXXX)
out=${out:-$work}
mkdir -p "$out"
trap 'rm -rf "$work"' EXIT
export RUST_LOG=${RUST_LOG:-warn}
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
avx512=$(grep -qw avx512f /proc/cpuinfo && echo "with AVX-512" || echo "without AVX-512")
echo "CPU: ${cpu:-unknown} $avx512, $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$work/runs.jsonl"

# One run: BUILD NAME, BINARY, POOL SIZE, DATA DIR, SEED, LABELS. Appends a JSON line and prints
# a summary.
run() {
  local name=$1 bin=$2 pool=$3 dir=$4 seed=$5 labels=$6 dest="$work/$1-$3"
  rm -rf "$dest"
  AELABEL_HOME=$work/home /usr/bin/time -f '%e %M' -o "$work/time" \
    "$bin" pipeline --quiet --no-register --data "$dir" --out "$dest" \
    --seed "$seed" --labels "$labels" --threads 2 > /dev/null
  read -r wall rss_kb < "$work/time"
  python3 - "$dest/report.json" "$name" "$pool" "$wall" "$rss_kb" "$seed" "$labels" \
    >> "$work/runs.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({
    "build": sys.argv[2], "pool": int(sys.argv[3]), "seed": int(sys.argv[6]),
    "labels": int(sys.argv[7]), "wall_seconds": float(sys.argv[4]),
    "peak_rss_mb": int(sys.argv[5]) / 1024, "train_images": r["data"]["train_images"],
    "stages": r["phase_seconds"], "test_accuracy": r["classifier"]["test_accuracy"],
    "auto_label_coverage": r["auto_label"]["test_coverage"],
}))
PY
  tail -1 "$work/runs.jsonl" | python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); print("%9s pool %9s seed %s labels %s: %7.1f s wall, %6.0f MB peak, test accuracy %.2f %%, auto-accepted %.2f %%" % (r["build"], format(r["pool"], ","), r["seed"], r["labels"], r["wall_seconds"], r["peak_rss_mb"], 100 * r["test_accuracy"], 100 * (r["auto_label_coverage"] or 0)))'
}

i=0
for pool in ${pools//,/ }; do
  if [ "$pool" -eq 55000 ]; then
    dir=$data
  else
    dir=${POOL_DIR:-/tmp}/aelabel-pool-$((pool + 5000))
    [ -s "$dir/train-images-idx3-ubyte" ] ||
      "$current" bench pool --images $((pool + 5000)) --out "$dir" --data "$data" > /dev/null
  fi
  for round in $(seq "$rounds"); do
    for seed in ${seeds//,/ }; do
      for labels in ${label_counts//,/ }; do
        if [ -n "$baseline" ] && [ $((i % 2)) -eq 1 ]; then
          run baseline "$baseline" "$pool" "$dir" "$seed" "$labels"
          run current "$current" "$pool" "$dir" "$seed" "$labels"
        else
          run current "$current" "$pool" "$dir" "$seed" "$labels"
          [ -n "$baseline" ] && run baseline "$baseline" "$pool" "$dir" "$seed" "$labels"
        fi
        i=$((i + 1))
      done
    done
  done
done

python3 - "$work/runs.jsonl" "$out" "$cpu $avx512" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
out, cpu = sys.argv[2], sys.argv[3]
json.dump({"cpu": cpu, "runs": runs}, open(f"{out}/scale.json", "w"), indent=1)
stages = []
for r in runs:
    stages += [s for s in r["stages"] if s not in stages]
lines = [f"CPU: {cpu}, 2 threads. Seconds per stage; × = growth against the smallest pool "
         "of the same build, next to the pool's own growth.", "",
         "| build | pool | seed | labels | " + " | ".join(stages) +
         " | wall | peak RSS | test accuracy |", "|---" * (len(stages) + 7) + "|"]
first = {}
for r in runs:
    base = first.setdefault(r["build"], r)
    grow = r["pool"] / base["pool"]
    def cell(v, b):
        return f"{v:.1f}" if r is base or not b else f"{v:.1f} ({v / b:.1f}×)"
    row = [cell(r["stages"].get(s, 0.0), base["stages"].get(s)) for s in stages]
    lines.append(f"| {r['build']} | {r['pool']:,} ({grow:.1f}×) | {r['seed']} | {r['labels']} | "
                 + " | ".join(row) +
                 f" | {cell(r['wall_seconds'], base['wall_seconds'])} | {r['peak_rss_mb']:.0f} MB"
                 f" | {100 * r['test_accuracy']:.2f} % |")
groups = {}
for r in runs:
    groups.setdefault((r["pool"], r["labels"], r["build"]), []).append(r)
def median(v):
    v = sorted(v)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
lines += ["", "Per build: median wall over all its runs, accuracy and auto-accepted share as the "
          "mean over seeds (each seed's median first).", "",
          "| pool | labels | build | runs | seeds | median wall | mean test accuracy "
          "| mean auto-accepted |", "|---|---|---|---|---|---|---|---|"]
for (pool, labels, build), rs in sorted(groups.items()):
    by_seed = {}
    for r in rs:
        by_seed.setdefault(r["seed"], []).append(r)
    acc = sum(median([r["test_accuracy"] for r in v]) for v in by_seed.values()) / len(by_seed)
    cov = sum(median([r["auto_label_coverage"] or 0 for r in v])
              for v in by_seed.values()) / len(by_seed)
    lines.append(f"| {pool:,} | {labels} | {build} | {len(rs)} | "
                 f"{', '.join(map(str, by_seed))} | {median([r['wall_seconds'] for r in rs]):.1f} s"
                 f" | {100 * acc:.2f} % | {100 * cov:.2f} % |")
open(f"{out}/scale.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
curves = [{"name": f"{b}: {s}", "points": [[r["pool"], r["stages"].get(s, 0.0)]
           for r in runs if r["build"] == b]}
          for b in dict.fromkeys(r["build"] for r in runs) for s in stages + ["wall"]
          if s != "wall"] + [{"name": f"{b}: wall", "points": [[r["pool"], r["wall_seconds"]]
          for r in runs if r["build"] == b]} for b in dict.fromkeys(r["build"] for r in runs)]
json.dump({"title": f"aelabel pipeline by pool size ({cpu})", "x_label": "pool images",
           "y_label": "seconds", "target": None, "curves": curves},
          open(f"{out}/scale-plot.json", "w"))
PY
"$current" bench plot --json "$out/scale-plot.json" --out "$out/scale.png"
echo "wrote $out/scale.json, scale.md, scale.png"
