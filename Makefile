# trproxy — the two commands on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-fast bench soak fuzz demo lint clean

setup:
	bash scripts/setup.sh

test: setup
	bash scripts/test.sh $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -m "not slow and not root" -q $(PYTEST_ARGS)

bench: setup
	BENCH=1 bash scripts/setup.sh
	$(PY) -m benchmarks $(BENCH_ARGS)

# load and soak of `trproxy record` (real redis-server; SOAK_SECONDS=20 for a smoke run)
soak: setup
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

# coverage-guided fuzzing of every codec (atheris); make fuzz TARGET=redis_codec RUNS=100000
TARGET ?=
RUNS ?= 1000000
fuzz: setup
	$(PY) -c 'import atheris' 2>/dev/null || $(VENV)/bin/pip install -q -e '.[fuzz]'
	$(PY) scripts/fuzz.py --runs $(RUNS) $(if $(TARGET),--target $(TARGET)) $(FUZZ_ARGS)

demo: setup
	bash examples/demo.sh

lint: setup
	$(VENV)/bin/ruff check trproxy tests benchmarks examples scripts
	$(VENV)/bin/mypy trproxy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
