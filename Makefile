# Two commands do everything on a fresh machine:
#   make demo   set up .venv, then synthetic data -> training -> adaptive inference -> table + plot
#   make test   set up .venv, then run the whole test suite (what CI runs)
# While working: make test-fast leaves out the tests marked slow (whole reports and demos, torchrun runs).
# --dist loadgroup keeps each xdist_group (the torchrun test, the Ray tests and their one local Ray) on one worker.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo video-demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# The CPU wheel of torch first, pinned, so nothing later resolves to the CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# ray: predict/extract --ray and their tests (an extra: the package works without it)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/adaframe demo --out runs/demo

video-demo: $(STAMP)
	$(BIN)/adaframe video-demo --out runs/video-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" tests

bench: $(STAMP)
	$(BIN)/adaframe benchmark

clean:
	rm -rf $(VENV) runs
