# Two entry points for a fresh machine: `make demo` (the main job on the embedded data) and `make test`;
# `make` alone says how to use them and the installed CLI.
# Each creates .venv on first use with the exact versions of constraints.txt; torch comes first.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
DEMO    := runs/demo
MODELS  := copy-last nearest-pose worldpack nwm diamond
LOOPNAV := $(BIN)/loopnav

.PHONY: help install demo test
help:
	@echo "make demo   install, generate ViZDoom loops, evaluate 5 models, print the leaderboard"
	@echo "make test   install, run ruff and the test suite"
	@echo "Then put loopnav on your PATH:  . $(BIN)/activate   (or run $(LOOPNAV) directly)"

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
	@echo
	@echo "Next: put loopnav on your PATH with  . $(BIN)/activate  (or run $(LOOPNAV)), then try:"
	@echo "  loopnav inspect $(DEMO)/data --split test --frames $(DEMO)/loop.png"
	@echo "  loopnav evaluate --model worldpack --model-args memory=off --data $(DEMO)/data -o $(DEMO)/results"
	@echo "  loopnav leaderboard --results $(DEMO)/results --metric psnr"

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q
