# Quickstart targets. Each sets up everything it needs from this repository's own files.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test check setup clean

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

## Lint and strict typing (mypy sees the installed package names through a symlink tree,
## since the card's folders are mapped to autopack.* only at install time).
check: $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test,dev]'
	$(VENV)/bin/ruff check .
	@tmp=$$(mktemp -d) && mkdir $$tmp/autopack && touch $$tmp/autopack/__init__.py && \
	  for d in daemon actors protocol; do ln -s $(CURDIR)/$$d $$tmp/autopack/$$d; done && \
	  (cd $$tmp && $(CURDIR)/$(VENV)/bin/mypy --strict -p autopack --config-file $(CURDIR)/pyproject.toml); \
	  rc=$$?; rm -rf $$tmp; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info
