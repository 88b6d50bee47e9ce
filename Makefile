# medprobe developer targets. PY can point at another interpreter: make test PY=.venv/bin/python
PY ?= python

.PHONY: install demo test test-all lint format bench bench-quick bench-gpu clean

install:            ## install medprobe with test/lint tools (torch pinned: CPU machines get no CUDA)
	$(PY) -m pip install ".[dev]"

demo:               ## the main job on its embedded default (demo histology set, EfficientNet-Lite0)
	$(PY) -m medprobe

test:               ## what CI runs: the default (fast) test selection
	$(PY) -m pytest

test-all:           ## also the slow tests
	$(PY) -m pytest -m "not gpu"

lint:
	$(PY) -m ruff check medprobe tests benchmarks
	$(PY) -m ruff format --check medprobe tests benchmarks
	$(PY) -m mypy medprobe

format:
	$(PY) -m ruff format medprobe tests benchmarks
	$(PY) -m ruff check --fix medprobe tests benchmarks

bench:              ## prints speed / memory ratios measured in one run (never asserted); BENCH_JSON=out.json saves them
	$(PY) benchmarks/run_all.py $(if $(BENCH_JSON),--json $(BENCH_JSON))

bench-quick:        ## the same suite at small sizes (< 1 min; rough ratios, a smoke run)
	$(PY) benchmarks/run_all.py --quick $(if $(BENCH_JSON),--json $(BENCH_JSON))

bench-gpu:          ## only the bf16 IDEFICS block-stack images/s (needs CUDA; not yet run on a GPU: estimated ~1 min)
	$(PY) benchmarks/bench_idefics_gpu.py

clean:
	rm -rf outputs multirun .pytest_cache build *.egg-info
