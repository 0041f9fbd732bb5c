# Entry points. `make run` serves the site for development, `make test` runs every test,
# `make serve` runs it as in production. Each sets up what it needs first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export DEBUG ?= true

.PHONY: install install-dev setup run serve bench test axe browser train clean

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
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py register_base_model

run: setup
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# The site as in production: gunicorn (gunicorn.conf.py; WORKERS and THREADS), DEBUG off, static files
# collected for whitenoise. It serves plain HTTP here, so DIGIT_HTTPS defaults to false; set
# DIGIT_HTTPS=true behind TLS. SECRET_KEY comes from the environment or var/secret_key (made once).
serve: export DEBUG = false
serve: export DIGIT_HTTPS ?= false
serve: install var/secret_key
	export SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}" && \
	$(BIN)/python manage.py migrate --noinput && \
	$(BIN)/python manage.py createcachetable && \
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0 && \
	$(BIN)/python manage.py register_base_model && \
	exec $(BIN)/gunicorn digitsite.wsgi --bind $(HOST):$(PORT) --workers $${WORKERS:-2} --threads $${THREADS:-4}

var/secret_key:
	mkdir -p var
	umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

# Benchmarks (see docs/performance.md): in-process, HTTP load on SQLite and PostgreSQL, memory and start time.
bench: install-dev
	$(BIN)/python bench/bench_inference.py
	$(BIN)/python bench/bench_http.py --database sqlite
	$(BIN)/python bench/bench_http.py --database postgres
	$(BIN)/python bench/bench_memory.py

test: install-dev axe
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# axe-core (npm) for the accessibility checks of the browser tests; they skip without it outside CI.
AXE := node_modules/axe-core/axe.min.js
axe: $(AXE)
$(AXE):
	command -v npm >/dev/null && npm install --no-save --no-package-lock --no-audit --no-fund --silent axe-core@4.14.1 || true

# Debian's Chromium for the browser tests (needs root); the tests skip without it outside CI.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

train: install
	$(BIN)/python manage.py train $(TRAIN_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache node_modules
