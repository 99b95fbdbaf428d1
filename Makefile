# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test system-deps bench typecheck clean generate

$(BIN)/kpi-exporter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

## run: install into .venv (first time) and serve on the built-in defaults
run: $(BIN)/kpi-exporter
	$(BIN)/kpi-exporter serve $(ARGS)

## system-deps: the real servers and browser the end-to-end tests use
system-deps:
	scripts/install-system-deps.sh

## test: install everything the suite needs and run all of it
test: $(BIN)/kpi-exporter system-deps
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## generate: regenerate dashboards, recording rules, alerts, their promtool tests,
## alertmanager.yml and docs/runbooks.md from mixin/ (thresholds: mixin/config.py),
## and docs/metrics.md from the exporter itself
generate: $(BIN)/kpi-exporter
	$(BIN)/python -m mixin.generate
	$(BIN)/python -m exporter.metricsdoc

## bench: throughput, scrape and memory benchmarks, scrapes against ingest in the KPI
## windows and in one large metric family, then the shared window store and --reuse-port against one process, then the
## OTLP transports (HTTP and gRPC, plain and TLS) and new requests while idle connections
## are open, then what visits cost (not part of the tests; the scale-out and visit runs
## start their own redis-server, from
## `make system-deps`)
bench: $(BIN)/kpi-exporter
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/window_scrapes.py --json benchmarks/results/window-scrapes.json
	$(BIN)/python benchmarks/large_family_scrapes.py
	$(BIN)/python benchmarks/scale_out.py
	$(BIN)/python benchmarks/transports.py
	$(BIN)/python benchmarks/idle_clients.py
	$(BIN)/python benchmarks/visits.py

clean:
	rm -rf $(VENV) build *.egg-info
