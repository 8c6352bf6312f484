# The Lens companion. Two commands do all setup on a fresh machine:
#   make book   executes every chapter on its CPU defaults and builds the HTML book in _build/html
#   make test   runs the unit tests and executes every chapter
# GPU/cluster users: make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
BOOK_ROOT  ?= .
PYTEST_ARGS ?=

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.lens-installed

.PHONY: install system-deps book book-build test lint course clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch pulled in by another package would be a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lens)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

book: install book-build

# A failing cell fails the build: nb_execution_raise_on_error in _config.yml, warnings are errors (-W).
book-build:
	$(VENV)/bin/jupyter-book build $(BOOK_ROOT) -W -n --keep-going
	@echo "Book built: $(abspath $(BOOK_ROOT))/_build/html/index.html"

# System packages the tests drive for real (Debian's chromium for the browser test); needs root or sudo.
system-deps:
	bash .ci/system-deps.sh

# Lint and format check first (seconds): style is part of the test, as in CI.
test: install system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

course: install
	$(PY) -m lenslib.course --out _course

clean:
	rm -rf _build _course .pytest_cache
