#!/usr/bin/env bash
# Every check the project has, in one run: lint, types, the Python suite (protocol,
# contract suite on every backend, RabbitMQ/Redis faults, cluster behind nginx) and
# client-js (unit tests and end-to-end tests in headless Chromium).
# CI=true makes a missing service or browser a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

.venv/bin/ruff check hub tests
.venv/bin/ruff format --check hub tests
.venv/bin/mypy hub
.venv/bin/pytest "$@"
if [ -f client-js/package.json ]; then
  npm --prefix client-js test
fi
# the npm package as users get it: npm pack, installed into a scratch project, Node and Chromium
npm --prefix client-js run test:pack
