# Two entry points for a fresh machine: `make demo` (the main job on the embedded data) and `make test`.
# Each creates .venv on first use. torch comes first, pinned to the CPU build; constraints.txt keeps it there.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := runs/demo

.PHONY: install demo test bench
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0 torchvision==0.28.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/loopnav prepare --source vizdoom --preset demo --out $(DEMO)/data --workers 2
	$(BIN)/loopnav validate $(DEMO)/data

test: install
	$(BIN)/python -m pytest -q
