# Two commands: `make run` (embedded default, demo data) and `make test` (PostgreSQL + Redis).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format install services migrate bench mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	./scripts/run.sh

test: $(STAMP)
	./scripts/ensure-services.sh
	./scripts/ensure-chromium.sh
	$(BIN)/python manage.py makemigrations --check --dry-run --settings=config.settings.test
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

services:
	./scripts/ensure-services.sh

# Every bench runs (a "-" line may fail); bench/summary.py prints one table of the acceptance
# figures and exits 1 only if a bench's ledger/books check broke or it left no figures.
# BENCH_SCALE=10 make bench: ten times the size (docs/TESTING.md).
bench: $(STAMP)
	./scripts/ensure-services.sh
	rm -f var/bench/*.json
	-$(BIN)/python bench/booking.py
	-$(BIN)/python bench/http_api.py
	-$(BIN)/python bench/search.py
	-$(BIN)/python bench/dashboard.py
	-$(BIN)/python bench/billing.py
	-$(BIN)/python bench/events.py
	-$(BIN)/python bench/incidents.py
	$(BIN)/python bench/summary.py

# Mutation testing of the critical modules (docs/TESTING.md); about an hour on 2 cores.
mutation: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,mutation]"
	./scripts/ensure-services.sh
	./scripts/mutation.sh

clean:
	rm -rf $(VENV) var .pytest_cache mutants
