# Entry points. `make run` serves the site for development, `make test` runs every test,
# `make serve` runs it as in production. Each sets up what it needs first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export DEBUG ?= true

.PHONY: install install-dev setup run test browser train clean

$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.runtime

install-dev: $(BIN)/.dev

# Database tables, the shared cache table and the shipped model registered as version 1.
setup: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py register_base_model

run: setup
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's Chromium for the browser tests (needs root); the tests skip without it outside CI.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

train: install
	$(BIN)/python manage.py train $(TRAIN_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
