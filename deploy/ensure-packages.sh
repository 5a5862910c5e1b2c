#!/usr/bin/env bash
# Installs the Debian packages aelabel needs at run and test time, if they are missing.
# Used by deploy/quickstart and .ci/test; safe to run repeatedly.
set -euo pipefail

need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v cargo >/dev/null || { echo "error: cargo is not installed; install Rust from your distribution or rustup first" >&2; exit 1; }

if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} with apt-get"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
