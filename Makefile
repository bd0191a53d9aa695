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

$(DEMO): models/demo/weights/demo.safetensors | $(STAMP)
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

# The demo world model: train the shipped weights in two wall-clock stages (20 + 10 min, 1 torch thread;
# the second stage sees fresh trajectories and a fresh optimiser), then evaluate.
.PHONY: demo-train demo-ablation demo-eval
demo-train: $(STAMP)
	nice -n 10 $(PY) -m models.demo.train --minutes 20 --out reports/demo_stage1.safetensors
	nice -n 10 $(PY) -m models.demo.train --minutes 10 --seed 1 --init reports/demo_stage1.safetensors --out models/demo/weights/demo.safetensors

# short runs of the three objectives for the collapse ablation (reports/ablation/, git-ignored)
demo-ablation: $(STAMP)
	for reg in none vicreg sigreg; do \
		nice -n 10 $(PY) -m models.demo.train --reg $$reg --max-steps 500 --minutes 6 --trajectories 2000 --out reports/ablation/$$reg.safetensors || exit 1; \
	done

demo-eval: $(STAMP)
	@test -f reports/ablation/none.safetensors || $(MAKE) demo-ablation
	nice -n 10 $(PY) -m models.demo.evaluate
