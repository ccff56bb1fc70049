# Two commands do the whole set-up on a fresh machine: `make demo` and `make test`.
# Both install from requirements/lock.txt (exact versions), so a fresh clone gives the same result every
# day; `make test-latest` tries the newest versions pyproject.toml allows and refreshes the lock when
# the suite passes on them; `make test-oldest` runs the suite on the oldest transformers allowed.
PYTHON ?= python3
VENV ?= .venv
LOCK := requirements/lock.txt
OLDEST := requirements/oldest.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_QUIET ?= -q

.PHONY: demo demo-web browser test test-fast test-latest test-oldest venv clean

venv: $(STAMP)

# install VENV CONSTRAINTS: a venv, torch==2.13.0 first (a CPU machine takes the local CPU build; pip
# never resolves torch by itself, which would pull a multi-GB CUDA build), then the project with its
# dev extras. PIP_CONSTRAINT (not -c) so the pins also hold in the isolated environments that build
# source packages (setuptools for this project and DeepSpeed). CONSTRAINTS empty: the newest releases.
define install
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -c "import torch" 2>/dev/null || $(1)/bin/python -m pip install $(PIP_QUIET) "torch==2.13.0"
	$(if $(2),PIP_CONSTRAINT=$(2)) $(1)/bin/python -m pip install $(PIP_QUIET) $(if $(2),,--upgrade) setuptools -e ".[dev]"
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call install,$(VENV),$(abspath $(LOCK)))
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m llava.demo

# The serving stack on localhost: controller, an unpruned and an agile@64 testbed worker, the web UI on
# http://localhost:7860 (Ctrl-C stops them all). DEMO_WEB_ARGS, e.g. "--port 8000 --token-delay 0.1".
demo-web: $(STAMP)
	$(PY) -m llava.serve.demo_web $(DEMO_WEB_ARGS)

# Debian's chromium and chromedriver for the browser test of the web UI (tests/test_serve.py); nothing
# to do when both are there. Needs root (or sudo) and apt.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  $$SUDO apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

test: $(STAMP) browser
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The newest releases the ranges allow, in a fresh .venv-latest; the lock is rewritten only if the suite
# passes there (then commit requirements/lock.txt). Run it monthly and when a dependency releases.
test-latest: browser
	mkdir -p $(dir $(LOCK))
	rm -rf .venv-latest
	$(call install,.venv-latest,)
	.venv-latest/bin/python -m pytest -q
	.venv-latest/bin/python -m pip freeze --all --exclude-editable | grep -v -E "^(pip|llava)==" \
		| sed -E 's/^torch==2\.13\.0\+cpu$$/torch==2.13.0/' > .venv-latest/freeze.txt
	{ echo "# Exact versions for 'make demo' / 'make test' (Linux x86_64, CPython 3.11). Written by 'make test-latest'"; \
	  echo "# on $$(date -u +%F) after the suite passed on them; do not edit by hand."; \
	  cat .venv-latest/freeze.txt; } > $(LOCK)
	@echo "requirements/lock.txt refreshed; review 'git diff $(LOCK)' and commit it"

# The oldest transformers the ranges allow (5.17.0), everything else as locked there.
test-oldest: browser
	$(call install,.venv-oldest,$(abspath $(OLDEST)))
	.venv-oldest/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest .pytest_cache build *.egg-info
