# Two commands set up a fresh machine: `make repro` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# The stage commands in dvc.yaml call `python`; put the venv first so they use it.
RUN := PATH="$(BIN):$$PATH"

.PHONY: venv repro test test-fast paper ui

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Pinned: this machine's pip installs these two from local disk (DEVELOPERS.md).
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

repro: $(STAMP)
	$(RUN) dvc repro

test: $(STAMP)
	$(RUN) python -m pytest -q

test-fast: $(STAMP)
	$(RUN) python -m pytest -q -m "not e2e"

# The seed's and the paper's scale (DESIGN §2a): needs the network and, in practice, a GPU.
paper: $(STAMP)
	$(RUN) dvc exp run -n paper \
		-S 'data.train=mirflickr25k' -S 'data.eval=[set5,set14,bsd100]' \
		-S model.blocks=16 -S model.bicubic_skip=false \
		-S pretrain.steps=100000 -S pretrain.batch_size=16 -S pretrain.crop_size=96 \
		-S train.steps=200000 -S train.batch_size=8 -S train.crop_size=256 \
		-S train.content_loss=vgg54

ui: $(STAMP)
	$(RUN) mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db"
