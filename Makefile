# Two commands on a fresh machine (Debian, Python >= 3.11, no GPU):
#   make demo   set up .venv and run the whole workflow on the embedded demo
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The rules call the `cosmopedia` command: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test venv lint clean-results profiles

demo: $(STAMP) profiles
	snakemake --profile profiles/local

test: $(STAMP) profiles
	pytest $(PYTEST_ARGS)

# The quality gates of tests/test_quality.py (also run by `make test`): ruff check and
# ruff format on src tests bench, snakefmt --check and snakemake --lint on the workflow
# (the latter in a scratch working directory, minus the lints the project accepts).
lint: $(STAMP)
	pytest -q tests/test_quality.py

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Snakemake resolves `--profile NAME` in ., ~/.config/snakemake and /etc/xdg/snakemake,
# not in ./profiles: link the project's profiles into ~/.config/snakemake.
profiles:
	@mkdir -p $(HOME)/.config/snakemake
	@for p in profiles/*/; do \
	  n=$$(basename $$p); t=$(HOME)/.config/snakemake/$$n; \
	  if [ -L $$t ] || [ ! -e $$t ]; then ln -sfn $(CURDIR)/profiles/$$n $$t; \
	  else echo "not replacing $$t (not a link)"; fi; \
	done

clean-results:
	rm -rf results .snakemake
