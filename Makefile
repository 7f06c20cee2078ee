# `make run`: set everything up on a fresh machine and run the product on its embedded defaults.
# `make test`: the whole suite (on PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set).
# `make bench` (`QUICK=1` for a short check): the benchmarks of SPEC §5, see docs/performance.md.

VENV := .venv
PYTHON := $(VENV)/bin/python
PYTHON_SYSTEM ?= python3
# make run serves the embedded development defaults unless told otherwise.
export DJANGO_DEBUG ?= 1

.PHONY: run test lint format install bench bench-profile

$(VENV)/.installed: requirements.txt
	test -x $(PYTHON) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

# One process serves the site on WEB_PORT and runs the task worker and the outbox sweep itself
# (SUPPORTSITE_SINGLE_PROCESS), so the replies' delivery ticks reach the desk through the in-memory
# channel layer. The Procfile's processes find the virtualenv's python first on PATH. Without
# TELEGRAM_BOT_TOKEN the Telegram sandbox runs beside it (Procfile.sandbox).
run: export SUPPORTSITE_SINGLE_PROCESS ?= 1
run: export WEB_PORT ?= 8000
run: install
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) manage.py create_demo_agent
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho start \
	  -f $$(if [ -n "$$TELEGRAM_BOT_TOKEN" ]; then echo Procfile; else echo Procfile.sandbox; fi)

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Starts its own database, Redis prefix, sandbox, servers and workers (BENCH_POSTGRES_URL, BENCH_REDIS_URL).
bench: install
	$(PYTHON) -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

# py-spy profiles of the webhook and of one worker: bench/profiles/{webhook,worker}-$(LABEL).txt
bench-profile: install
	$(PYTHON) -m bench --only profile --profile-label $(or $(LABEL),current) $(if $(QUICK),--quick)
