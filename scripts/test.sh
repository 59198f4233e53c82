#!/usr/bin/env bash
# Every check the project has, in one run: lint, types, the Python suite (protocol,
# contract suite on every backend, RabbitMQ/Redis faults, cluster behind HAProxy) and
# client-js (type check of src and tests, unit tests, end-to-end tests in headless Chromium).
# CI=true makes a missing service or browser a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

PYTHON_SOURCES=(hub publisher tests testkit bench docker/cluster.py)
.venv/bin/ruff check "${PYTHON_SOURCES[@]}"
.venv/bin/ruff format --check "${PYTHON_SOURCES[@]}"
.venv/bin/mypy  # the packages named in pyproject.toml: hub, hubnotify (publisher/), testkit and bench, strict
.venv/bin/pytest "$@"
if [ -f client-js/package.json ]; then
  npm --prefix client-js test
fi
# the npm package as users get it: npm pack, installed into a scratch project, Node and Chromium
npm --prefix client-js run test:pack
