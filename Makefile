# Two entry points for a fresh machine (see README): `make app` and `make test`.
# Both create .venv and install the project into it first; a second run reuses it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app demo test setup clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch and torchvision first, pinned: a loose torch can pull several GB.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: the app on the shipped default models.
app: $(STAMP)
	$(BIN)/attend app

# The command-line path: caption freshly generated scenes with the default model.
demo: $(STAMP)
	$(BIN)/attend prepare scenes --out data/demo --seed 7 --train 1 --val 1 --test 2 >/dev/null
	$(BIN)/attend caption data/demo/images/test/*.png --beam 3

test: $(STAMP)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
