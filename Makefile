# auditsvc: `make run` starts the service, `make test` runs everything. `make help` lists targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VAR_DIR := $(or $(AUDITSVC_VAR_DIR),var)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help install run test lint fmt check migrate pytest test-faults clean stop-db bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q -r requirements-dev.txt && touch $@

install: $(VENV)/.installed ## create .venv and install the pinned dependencies

migrate: install ## apply database migrations (starts the embedded PostgreSQL if DATABASE_URL is unset)
	$(PY) manage.py migrate --noinput

# Development only: a signing key in var/dev-signing-key, which settings use when no
# AUDIT_SIGNING_KEY is set (here and in manage.py run by hand), and sealing in the workers, so
# proofs verify (an AUDIT_SIGNING_KEY or AUDITSVC_AUTO_SEAL_SECONDS of your own wins).
run: migrate ## serve on http://127.0.0.1:8000 (HOST, PORT) with gunicorn, printing a development API key; seals every 10 s; makes the partitions ahead
	$(PY) manage.py partitions --no-list && $(PY) manage.py collectstatic --noinput -v0 && $(PY) manage.py create_signing_key --if-missing --output $(VAR_DIR)/dev-signing-key && $(PY) manage.py ensure_dev_api_key --url http://$(HOST):$(PORT) && AUDITSVC_AUTO_SEAL_SECONDS=$${AUDITSVC_AUTO_SEAL_SECONDS:-10} exec $(VENV)/bin/gunicorn auditsvc.wsgi -c gunicorn.conf.py -b $(HOST):$(PORT)

test: lint check pytest ## lint, type check, Django checks, then the whole test suite

pytest: install ## the test suite only (the fault suite included)
	$(PY) -m pytest

test-faults: install ## only the fault suite: kills workers, restarts PostgreSQL, saturates (tests/faults)
	$(PY) -m pytest tests/faults -m faults -v

check: install ## manage.py check and makemigrations --check
	$(PY) manage.py check --fail-level WARNING && $(PY) manage.py makemigrations --check --dry-run

lint: install ## ruff (lint + format check), mypy and the module boundaries (lint-imports)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy . && $(VENV)/bin/lint-imports

fmt: install ## format and autofix
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: install ## ingest benchmark (needs wrk): fresh database, gunicorn, load; appends to docs/BENCHMARKS.md
	$(PY) -m bench.ingest

stop-db: ## stop the embedded PostgreSQL under var/pg
	-$(PY) -c "import pgserver; pgserver.get_server('var/pg', cleanup_mode='stop')"

clean: stop-db ## remove .venv, var/ (the embedded database) and caches
	rm -rf $(VENV) var staticfiles .pytest_cache .mypy_cache .ruff_cache
