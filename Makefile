.PHONY: setup run test lint bench

setup:  ## install everything and start RabbitMQ and Redis if needed
	bash scripts/setup.sh

run:  ## run a single-node hub on the embedded backend (http://127.0.0.1:8080)
	bash scripts/setup.sh --runtime && .venv/bin/hub serve

test:  ## every test: lint, types, Python suite, client-js unit and browser tests
	bash scripts/test.sh

lint:
	.venv/bin/ruff check hub publisher tests testkit bench docker/cluster.py && .venv/bin/ruff format --check hub publisher tests testkit bench docker/cluster.py && .venv/bin/mypy

bench:  ## the benchmark suite (bench/)
	.venv/bin/python -m bench
