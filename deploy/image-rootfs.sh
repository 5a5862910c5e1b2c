#!/usr/bin/env bash
# Lays out the runtime root filesystem of the aelabel image in DEST: the `aelabel` binary, the
# shared libraries `ldd` lists for it plus the dynamic loader (glibc, libm, libgcc_s — there is
# nothing else: no shell, no package manager), a passwd/group naming the non-root user, and
# the data folder that user owns. Used by deploy/build-image.sh (buildah, from the binary
# `cargo build --release` made) and by deploy/Dockerfile (in its builder stage), so both images
# hold the same files.
#
# usage: deploy/image-rootfs.sh BINARY DEST [UID]      (as root: it chowns and chroots)
set -euo pipefail

bin=${1:?usage: image-rootfs.sh BINARY DEST [UID]}
dest=${2:?usage: image-rootfs.sh BINARY DEST [UID]}
uid=${3:-65532}

[ -x "$bin" ] || { echo "error: $bin is not an executable; build it first with cargo build --release --locked" >&2; exit 1; }
command -v ldd >/dev/null || { echo "error: ldd is missing (Debian package libc-bin)" >&2; exit 1; }

mkdir -p "$dest/usr/local/bin" "$dest/etc" "$dest/data" "$dest/tmp"
install -m 0755 "$bin" "$dest/usr/local/bin/aelabel"

# Every library the binary needs, at the path the loader will look for it, as a real file
# (cp -L), plus the loader itself. A statically linked binary lists none and needs none.
if ldd "$bin" >/dev/null 2>&1; then
  # "libc.so.6 => /lib/…/libc.so.6 (0x…)" gives the library; "/lib64/ld-linux-… (0x…)" the
  # loader. POSIX classes only: Debian's default awk is mawk.
  ldd "$bin" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(0x/ { print $1 }' | while read -r lib; do
    mkdir -p "$dest$(dirname "$lib")"
    cp -L "$lib" "$dest$lib"
  done
fi

# Names for the numeric user, so tools inside and outside show them; the server needs none.
cat > "$dest/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
aelabel:x:$uid:$uid:aelabel:/data:/sbin/nologin
PASSWD
cat > "$dest/etc/group" <<GROUP
root:x:0:
aelabel:x:$uid:
GROUP
# Host names (a Postgres service's DNS name) resolve through /etc/hosts, then DNS; glibc
# 2.34+ has both built in, so no libnss_* library is needed.
echo "hosts: files dns" > "$dest/etc/nsswitch.conf"

chown "$uid:$uid" "$dest/data"
chmod 0750 "$dest/data"
chmod 1777 "$dest/tmp"

# The binary must start with nothing but these files (a missing library or loader fails here).
said=$(env -i "$(command -v chroot)" --userspec="$uid:$uid" "$dest" /usr/local/bin/aelabel --version 2>&1) || {
  echo "error: aelabel does not start inside $dest: $said" >&2
  exit 1
}
