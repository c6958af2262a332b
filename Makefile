# Two entry points for a fresh machine (see README): `make app` and `make test`.
# Both create .venv and install the project into it first; a second run reuses it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app demo test lint format browser setup clean-venv

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

# The browser test (tests/test_browser.py) drives Debian's chromium; on a fresh machine this
# installs it with apt-get, which needs root.
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser test"; \
		apt-get update && apt-get install -y chromium; }

# Lint and format check (ruff, configured in pyproject.toml); `make format` fixes what it can.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# What CI runs (.ci/run): lint, then the whole test suite.
test: $(STAMP) browser lint
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
