# Quickstart targets. Each sets up everything it needs from this repository's own files.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

## The demo: a real run on the bundled example repository, start to report.
demo: $(STAMP)
	$(VENV)/bin/python examples/demo.py

## The test suite (what CI runs).
test: $(STAMP)
	@command -v systemd-analyze >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq systemd >/dev/null) || echo "warning: systemd-analyze missing; unit-file tests will skip"; }
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
