# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# The venv is created when missing; re-installs are skipped until pyproject.toml changes.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
# loopback by default: the app has no login; `make run ADDRESS=0.0.0.0` serves the network
ADDRESS ?= 127.0.0.1
# pytest-xdist workers, one core each (tests/conftest.py pins them); `make test WORKERS=0` runs in one process
WORKERS ?= 2
XDIST   := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile)

.PHONY: install run test test-fast bench browser screenshots lint clean

# uv installs what pip would, from where pip is configured to look (.ci/uv_args.py translates pip's settings), but
# unzips and compiles bytecode on every core: 35 s instead of 110 s for pip and compileall here (docs/decisions.md).
# Where uv cannot be installed or its install fails (a setting of pip's it has no flag for, say), pip does it.
UV_VERSION ?= 0.13.9
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -m pip install -q 'uv==$(UV_VERSION)' && flags=$$($(PY) .ci/uv_args.py) && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode $$flags -e '.[dev]'; then :; \
	else \
	  echo "the install with uv failed (above): installing with pip (slower)"; $(PY) -m pip install -q -e '.[dev]'; \
	fi
	@touch $(STAMP)

install: $(STAMP)

# Debian chromium for the Playwright end-to-end tests (never `playwright install`: no network for it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: install
	$(VENV)/bin/streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS) \
	  --browser.gatherUsageStats false

test: install browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(XDIST)

test-fast: install
	$(PY) -m pytest $(XDIST) -m "not slow and not e2e"

bench: install
	$(PY) -m bench

# README screenshots from the current app: assets/screenshots/<page>.png (about a minute, offline)
screenshots: install browser
	$(PY) -m tests.e2e.screenshots

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
