"""Helpers for tests that start a retrieval server."""

import contextlib
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def vllm_python():
    """The interpreter of .venv-vllm (``scripts/setup_vllm.sh``); in CI its absence fails, elsewhere it skips."""
    import os
    from pathlib import Path

    import pytest

    python = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        message = f"{python} is missing: run `bash scripts/setup_vllm.sh` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


def vllm_command(model_dir, port: int) -> tuple[dict, list[str]]:
    """The environment variables and argv that start vLLM's OpenAI-compatible server (the README's command, with a
    host and port)."""
    cmd = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--dtype",
           "float32", "--max-model-len", "2048", "--enforce-eager", "--host", "127.0.0.1", "--port", str(port)]
    return {"VLLM_CPU_KVCACHE_SPACE": "1"}, cmd


def start_vllm(model_dir, port: int, timeout: float = 300.0) -> subprocess.Popen:
    """vLLM's OpenAI-compatible server for ``model_dir`` on 127.0.0.1:``port`` (CPU, float32), in its own process
    group; returns once ``/health`` answers. Stop it with :func:`stop_process_group`."""
    import os
    import tempfile

    import requests

    log = tempfile.TemporaryFile()
    variables, cmd = vllm_command(model_dir, port)
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, **variables})
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process)
            log.seek(0)
            raise RuntimeError(f"vLLM did not come up (exit {process.returncode}):\n{log.read().decode()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return process
        except requests.RequestException:
            pass
        time.sleep(1)


@contextlib.contextmanager
def running_vllm(model_dir):
    """A vLLM server for ``model_dir`` on a free port while the block runs; its URL. Skips (fails in CI) without
    .venv-vllm."""
    vllm_python()
    port = free_port()
    process = start_vllm(model_dir, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen) -> None:
    import os
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
