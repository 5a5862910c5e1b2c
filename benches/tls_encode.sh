#!/usr/bin/env bash
# A/B: batched Labeller.Encode (256 raw images a request) in plaintext against TLS with an API
# key, on two servers of the same model (one plaintext and open, one with --tls-cert and
# --api-keys-file), same load, alternated in one run (who goes first swaps every round):
# images/s per round, then the medians and the ratio TLS / plaintext (the goal: TLS costs at
# most 10 %, a ratio of 0.90 or more), with the CPU model name and the load average before and
# after. A throwaway CA and certificate are made with openssl.
# Usage: benches/tls_encode.sh MODEL [ROUNDS=7] [SECONDS=5] [CONCURRENCY=4]
# Ports: 50393/9393 (plaintext) and 50394/9394 (TLS). Not part of CI.
set -euo pipefail
model=${1:?usage: benches/tls_encode.sh MODEL [ROUNDS] [SECONDS] [CONCURRENCY]}
rounds=${2:-7}
secs=${3:-5}
clients=${4:-4}
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/aelabel"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"' EXIT

# A CA and a server certificate for 127.0.0.1 (P-256, as cert-manager issues by default).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
  -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/req.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$work/san.ext"
openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" -CAcreateserial \
  -days 1 -extfile "$work/san.ext" -out "$work/cert.pem" 2>/dev/null
key=$(openssl rand -hex 32)
printf 'bench label %s\n' "$key" >"$work/api-keys"

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" serve --model "$model" --addr 127.0.0.1:50393 --http-addr 127.0.0.1:9393 --log-format json >/dev/null 2>&1 &
pids+=($!)
"$bin" serve --model "$model" --addr 127.0.0.1:50394 --http-addr 127.0.0.1:9394 --log-format json \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --api-keys-file "$work/api-keys" >/dev/null 2>&1 &
pids+=($!)
for url in http://127.0.0.1:9393 https://127.0.0.1:9394; do
  for _ in $(seq 300); do
    curl -sf --cacert "$work/ca.pem" "$url/v2/health/ready" >/dev/null && break
    sleep 0.1
  done
  curl -sf --cacert "$work/ca.pem" "$url/v2/health/ready" >/dev/null || { echo "$url never became ready" >&2; exit 1; }
done
results="$work/results"
run() {
  case $1 in
    plain) target=(--server 127.0.0.1:50393) ;;
    tls) target=(--server https://127.0.0.1:50394 --ca-cert "$work/ca.pem") ;;
  esac
  AELABEL_API_KEY=$key "$bin" bench "${target[@]}" --rpc encode --batch 256 --concurrency "$clients" --duration "$secs" --json |
    jq -r --arg doors "$1" '"\($doors) \(.images_per_second) \(.latency.p50_ms) \(.errors | length)"' | tee -a "$results"
}
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then run plain; run tls; else run tls; run plain; fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
median() { grep "^$1 " "$results" | awk '{print $2}' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
plain=$(median plain)
tls=$(median tls)
errors=$(awk '{s += $4} END {print s}' "$results")
echo "median images/s: plaintext $plain, TLS + API key $tls; ratio TLS/plaintext $(awk -v a="$tls" -v b="$plain" 'BEGIN {printf "%.3f", a / b}'); rounds with errors: $errors"
