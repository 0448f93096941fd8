# The two commands of the README: `make demo` and `make test`. Both set up what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
LEADFLOW := $(VENV)/bin/leadflow

.PHONY: setup system-packages venv demo demo-job test lint stack-up stack-down bench

setup: system-packages venv

# Debian's ClickHouse server (18.16) and Chromium (to look at the HTML report); needs root.
system-packages:
	@if [ ! -x /usr/sbin/clickhouse-server ] && ! command -v clickhouse-server >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server; \
	fi
	@if ! command -v chromium >/dev/null 2>&1; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) || \
		echo "chromium not installed: only needed to render the HTML report to PNG"; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

stack-up: setup
	$(LEADFLOW) stack up

stack-down:
	$(LEADFLOW) stack down

demo: setup stack-up demo-job

demo-job:
	$(LEADFLOW) demo

test: setup
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; \
	exit $$rc

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/replay_bench.py
