# trproxy — the two commands on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-fast bench demo lint clean

setup:
	bash scripts/setup.sh

test: setup
	bash scripts/test.sh $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -m "not slow and not root" -q $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)

demo: setup
	bash examples/demo.sh

lint: setup
	$(VENV)/bin/ruff check trproxy tests benchmarks examples
	$(VENV)/bin/mypy trproxy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
