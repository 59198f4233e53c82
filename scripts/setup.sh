#!/usr/bin/env bash
# Installs what the hub and its tests need on a fresh Debian machine, idempotently:
# the Python virtualenv with the package, the Debian packages the tests drive
# (chromium, haproxy, docker-compose; docker.io and debootstrap for the docker test; php-cli
# and php-amqplib for the README's PHP examples; promtool for docker/prometheus/), and
# client-js's npm dependencies. Starts Redis and RabbitMQ when they are not running.
#   scripts/setup.sh            everything the tests need
#   scripts/setup.sh --runtime  only the virtualenv with the hub (enough for `make run`)
set -euo pipefail
cd "$(dirname "$0")/.."
runtime_only=false
[ "${1:-}" = "--runtime" ] && runtime_only=true

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- Python
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import hub, hubnotify, pytest, ruff" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ] || [ publisher/pyproject.toml -nt .venv/.installed ]; then
  log "installing the hub with its dev extras, and the publish helper it depends on (publisher/)"
  .venv/bin/pip install --quiet --upgrade pip
  # One command: the hub's dependency notification-hub-publisher is satisfied by ./publisher
  # (editable), not looked up in the package index.
  .venv/bin/pip install --quiet -e ./publisher -e '.[dev]'
  touch .venv/.installed
fi

$runtime_only && exit 0

# --- Debian packages the tests use
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
# tests/test_docker.py: its own dockerd, stand-in images made with debootstrap
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
# tests/test_php.py, tests/test_tls.py: the README's PHP examples
command -v php >/dev/null || missing+=(php-cli)
[ -f /usr/share/php/PhpAmqpLib/autoload.php ] || missing+=(php-amqplib)
# tests/test_alerts.py: promtool checks docker/prometheus/
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- services
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached
fi
for _ in $(seq 1 120); do
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break
  sleep 1
done
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
rabbitmq-diagnostics -q ping >/dev/null 2>&1 || { echo "RabbitMQ is not reachable" >&2; exit 1; }

# --- client-js
if [ -f client-js/package-lock.json ] && { [ ! -d client-js/node_modules ] || [ client-js/package-lock.json -nt client-js/node_modules/.package-lock.json ]; }; then
  log "installing client-js dependencies"
  npm --prefix client-js ci --silent --no-audit --no-fund
fi
log "ready"
