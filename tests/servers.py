"""Helpers for tests that start a retrieval or vLLM server."""

import contextlib
import os
import subprocess
import time
from pathlib import Path

from search_env._http import free_port  # noqa: F401
from search_env.scoring.vllm_launch import LocalVLLM, start_vllm, vllm_command  # noqa: F401

VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


def wait_healthy(process: subprocess.Popen, url: str, timeout: float = 60.0) -> None:
    """Poll ``url``/health until it answers; fail with the server's output if it exits first."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stdout.read().decode()
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.1)


def vllm_python() -> Path:
    """The interpreter of .venv-vllm (``scripts/setup_vllm.sh``); in CI its absence fails, elsewhere it skips."""
    import pytest

    if not VLLM_PYTHON.exists():
        message = f"{VLLM_PYTHON} is missing: run `bash scripts/setup_vllm.sh` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return VLLM_PYTHON


@contextlib.contextmanager
def running_vllm(model_dir):
    """A vLLM server for ``model_dir`` on a free port while the block runs; its URL. Skips (fails in CI) without
    .venv-vllm."""
    with start_vllm(model_dir, python=vllm_python()) as server:
        yield server.url
