# Tether: `make run` serves a demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8700
PROXY_PORT ?= 8701

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tether needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix $(VENV)/npm --no-audit --no-fund --ignore-scripts --save-exact \
			--loglevel=error @modelcontextprotocol/server-filesystem@2026.8.31; \
	else echo "npm not found: the third-party MCP server tests will be skipped"; fi
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/tether up --demo --host $(HOST) --port $(PORT) --proxy-port $(PROXY_PORT)

# The whole suite on TEST_WORKERS processes (pytest-xdist; tests that start servers wait on
# them, so more workers than cores pay); `make test TEST_WORKERS=0` runs it in one.
TEST_WORKERS ?= 4
test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports --no-cache  # the layers of DESIGN.md §3 ([tool.importlinter] in pyproject.toml)

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .tether build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
