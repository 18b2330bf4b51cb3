# aicmo: every day-to-day command. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help install services demo test test-fast lint bench bench-web bench-hosts bench-retention chaos migrate worker beat flower serve up down clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# Installed once, and again whenever pyproject.toml changes: `make test` on a fresh clone
# installs what it needs first.
INSTALLED := $(VENV)/.installed

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(PY)  ## create .venv and install aicmo with its dev tools
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(INSTALLED)

demo: install  ## run the whole flow on the embedded default (SQLite + file transport)
	$(BIN)/aicmo demo

services: $(INSTALLED)  ## check PostgreSQL and Redis on localhost (start them with Docker if it exists)
	@$(PY) -m tests.support.ensure_services

test: $(INSTALLED) services  ## the whole suite (needs PostgreSQL and Redis on localhost)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(INSTALLED)  ## unit tests only
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: $(INSTALLED)  ## ruff and mypy
	$(BIN)/ruff check aicmo tasks tests migrations beat_schedule.py
	$(BIN)/ruff format --check aicmo tasks migrations beat_schedule.py
	$(BIN)/mypy

BENCH_INSTALLED := $(VENV)/.installed-bench

$(BENCH_INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	@touch $@

bench: $(INSTALLED) $(BENCH_INSTALLED) services  ## benchmarks against plain Celery, Dramatiq and Procrastinate (writes BENCHMARKS.md), then admission, web, retention and hosts
	$(PY) -m tests.benchmarks $(BENCH_ARGS)
	$(PY) -m tests.benchmarks.bench_admission
	$(PY) -m tests.benchmarks.bench_web
	$(PY) -m tests.benchmarks.bench_retention
	$(PY) -m tests.benchmarks.bench_hosts

bench-hosts:  ## throughput with 1, 2 and 4 worker hosts (network namespaces; root) (writes BENCHMARKS-hosts.md)
	$(PY) -m tests.benchmarks.bench_hosts

bench-retention:  ## one aol.purge batch on 100k, 1M and 10M finished actions (writes BENCHMARKS-retention.md; ROWS=100000,1000000)
	$(PY) -m tests.benchmarks.bench_retention $(if $(ROWS),--rows $(ROWS))

bench-web:  ## console pages and API lists on 1,000,000 actions (writes BENCHMARKS-web.md)
	$(PY) -m tests.benchmarks.bench_web

chaos:  ## the fault-injection suite
	$(BIN)/pytest tests/chaos $(PYTEST_ARGS)

migrate:  ## apply the Alembic migrations to AICMO_DATABASE_URL
	$(BIN)/alembic upgrade head

worker:  ## a Celery worker
	$(BIN)/celery -A tasks worker -l INFO -c 2

beat:  ## Celery beat (sweeper, campaign ticks, daily metrics)
	$(BIN)/celery -A tasks beat -l INFO -s var/celerybeat-schedule

flower:  ## Flower on http://localhost:5555
	$(BIN)/celery -A tasks flower --port=5555

serve:  ## the web service: console, JSON API, lead webhooks, /metrics on http://127.0.0.1:8000
	$(BIN)/aicmo serve

up:  ## the production-shaped stack in Docker (redis, postgres, worker, beat, flower)
	docker compose up -d --build

down:  ## stop it
	docker compose down

clean:  ## remove the embedded database, broker folder and artifacts
	rm -rf var
