# Quickstart targets. Each sets up everything it needs from this repository's own files.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test check setup clean system-deps corpus

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

## The demo: a real run on the bundled example repository, start to report.
## (As root it first installs bubblewrap, the run sandbox, when missing; without it the demo
## says so and runs unconfined.)
demo: $(STAMP)
	@$(MAKE) --no-print-directory system-deps SYSTEM_DEPS=bwrap:bubblewrap
	$(VENV)/bin/python examples/demo.py

## System packages some tests need (Debian): installs the missing ones when run as root
## (sudo make system-deps); otherwise prints what is missing. Tests that need one skip with a
## reason where it is absent, except under CI=true, where a missing one fails the suite.
SYSTEM_DEPS := systemd-analyze:systemd bwrap:bubblewrap chromium:chromium zsh:zsh fish:fish \
  node:nodejs npm:npm
system-deps:
	@missing=""; for pair in $(SYSTEM_DEPS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "warning: missing system packages:$$missing (run: sudo make system-deps); their tests will skip"; fi

## The test suite (what CI runs).
test: $(STAMP) system-deps
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

## Re-capture the classifier's corpora from the real tools on this machine (python, pytest,
## node/npm, cargo, go, javac/mvn, gcc, git, ...; missing ones are skipped), then print
## precision/recall per id on the held-out split (bench/classify_eval.py).
corpus: $(STAMP)
	$(VENV)/bin/python tests/fixtures/summaries/capture.py
	$(VENV)/bin/python tests/fixtures/corpus/capture.py
	$(VENV)/bin/python bench/classify_eval.py

clean:
	rm -rf $(VENV) build *.egg-info
