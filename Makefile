# The two commands of the README: `make serve` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# GPU=1: the CUDA build of ONNX Runtime (gpu extra) instead of the CPU one, and serving on CUDA (docs/gpu.md).
GPU ?=
RUNTIME_EXTRA := $(if $(GPU),gpu,cpu)
ORT_GPU := onnxruntime-gpu>=1.31,<1.32
STAMP := $(VENV)/.installed$(if $(GPU),-gpu)
HOST ?= 127.0.0.1
PORT ?= 8000
REPO ?= model_repository
DEMO := $(REPO)/demo/manifest.json

.PHONY: serve test export install clean bench

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@echo ">> creating $(VENV) and installing jepa-serve[$(RUNTIME_EXTRA),export,dev,milvus] (first time: about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# onnxruntime and onnxruntime-gpu install the same package: only one of them may be in the venv
	$(PY) -m pip uninstall --quiet -y $(if $(GPU),onnxruntime,onnxruntime-gpu) 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[$(RUNTIME_EXTRA),export,dev,milvus]' -e clients/python
	$(if $(GPU),$(PY) -m pip install --quiet --force-reinstall --no-deps '$(ORT_GPU)')
	@touch $(STAMP)

# Re-exported when the weights, the exporter or the manifest contract change (a newer exporter writes manifest
# fields, e.g. the surprise calibration, that an older entry lacks).
$(DEMO): models/demo/weights/demo.safetensors $(wildcard export/*.py contract/*.py) | $(STAMP)
	@echo ">> exporting the demo model into $(REPO)/demo"
	$(VENV)/bin/jepa-export demo --name demo --out $(REPO) --force

export: $(STAMP)
	$(VENV)/bin/jepa-export demo --name demo --out $(REPO) --force

serve: $(STAMP) $(DEMO)
	@echo ">> serving on http://$(HOST):$(PORT) (docs: http://$(HOST):$(PORT)/docs)"
	JEPA_MODEL_REPOSITORY=$(REPO) $(if $(GPU),JEPA_PROVIDERS=cuda) $(VENV)/bin/jepa-serve --host $(HOST) --port $(PORT)

test: $(STAMP) deploy-tools bench-host-tools
	$(PY) -m pytest

# ruff with the rules and limits in pyproject.toml ([tool.ruff]); installed into the venv if missing (it is in the
# dev extra, so `make install` brings it; a venv made before it was added gets it here).
.PHONY: lint
lint: $(STAMP)
	@$(VENV)/bin/ruff --version >/dev/null 2>&1 || $(PY) -m pip install --quiet 'ruff>=0.17,<0.18'
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(REPO) data .pytest_cache

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[cpu,export,dev,milvus,bench]'
	@touch $(BENCH_STAMP)

# Figures for docs/bench/serving.md (minutes; not part of make test).
bench: $(BENCH_STAMP) soak
	$(PY) -m loadtests.bench_serving $(BENCH_ARGS)

# docs/bench/gpu.md on a GPU machine: PyTorch eager, the raw engine, the served path in process and HTTP, for ViT-S/16,
# ViT-L/16 and a V-JEPA 2 ViT-L clip encoder (minutes). Dry run on any machine:
#   make bench-gpu BENCH_GPU_ARGS="--device cpu --models tiny,vjepa2-tiny --out /tmp/b"
# Then docs/bench/gpu_search.md: exact search of 1M x 384 on the GPU (dry run: BENCH_GPU_SEARCH_ARGS="--device cpu
# --points 5000 --dim 32 --out /tmp/b").
.PHONY: bench-gpu bench-attention
bench-gpu: $(STAMP)
	$(PY) -m loadtests.bench_gpu $(BENCH_GPU_ARGS)
	$(PY) -m loadtests.bench_gpu_search $(BENCH_GPU_SEARCH_ARGS)

# Fused attention vs the unfused graph on this CPU, ViT-S/16 at batch 1 and the best batch (a quiet machine, minutes)
bench-attention: $(STAMP)
	$(PY) -m loadtests.bench_attention $(BENCH_ATTENTION_ARGS)

# docs/bench/host.md + host.json (issue 27): the host path on this machine's cores, each server confined to 1 and 2
# cores by a cpuset cgroup (root; taskset otherwise, and the report says so), wrk on the other cores: jepa-serve
# and a naive uvicorn --workers N app over HTTP, the decode ceiling, ViT-S/16 against its in-process ceiling.
# About 20 minutes with the defaults on 2 cores; run it on a quiet machine. Options: python -m loadtests.bench_host -h
#   quick look:  make bench-host BENCH_HOST_ARGS="--rows 224x8 --repeats 1 --seconds 3 --out /tmp/host"
#   after a change, beside the committed figures:
#                make bench-host BENCH_HOST_ARGS="--server-env JEPA_WORKERS=2 --baseline docs/bench/host.json --out /tmp/host"
BENCH_HOST_ARGS ?=
.PHONY: bench-host bench-host-tools
bench-host-tools:
	@bash loadtests/wrk/install-wrk.sh

bench-host: $(STAMP) bench-host-tools
	$(PY) -m loadtests.bench_host $(BENCH_HOST_ARGS)

# Load tests (Locust, run as a subprocess; report in reports/loadtest-<shape>-<time>/). Without LOAD_HOST the
# runner starts its own server on a free port. Examples (all flags: .venv/bin/python -m loadtests.run --help):
#   make loadtest LOAD_SHAPE=step LOAD_ARGS="--steps 10,20,30,40,60,80 --step-seconds 30"
#   make loadtest LOAD_SHAPE=spike LOAD_ARGS="--server-env JEPA_MAX_QUEUE_SIZE=64 --max-failure-ratio 0"
#   make loadtest LOAD_HOST=http://localhost:8080 LOAD_ARGS="-u 20 -t 120 --max-p95-ms 500 --max-failure-ratio 0.01"
LOAD_SHAPE ?= constant
LOAD_HOST ?=
LOAD_ARGS ?=
LOAD_STAMP := $(VENV)/.installed-load

.PHONY: loadtest

$(LOAD_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e '.[load]'
	@touch $(LOAD_STAMP)

loadtest: $(LOAD_STAMP) $(if $(LOAD_HOST),,$(DEMO))
	$(PY) -m loadtests.run --shape $(LOAD_SHAPE) $(if $(LOAD_HOST),--host $(LOAD_HOST)) $(LOAD_ARGS)

# Tools of the deployment tests (docker-compose, promtool, nginx, hadolint) and of the docs browser test (chromium): installed if missing, quick when
# present, never fatal; a test whose tool is still missing skips and says why. See deploy/install-test-tools.sh.
.PHONY: deploy-tools
deploy-tools: $(STAMP)
	@bash deploy/install-test-tools.sh $(VENV)

# docs/reliability.md: the fault and hostile-input tests, run once more with their figures recorded (minutes).
.PHONY: reliability
reliability: $(STAMP) deploy-tools
	$(PY) -m loadtests.reliability

# Index benchmark: recall@10 and QPS per index kind on the hard set (and on demo-encoder embeddings of
# demo-world clips); writes docs/bench/index.md + .png, then its Milvus section (100k hard set on milvus-lite,
# loadtests/bench_milvus.py, which can also be run alone). Not part of `make test`.
# BENCH_INDEX_SIZES=100000,1000000 adds the 1M run (about 40-60 minutes on 2 shared cores).
BENCH_INDEX_SIZES ?= 100000
.PHONY: bench-index
bench-index: $(STAMP) $(DEMO)
	$(PY) -m pip install --quiet -e '.[cpu,export,dev,milvus,plots]'
	nice -n 10 $(PY) -m loadtests.bench_index --sizes $(BENCH_INDEX_SIZES)
	nice -n 10 $(PY) -m loadtests.bench_milvus --size 100000

# The demo world model: train the shipped weights for a fixed number of steps (1 torch thread), so the
# result does not depend on the machine's load: DEMO_TRAIN_STEPS of encoder + predictor (where the cosine LR schedule
# ends), then DEMO_PREDICTOR_STEPS of the predictor alone on the frozen encoder's states.
DEMO_TRAIN_STEPS ?= 3000
DEMO_PREDICTOR_STEPS ?= 2000
DEMO_ABLATION_STEPS ?= 600
.PHONY: demo-train demo-ablation demo-eval demo-eval-surprise demo-eval-probe
demo-train: $(STAMP)
	nice -n 10 $(PY) -m models.demo.train --max-steps $(DEMO_TRAIN_STEPS) --predictor-steps $(DEMO_PREDICTOR_STEPS) --out models/demo/weights/demo.safetensors

# short runs of the three objectives for the collapse ablation (reports/ablation/, git-ignored): the same
# number of steps, data and schedule for each row
demo-ablation: $(STAMP)
	for reg in none vicreg sigreg; do \
		nice -n 10 $(PY) -m models.demo.train --reg $$reg --max-steps $(DEMO_ABLATION_STEPS) --predictor-steps 0 --trajectories 2000 --out reports/ablation/$$reg.safetensors || exit 1; \
	done

demo-eval: $(STAMP)
	@test -f reports/ablation/none.safetensors || $(MAKE) demo-ablation
	nice -n 10 $(PY) -m evaluation

# one section of docs/demo_world.md measured again (about a minute each), the others left as they are
demo-eval-surprise: $(STAMP)
	nice -n 10 $(PY) -m evaluation --only surprise

demo-eval-probe: $(STAMP)
	nice -n 10 $(PY) -m evaluation --only probe_heads

# Soak: steady mixed load for SOAK_SECONDS; fails if the server's RSS or open file descriptors keep growing.
SOAK_SECONDS ?= 300
.PHONY: soak
soak: $(LOAD_STAMP) $(DEMO)
	$(PY) -m loadtests.run --shape soak -u 30 -t $(SOAK_SECONDS) --out reports/soak --max-failure-ratio 0 \
		--max-rss-growth-mb 64 --max-fd-growth 32

# The deployment built and run for real (issue 18): builds the image, brings the compose stack up on loopback
# ports, probes it and tears it down; installs docker.io / docker-compose / mmdebstrap and starts its own dockerd
# when missing. Offline by default (base images from Debian packages, a local wheelhouse). Report:
# build/smoke/report.md (copy it into docs/deploy.md). Not part of `make test`; run it when the Dockerfile or
# docker-compose.yml changes. Steps: make docker-smoke SMOKE_STEPS="up probe down".
SMOKE_STEPS ?=
.PHONY: docker-smoke
docker-smoke:
	bash deploy/smoke.sh $(SMOKE_STEPS)
