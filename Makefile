# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv first.
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m search_env.demo

test: setup
	.venv/bin/python -m pytest -q -n 2 --dist loadfile

bench: setup
	.venv/bin/python benchmarks/bench_retrieval.py
