#!/usr/bin/env bash
# Builds the aelabel container image with buildah, pulling nothing: `buildah from scratch`, then
# the root filesystem of deploy/image-rootfs.sh around the binary `cargo build --release`
# already made (no second compile). Tags aelabel:<Cargo.toml version> and aelabel:latest, then
# checks the image: its entrypoint binary, run from the image's own root filesystem as the
# image's user, must print `aelabel <version>`.
#
# usage: deploy/build-image.sh            (as root; a user with sudo is switched to root)
# env:   AELABEL_BIN  the binary to pack [default: $CARGO_TARGET_DIR or target, /release/aelabel]
#        IMAGE        the image name [default: aelabel]
# Storage is buildah's usual one (/var/lib/containers/storage) with the vfs driver, which needs
# no overlay or fuse support; chroot isolation, since nothing is run inside a container here.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-aelabel}
uid=65532
bin=${AELABEL_BIN:-${CARGO_TARGET_DIR:-target}/release/aelabel}
version=$(sed -n '/^\[package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "error: no version in Cargo.toml's [package]" >&2; exit 1; }

# buildah mounts the image and chowns its files: root. CI runs as root, where sudo may be absent.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: build-image.sh needs root (buildah mounts the image and chowns its files) and sudo is missing" >&2; exit 1; }
  exec sudo --preserve-env=AELABEL_BIN,IMAGE,CARGO_TARGET_DIR bash "$0" "$@"
fi
if ! command -v buildah >/dev/null; then
  echo "installing buildah with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
fi

[ -x "$bin" ] || { echo "error: $bin does not exist; build it first: cargo build --release --locked" >&2; exit 1; }
# A stale binary would be packed under the wrong tag.
got=$("$bin" --version)
[ "$got" = "aelabel $version" ] || { echo "error: $bin says '$got' but Cargo.toml is at $version; rebuild it" >&2; exit 1; }

export BUILDAH_ISOLATION=chroot
bah() { buildah --storage-driver vfs "$@"; }

start=$(date +%s)
work=$(mktemp -d)
ctr=""
cleanup() {
  [ -z "$ctr" ] || bah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

bash deploy/image-rootfs.sh "$bin" "$work/rootfs" "$uid"

ctr=$(bah from scratch)
mnt=$(bah mount "$ctr")
cp -a "$work/rootfs/." "$mnt/"
bah umount "$ctr" >/dev/null
bah config \
  --user "$uid:$uid" \
  --workingdir /data \
  --env AELABEL_HOME=/data \
  --env PATH=/usr/local/bin \
  --port 50051 --port 9090 \
  --volume /data \
  --entrypoint '["aelabel"]' \
  --cmd serve \
  --label org.opencontainers.image.title=aelabel \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.description="Semi-supervised image labelling served over gRPC" \
  "$ctr"
# Images of earlier builds under these tags would otherwise pile up in vfs storage.
for tag in "$image:$version" "$image:latest"; do bah rmi -f "$tag" >/dev/null 2>&1 || true; done
bah commit --quiet --rm "$ctr" "$image:$version" >/dev/null
ctr=""
bah tag "$image:$version" "$image:latest"

# The check: mount the committed image and run its entrypoint from its own root filesystem.
ctr=$(bah from --pull-never "$image:latest")
mnt=$(bah mount "$ctr")
entrypoint=$(bah inspect --format '{{.OCIv1.Config.Entrypoint}}' "$ctr")
[ "$entrypoint" = '[aelabel]' ] || { echo "error: the image's entrypoint is $entrypoint, not [aelabel]" >&2; exit 1; }
user=$(bah inspect --format '{{.OCIv1.Config.User}}' "$ctr")
[ "$user" = "$uid:$uid" ] || { echo "error: the image runs as '$user', not $uid:$uid" >&2; exit 1; }
owner=$(stat -c %u:%g "$mnt/data")
[ "$owner" = "$uid:$uid" ] || { echo "error: the image's /data belongs to $owner, not $uid:$uid" >&2; exit 1; }
said=$(env -i PATH=/usr/local/bin AELABEL_HOME=/data "$(command -v chroot)" --userspec="$uid:$uid" "$mnt" aelabel --version 2>&1) || {
  echo "error: the image's aelabel does not start from its own root filesystem: $said" >&2
  exit 1
}
[ "$said" = "aelabel $version" ] || { echo "error: the image's aelabel --version printed '$said', expected 'aelabel $version'" >&2; exit 1; }
bah umount "$ctr" >/dev/null

size=$(bah images --format '{{.Size}}' "$image:latest" | awk 'NR == 1')
echo "built $image:$version and $image:latest ($size, $(($(date +%s) - start)) s); its entrypoint answers: $said"
