# The two commands of the README:  `make demo` (set up + the main job)  and  `make test`.
# Both install what is missing into the current Python environment first.
PYTHON ?= python3
TORCH_CPU ?= torch==2.13.0

.PHONY: setup demo test bench-gpu-prep bench-gpu
setup: .setup-stamp

# torch first (a local CPU build here; an installed torch, e.g. a GPU build, is kept), then DeepSpeed
# without build isolation so its build sees that torch instead of fetching CUDA wheels, then us.
.setup-stamp: pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_CPU)"
	$(PYTHON) -c "import deepspeed" 2>/dev/null || $(PYTHON) -m pip install --no-build-isolation "deepspeed>=0.16"
	$(PYTHON) -m pip install -e ".[dev]"
	touch $@

demo: setup
	$(PYTHON) cli.py grid grids/demo.yaml

test: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder

# The device check (see README, "The device check"): prep here, where ../shared exists, then carry .gpu/
# with the tree to a GPU machine and run `make bench-gpu` there (OUT=folder for the figures).
SHARED ?= ../shared
bench-gpu-prep:
	mkdir -p .gpu/data .gpu/tok .gpu/whl
	cp $(SHARED)/tools/gpu-check/whl/*.whl .gpu/whl/
	cp $(SHARED)/data/l2kd-nlg/*-train-v2.0.json $(SHARED)/data/l2kd-nlg/*-test-v2.0.json .gpu/data/
	cp $(SHARED)/data/gpt2-tokenizer/encoder.json $(SHARED)/data/gpt2-tokenizer/vocab.bpe .gpu/tok/
	du -sh .gpu

bench-gpu:
	bash tools/bench-gpu.sh
