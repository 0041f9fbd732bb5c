# Entry points. `make run` serves the site for development, `make test` runs every test,
# `make serve` runs it as in production. Each sets up what it needs first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export DEBUG ?= true

.PHONY: install install-serving install-dev lint setup run serve bench test axe browser train clean

# Three installs in one .venv: the serving set (requirements.txt: what a web host needs, no
# TensorFlow), the training set on top of it (requirements-train.txt), and the test and lint tools.
$(BIN)/.serving: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.training: $(BIN)/.serving requirements-train.txt
	$(BIN)/pip install --quiet -r requirements-train.txt
	touch $@

$(BIN)/.dev: $(BIN)/.training requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.training

install-serving: $(BIN)/.serving

install-dev: $(BIN)/.dev

# The development settings, written once so that `python manage.py ...` works in any terminal
# after `make run`; an existing .env is never overwritten. Production sets its own environment.
.env:
	printf '%s\n' '# Development settings written by `make run` (delete or edit freely; make serve turns DEBUG off).' 'DEBUG=true' > $@

# Database tables, the shared cache table and the shipped model registered as version 1.
setup: install .env
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py register_base_model

# The development server and, beside it, the task worker that executes the retrain runs asked for
# in the admin ("Retrain now"); Ctrl-C stops both.
run: setup
	$(BIN)/python manage.py db_worker --no-reload & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' INT TERM EXIT; \
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# The site as in production: Granian (digitsite/serve.py: one worker per core unless WORKERS says, THREADS
# per worker), DEBUG off, static files collected for whitenoise. It serves plain HTTP here, so DIGIT_HTTPS
# defaults to false; set DIGIT_HTTPS=true behind TLS. SECRET_KEY comes from the environment or
# var/secret_key (made once).
serve: export DEBUG = false
serve: export DIGIT_HTTPS ?= false
serve: install-serving var/secret_key
	export SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}" && \
	$(BIN)/python manage.py migrate --noinput && \
	$(BIN)/python manage.py createcachetable && \
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0 && \
	$(BIN)/python manage.py register_base_model && \
	HOST=$(HOST) PORT=$(PORT) exec $(BIN)/python -m digitsite.serve

var/secret_key:
	mkdir -p var
	umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

# Benchmarks (see docs/performance.md): in-process, HTTP load on SQLite and PostgreSQL, memory and start time.
bench: install-dev
	$(BIN)/python bench/bench_inference.py
	$(BIN)/python bench/bench_http.py --database sqlite
	$(BIN)/python bench/bench_http.py --database postgres
	$(BIN)/python bench/bench_memory.py
	$(BIN)/python bench/bench_hostile.py

# Lint and type checks (pyproject.toml): ruff for style and formatting, mypy with django-stubs.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

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
