#!/usr/bin/env bash
# How fast is a bulk label job end to end? Runs the ignored test
# `bulk_job_rate_on_sqlite_and_postgres` (tests/label_jobs.rs): a registry-backed server,
# CreateJob, AddImages of all 70,000 Fashion-MNIST images (train + t10k) through one stream,
# wait until every item is labelled, read the whole ExportLabels stream; on SQLite, then on a
# fresh Postgres database (127.0.0.1:5432, or AELABEL_TEST_POSTGRES). Prints each round and
# the median images/s per backend.
#
# Usage: benches/job_bulk.sh [ROUNDS]
#   BASELINE=PATH  a label_jobs test binary of another build (e.g. copied from
#                  target/release/deps/label_jobs-*); rounds then alternate it with this build,
#                  who goes first swapping every round, and the medians of both are printed.
set -euo pipefail
rounds=${1:-3}
cd "$(dirname "$0")/.."
# The test binary of this build: cargo prints its path as "Executable … (PATH)".
current=$(cargo test --release --locked --test label_jobs --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$current" ] || { echo "could not build the label_jobs test binary" >&2; exit 1; }
baseline=${BASELINE:-}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
run() { # NAME BINARY
  "$2" bulk_job_rate_on_sqlite_and_postgres --ignored --nocapture --test-threads 1 2>/dev/null |
    grep -o 'bulk-job .*' | sed "s/^/$1 /" | tee -a "$out"
}
for r in $(seq "$rounds"); do
  if [ -z "$baseline" ]; then
    run current "$current"
  elif [ $((r % 2)) -eq 1 ]; then
    run baseline "$baseline"; run current "$current"
  else
    run current "$current"; run baseline "$baseline"
  fi
done
python3 - "$out" <<'PY'
import collections, statistics, sys
rates = collections.defaultdict(list)
for line in open(sys.argv[1]):
    build, _, *fields = line.split()
    f = dict(kv.split("=") for kv in fields)
    rates[(build, f["backend"])].append(float(f["images_per_s"]))
for (build, backend), r in sorted(rates.items()):
    print(f"{build:8} {backend:8} median {statistics.median(r):7.0f} images/s "
          f"over {len(r)} rounds ({', '.join(f'{x:.0f}' for x in r)})")
PY
