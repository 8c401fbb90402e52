#!/usr/bin/env bash
# Write a .env for docker compose from deploy/compose.env.example, with a fresh random value for
# every CHANGE-ME (the passwords). Refuses to overwrite an existing file.
#   deploy/docker/new-env.sh [PATH]      # default: .env beside docker-compose.yml
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-.env}
[ -e "$OUT" ] && { echo "error: $OUT exists; remove it first to start afresh" >&2; exit 1; }
umask 077
python3 - deploy/compose.env.example "$OUT" <<'PY'
import secrets, sys
text = open(sys.argv[1]).read()
while "CHANGE-ME" in text:
    text = text.replace("CHANGE-ME", secrets.token_hex(16), 1)
open(sys.argv[2], "w").write(text)
PY
echo "wrote $OUT (random passwords; keep it, the volumes were initialised with them)"
