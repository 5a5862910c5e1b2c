#!/usr/bin/env bash
# Installs the Debian packages aelabel needs at run time, if they are missing; with --for-tests
# also what the test suite needs (.ci/test). Used by deploy/quickstart and .ci/test; safe to
# run repeatedly.
set -euo pipefail

need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v cargo >/dev/null || { echo "error: cargo is not installed; install Rust from your distribution or rustup first" >&2; exit 1; }
if [ "${1:-}" = "--for-tests" ]; then
  # tests/deploy.rs renders deploy/k8s/ with kubectl's kustomize and validates it with a PyPI
  # package in a venv of its own; deploy/build-image.sh installs buildah itself.
  command -v kubectl >/dev/null || { echo "error: kubectl is not installed; tests/deploy.rs renders deploy/k8s/ with kubectl kustomize (kubectl 1.14 or newer)" >&2; exit 1; }
  # tests/container.rs runs the built image with podman, on runc (crun 1.8 refuses hybrid
  # cgroup v1/v2 hosts such as CI's).
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  command -v python3 >/dev/null || need+=(python3)
  python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} with apt-get"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
