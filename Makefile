# The two commands of the README: `make serve` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
REPO ?= model_repository
DEMO := $(REPO)/demo/manifest.json

.PHONY: serve test export install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing jepa-serve[cpu,export,dev] (first time: about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,export,dev]'
	@touch $(STAMP)

$(DEMO): | $(STAMP)
	@echo ">> exporting the demo model into $(REPO)/demo"
	$(VENV)/bin/jepa-export demo --name demo --out $(REPO)

export: $(STAMP)
	$(VENV)/bin/jepa-export demo --name demo --out $(REPO) --force

serve: $(STAMP) $(DEMO)
	@echo ">> serving on http://$(HOST):$(PORT) (docs: http://$(HOST):$(PORT)/docs)"
	JEPA_MODEL_REPOSITORY=$(REPO) $(VENV)/bin/jepa-serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(REPO) data .pytest_cache

# Index benchmark (issue 8): recall@10 and QPS per index kind on the hard set; writes docs/bench/index.md + .png.
# Not part of `make test`. BENCH_INDEX_SIZES=100000,1000000 adds the 1M run (much longer).
BENCH_INDEX_SIZES ?= 100000
.PHONY: bench-index
bench-index: $(STAMP) $(DEMO)
	$(PY) -m pip install --quiet -e '.[cpu,export,dev,plots]'
	nice -n 10 $(PY) -m loadtests.bench_index --sizes $(BENCH_INDEX_SIZES)
