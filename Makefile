# Fresh machine: `make demo` or `make test` creates .venv, installs the pinned torch + torchvision pair
# first (torchvision, and timm through it, only import beside their matching torch; a bare `torch`
# requirement would pull whatever is newest), then this project with its dev extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test fuzz bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fxlaws demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Random architectures (tests/test_fuzz.py): FXLAWS_FUZZ_EXAMPLES models through annotate + soundness,
# an eighth of them through completeness; `make test` runs a fixed sample of 400 + 40.
FXLAWS_FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	FXLAWS_FUZZ_EXAMPLES=$(FXLAWS_FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics

bench: $(STAMP)
	$(BIN)/python benchmarks/annotate_speed.py
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf $(VENV) build *.egg-info
