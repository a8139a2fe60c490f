# Two entry points for a fresh machine: `make demo` (the main job on the embedded data) and `make test`.
# Each creates .venv on first use with the exact versions of constraints.txt; torch comes first (the CPU build).
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
DEMO    := runs/demo
MODELS  := copy-last nearest-pose worldpack nwm diamond
LOOPNAV := $(BIN)/loopnav

.PHONY: install demo test
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch torchvision
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Generate LoopNav-style ViZDoom loops, evaluate the floors and the shipped models on the test split, rank them.
demo: install
	$(LOOPNAV) prepare --source vizdoom --preset demo --out $(DEMO)/data --workers 2
	$(LOOPNAV) validate $(DEMO)/data
	for model in $(MODELS); do $(LOOPNAV) evaluate --model $$model --data $(DEMO)/data --split test -o $(DEMO)/results || exit 1; done
	$(LOOPNAV) leaderboard --results $(DEMO)/results --plot $(DEMO)/plots

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q
