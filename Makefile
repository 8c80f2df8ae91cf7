# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: install services browser demo test test-ui check-reliability ui clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,scale]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/retrain-assets demo

# The scale-out tests start real PostgreSQL and Redis servers (in temp dirs, on free ports): their
# binaries come from Debian's packages, installed here when absent.
services:
	@command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing postgresql and redis-server (Debian packages) for the scale-out tests"; \
			(apt-get install -y -qq postgresql redis-server >/dev/null 2>&1 || \
			 (apt-get update -qq && apt-get install -y -qq postgresql redis-server >/dev/null)); \
		else \
			echo "the scale-out tests need PostgreSQL and Redis server binaries: install the postgresql and" \
			     "redis-server packages (e.g. sudo apt-get install postgresql redis-server)" >&2; exit 1; \
		fi; }

# The UI tests drive Debian's Chromium through Playwright (no browser download): installed here when absent.
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium (Debian package) for the UI tests"; \
			(apt-get install -y -qq chromium >/dev/null 2>&1 || \
			 (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); \
		else \
			echo "the UI tests need Chromium at /usr/bin/chromium: install the chromium package" \
			     "(e.g. sudo apt-get install chromium)" >&2; exit 1; \
		fi; }

# Two workers (the CI machine has two cores), one test file per worker so module fixtures are built once.
# The whole suite, the browser tests of the Dagster UI included.
test: $(STAMP) services browser
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

# Only the browser tests: the short demo fills an instance, dagster-webserver serves it, headless
# Chromium checks the asset graph, the checks and the report links; screenshots go to ui-artifacts/.
test-ui: $(STAMP) browser
	$(BIN)/python -m pytest -m ui -v

# The fault suites at full strength: 6 SIGKILLs per stage (24 in all), a run worker killed under a
# real daemon, bad inputs, security, transactional writes, service hardening, trial expiry and
# approval rules. `make test` runs the same suites with one kill per stage.
check-reliability: $(STAMP)
	rm -f .reliability-report.txt
	RETRAIN_ASSETS_CRASH_TRIALS=6 RETRAIN_ASSETS_RELIABILITY_REPORT=.reliability-report.txt $(BIN)/python -m pytest -v \
		retrain_assets_tests/test_reliability.py retrain_assets_tests/test_dead_runs.py retrain_assets_tests/test_bad_inputs.py \
		retrain_assets_tests/test_security.py retrain_assets_tests/test_storage.py retrain_assets_tests/test_service.py \
		retrain_assets_tests/test_core_rollout.py
	cat .reliability-report.txt

ui: $(STAMP)
	$(BIN)/python -m retrain_assets.apps.ui

clean:
	rm -rf data/landing data/warehouse data/snapshots data/mlflow data/replays data/reports data/restricted data/alerts
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
