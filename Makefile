# earthembed: every target creates .venv on first use, so each is the only command a fresh
# machine needs. `make demo` simulates the built-in demo region, embeds it (the main job) and
# shows the result; `make test` runs ruff and the whole test suite (what .ci/run calls).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out
JOBS ?= 2
PRETRAIN_WORK ?= pretrain_work
# glibc's malloc with transparent huge pages for large arrays (beam_jobs/cli.py,
# MALLOC_TUNABLE: `earthembed` sets it for its jobs; here for pytest and scripts too).
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: venv demo test lint format bench pretrain constraints clean templates

# --compile-bytecode: .pyc written once here; where PYTHONDONTWRITEBYTECODE is set (this
# project's build machines) every Python process (test workers, subprocess CLIs, Beam and
# Dask workers) otherwise compiles TF/Beam/JAX from source: 20 s -> 7 s per import.
$(STAMP): setup.py constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$$(grep '^uv==' constraints.txt)"
	$(BIN)/uv pip install --python $(BIN)/python -q --compile-bytecode -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The demo: simulate the demo region (two years), embed both with the shipped model
# (model/weights/tiny), then the analyses on the tiles (similarity, change, clusters, classes,
# a quick look) and one page of their results (demo_out/README.md; scripts/demo.py).
demo: $(STAMP)
	$(BIN)/earthembed simulate --out $(DEMO_OUT)/sim --sim-region demo --years 2023,2024 --seed 0
	$(BIN)/python scripts/demo.py aoi $(DEMO_OUT)/sim $(DEMO_OUT)/aoi.geojson
	for y in 2023 2024; do $(BIN)/earthembed embed --stac $(DEMO_OUT)/sim/catalog.json \
	  --aoi $(DEMO_OUT)/aoi.geojson --year $$y --tile-size 256 --batch-size 2 --out $(DEMO_OUT)/emb/$$y \
	  || exit 1; done
	$(BIN)/python scripts/demo.py show $(DEMO_OUT)/emb/2023 $(DEMO_OUT)/sim 2023 $(DEMO_OUT)/demo.png
	$(BIN)/python scripts/demo.py query $(DEMO_OUT)/sim 2023 water $(DEMO_OUT)/query.csv
	$(BIN)/earthembed similarity --embeddings $(DEMO_OUT)/emb --period 2023 \
	  --query-file $(DEMO_OUT)/query.csv --out $(DEMO_OUT)/similarity
	$(BIN)/earthembed change --embeddings $(DEMO_OUT)/emb --periods 2023,2024 --out $(DEMO_OUT)/change
	$(BIN)/earthembed cluster --embeddings $(DEMO_OUT)/emb --period 2023 --k 6 --out $(DEMO_OUT)/cluster
	$(BIN)/earthembed classify --embeddings $(DEMO_OUT)/emb --period 2023 --method knn \
	  --labels $(DEMO_OUT)/sim/labels/points_2023.parquet --label-column class_name \
	  --out $(DEMO_OUT)/classify
	$(BIN)/earthembed quicklook --embeddings $(DEMO_OUT)/emb --period 2023 --pca \
	  --out $(DEMO_OUT)/quicklook.png
	$(BIN)/python scripts/demo.py report $(DEMO_OUT)

# Tests: one file per worker (module fixtures built once), the long files first in the order
# tests/conftest.py gives (HEAVY_FIRST; not xdist's by-test-count order), slowest 25 listed.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder --durations=25 -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

templates: $(STAMP)
	$(BIN)/hadolint templates/Dockerfile templates/Dockerfile.gpu
	$(BIN)/python -m pytest -q -n 0 tests/templates tests/beam_jobs/test_cloud.py

# The shipped demo model model/weights/tiny (config tiny, seed 0; see scripts/pretrain.sh).
pretrain: $(STAMP)
	WORK=$(PRETRAIN_WORK) bash scripts/pretrain.sh

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

constraints: $(STAMP)
	( echo '# Exact versions known to resolve together (Python 3.11, linux x86_64). Regenerate with `make constraints`.'; \
	  $(BIN)/uv pip freeze --python $(BIN)/python | grep -v -E '^(-e |earthembed|pip==)' ) > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info .pytest_cache .ruff_cache
