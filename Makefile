# Two commands on a fresh machine: `make run` (the demo sandbox) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
HOST ?= 127.0.0.1

.PHONY: install run test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,sftp,dev]'
	@touch $(STAMP)

# Seeds the demo organization if needed, prints its credentials and a curl login, then serves.
run: install
	DATALAB_DEV_MODE=$${DATALAB_DEV_MODE:-1} $(BIN)/datalab demo --serve --host $(HOST) --port $(PORT)

# Runs on SQLite; with DATALAB_TEST_DATABASE_URL set (a PostgreSQL URL) the same suite runs there.
# The test files run in TEST_WORKERS pytest-xdist worker processes (2 by default, one per core of a small
# machine), each file in one worker so that its servers start once; auto starts one per CPU, 0 runs the
# suite in this process.
# pytest exits 5 when it collected no test: that is a broken suite, never a pass.
TEST_WORKERS ?= 2
test: install
	@$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# bench.load runs on SQLite, and on PostgreSQL too when DATALAB_TEST_DATABASE_URL is set.
bench: install
	$(BIN)/python -m bench.download
	$(BIN)/python -m bench.upload
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.matching
	$(BIN)/python -m bench.linkage_quality
	$(BIN)/python -m bench.profile
	$(BIN)/python -m bench.load
	@if [ -n "$$DATALAB_TEST_DATABASE_URL" ]; then $(BIN)/python -m bench.load --postgres "$$DATALAB_TEST_DATABASE_URL"; fi

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
