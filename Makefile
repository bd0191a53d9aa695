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

test: $(STAMP) deploy-tools
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(REPO) data .pytest_cache

# Tools of the deployment tests (docker-compose, promtool, nginx, hadolint): installed if missing, quick when
# present, never fatal; a test whose tool is still missing skips and says why. See deploy/install-test-tools.sh.
.PHONY: deploy-tools
deploy-tools: $(STAMP)
	@bash deploy/install-test-tools.sh $(VENV)
