# Two commands on a fresh machine:
#   make demo   install into .venv, then ingest, embed and search real photos (embedded Postgres)
#   make test   install into .venv, then run the test suite (real Postgres, ../shared/data)
PYTHON ?= python3
VENV ?= .venv
# torch first and pinned: an unpinned torch (or torchvision) pulls the newest CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test bench clean label-studio

$(BIN)/visearch: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(BIN)/visearch

demo: install
	$(BIN)/visearch demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,bench]"
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_embedding.py
	$(BIN)/python bench/bench_search.py
	$(BIN)/python bench/bench_worker.py
	$(BIN)/python bench/bench_http.py
	$(BIN)/python bench/bench_console.py
	$(BIN)/python bench/bench_curation.py

# Label Studio in its own virtualenv (.venv-label-studio), pinned in integrations/label-studio-requirements.txt;
# rebuilt only when that file changes. The tests build it on first use too.
label-studio: install
	$(BIN)/python -m visearch.integrations.label_studio.server --install

clean:
	rm -rf $(VENV)
