# Everything starts from python3: the first target that needs the environment builds .venv from
# requirements.lock (exact versions) and installs this project into it in editable mode.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PEOPLE ?= 10000
# The BigQuery emulator of the tests lives in its own venv: it pins sqlglot and opentelemetry versions of its own.
BQ_VENV := .venv-bqemulator
BQ_LOCK := tests/bigquery/requirements-bqemulator.lock

.PHONY: install bqemulator demo test lint ui bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: about 2 minutes)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

bqemulator: $(BQ_VENV)/.installed-stamp

$(BQ_VENV)/.installed-stamp: $(BQ_LOCK)
	@test -x $(BQ_VENV)/bin/python || $(PYTHON) -m venv $(BQ_VENV)
	@echo "installing the BigQuery emulator (bqemulator) into $(BQ_VENV) (first time: about 1 minute)"
	@$(BQ_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(BQ_LOCK)
	@touch $@

demo: install
	$(BIN)/cdp demo --people $(PEOPLE)

test: install bqemulator lint
	$(BIN)/python -m pytest -q --durations=25

lint: install
	$(BIN)/ruff check .

ui: install
	$(BIN)/cdp ui

bench: install
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/identity.py --reuse
	$(BIN)/python benchmarks/segments.py
	$(BIN)/python benchmarks/forget.py --home var/bench/identity
	$(BIN)/python benchmarks/freshness.py
	$(BIN)/python benchmarks/api.py
	$(BIN)/python benchmarks/reverse_etl_diff.py
	$(BIN)/python benchmarks/reverse_etl_salesforce.py
	$(BIN)/python benchmarks/bigquery_cost.py

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet -e ".[dev]"
	(head -3 requirements.lock; .lock-venv/bin/pip freeze --exclude-editable) > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

clean:
	rm -rf var target logs
