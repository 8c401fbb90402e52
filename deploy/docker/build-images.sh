#!/usr/bin/env bash
# Build every image the Compose stack runs, locally, with no image registry:
#
#   1. the base: Debian bookworm from debootstrap, imported (make-base-image.sh), once;
#   2. the orderflow image from the wheelhouse (wheelhouse.sh): no network inside the build;
#   3. the stand-ins for the third-party images, from Debian packages on the same base
#      (standins/*.Dockerfile; apt reaches the Debian mirror from the build).
#
# Layers are cached by the engine: a second run rebuilds only what changed. Used by
# `make stack` and tests/stack. FORCE_BASE=1 rebuilds the base.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE=${BASE_IMAGE:-orderflow-base:bookworm}
APP=${ORDERFLOW_IMAGE:-orderflow:0.1.0}
STANDINS=deploy/docker/standins

if [ "${FORCE_BASE:-0}" = 1 ] || ! docker image inspect "$BASE" >/dev/null 2>&1; then
  deploy/docker/make-base-image.sh "$BASE"
fi

deploy/docker/wheelhouse.sh
# The classic builder: BuildKit would look for its frontend image in a registry. It reports
# the build-arg default it does not use; that is expected.
export DOCKER_BUILDKIT=0
docker build --quiet --build-arg BASE_IMAGE="$BASE" --tag "$APP" . >/dev/null
echo "built $APP"

build_standin() { # name tag
  docker build --quiet --network host --build-arg BASE_IMAGE="$BASE" \
    --file "$STANDINS/$1.Dockerfile" --tag "orderflow-standin/$1:$2" "$STANDINS" >/dev/null
  echo "built orderflow-standin/$1:$2"
}
build_standin postgres 15
build_standin rabbitmq 3.10
build_standin redis 7.0
build_standin prometheus 2.42
build_standin alertmanager 0.25
