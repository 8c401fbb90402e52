#!/usr/bin/env bash
# Make sure PostgreSQL, RabbitMQ and Redis answer on the configured URLs. A local service that
# is installed but down is started; one that is not installed is reported with what to do.
set -euo pipefail

DB_URL=${ORDERFLOW_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/orderflow}
MQ_URL=${ORDERFLOW_RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/}
REDIS_URL=${ORDERFLOW_REDIS_URL:-redis://127.0.0.1:6379/0}

host_port() { # url default_port -> "host port"
  python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}

answers() { # host port
  timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

is_local() {
  case "$1" in 127.0.0.1|localhost|::1) return 0 ;; *) return 1 ;; esac
}

wait_for() { # name host port seconds
  local i
  for ((i = 0; i < $4 * 4; i++)); do
    answers "$2" "$3" && return 0
    sleep 0.25
  done
  echo "error: $1 did not come up on $2:$3 within $4 s" >&2
  return 1
}

ensure() { # name url default_port binary start-command...
  local name=$1 url=$2 port=$3 binary=$4
  shift 4
  read -r h p < <(host_port "$url" "$port")
  if answers "$h" "$p"; then
    echo "ok: $name answers on $h:$p"
    return 0
  fi
  if ! is_local "$h"; then
    echo "error: $name does not answer on $h:$p (a remote host: start it there)" >&2
    return 1
  fi
  if ! command -v "$binary" >/dev/null 2>&1; then
    echo "error: $name is down on $h:$p and not installed here ($binary not found)." >&2
    echo "       Install it (Debian: apt-get install $name) or point ORDERFLOW_*_URL at one." >&2
    return 1
  fi
  echo "starting $name ..."
  "$@" >/dev/null 2>&1 || true
  wait_for "$name" "$h" "$p" 60
  echo "ok: $name started on $h:$p"
}

ensure postgresql "$DB_URL" 5432 pg_ctlcluster \
  bash -c 'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start'
ensure rabbitmq-server "$MQ_URL" 5672 rabbitmq-server rabbitmq-server -detached
ensure redis-server "$REDIS_URL" 6379 redis-server \
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log
