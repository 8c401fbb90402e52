#!/usr/bin/env bash
# Build a local Python base image when no image registry is reachable (only Debian's package
# mirror is). It bootstraps a minimal Debian root file system, adds Python 3.11 from Debian, and
# imports the tree into the local Docker engine:
#
#   sudo deploy/docker/make-base-image.sh [TAG]          # default TAG: orderflow-base:bookworm
#   docker build --build-arg BASE_IMAGE=orderflow-base:bookworm -t orderflow:0.1.0 .
#
# Needs root, debootstrap and a running Docker engine. Debian bookworm's python3 is 3.11, the
# version the lock is compiled for. The image provides what the Dockerfile uses: python3 with
# venv and pip, groupadd/useradd, and a `python` command.
set -euo pipefail

TAG=${1:-orderflow-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

for tool in debootstrap docker; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required (apt-get install $tool)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }

ROOT=$(mktemp -d /tmp/orderflow-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT

# Downloaded packages are kept (DEBOOTSTRAP_CACHE), so a rebuild on this machine is quicker.
CACHE=${DEBOOTSTRAP_CACHE:-/var/cache/orderflow-debootstrap}
mkdir -p "$CACHE"
debootstrap --variant=minbase --cache-dir="$CACHE" \
  --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$ROOT" "$MIRROR"

# `python` as in the official images; no package caches or docs in the image. Images built on
# this base (deploy/docker/standins) install Debian packages: no recommends, no docs, and no
# service started by a package's install script (there is no init system in a container).
chroot "$ROOT" ln -sf /usr/bin/python3 /usr/local/bin/python
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$ROOT/etc/apt/apt.conf.d/90orderflow"
printf 'path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\n' \
  >"$ROOT/etc/dpkg/dpkg.cfg.d/90orderflow"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/*

tar -C "$ROOT" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$TAG"
echo "imported $TAG"
