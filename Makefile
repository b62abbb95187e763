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

# pip compiles the installed packages' bytecode on one core; compileall does it on every core (66 s instead of 79 s
# for the whole install here). It leaves out the one file that is not Python 3.11 (pip skips it too); any other file
# it cannot compile is printed, and the install goes on, as with pip.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -e '.[dev]'
	@$(PY) -m compileall -q -j 0 -x 'torch/testing/_internal/py312_intrinsics\.py' $(VENV)/lib || \
	  echo "compileall could not compile the files above: those modules compile when imported"
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
