"""Start vLLM's OpenAI-compatible server for :class:`~search_env.scoring.servers.VLLMScorer`, as the README does.

    with start_vllm("~/models/SmolLM2", python=".venv-vllm/bin/python") as server:
        scorer = VLLMScorer(server.url, "bundled")

The server runs in its own process group on 127.0.0.1 (float32, eager, 2,048-token context, a 1 GiB KV cache on
CPU), so stopping it stops its workers too. vLLM usually lives in a virtualenv of its own (``scripts/setup_vllm.sh``);
``python`` is that interpreter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_env._http import free_port

__all__ = ["LocalVLLM", "start_vllm", "vllm_command"]


def vllm_command(model_dir, port: int, python) -> tuple[dict, list[str]]:
    """The environment variables and argv that start vLLM's server for ``model_dir`` on 127.0.0.1:``port``."""
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--dtype",
           "float32", "--max-model-len", "2048", "--enforce-eager", "--host", "127.0.0.1", "--port", str(port)]
    return {"VLLM_CPU_KVCACHE_SPACE": "1"}, cmd


@dataclass
class LocalVLLM:
    """A started server: its process, URL and log (a temporary file). A context manager that stops it on exit."""

    process: subprocess.Popen
    url: str
    log: Any

    def stop(self) -> None:
        """Kill the server's process group (its workers too, even if the server itself has exited), wait for it and
        close its log."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log.close()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output so far."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def __enter__(self) -> LocalVLLM:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_vllm(model_dir, *, python, port: int | None = None, timeout: float = 300.0) -> LocalVLLM:
    """Start vLLM for ``model_dir`` with the interpreter ``python`` and return once ``/health`` answers.

    Raises ``FileNotFoundError`` if ``python`` is missing, ``OSError`` if ``port`` is taken, and ``RuntimeError``,
    with the end of the server's log, if it exits or is not up within ``timeout`` seconds. The server is stopped
    whenever this does not return it (Ctrl-C included).
    """
    import requests

    python = Path(python).expanduser() if os.sep in str(python) else python
    if shutil.which(str(python)) is None:
        raise FileNotFoundError(f"no Python at {python}: vLLM's interpreter (scripts/setup_vllm.sh makes one)")
    if port is None:
        port = free_port()
    else:
        with socket.socket() as s:  # a server already there would answer /health for this one
            s.bind(("127.0.0.1", port))
    variables, cmd = vllm_command(Path(model_dir).expanduser(), port, python)
    log = tempfile.TemporaryFile()
    server = LocalVLLM(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, **variables}), f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"vLLM did not come up (exit {server.process.returncode}):\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM was not up within {timeout:g} s:\n{server.log_tail()}")
            try:
                if requests.get(f"{server.url}/health", timeout=2).ok and server.process.poll() is None:
                    return server
            except requests.RequestException:
                pass
            time.sleep(1)
    except BaseException:
        server.stop()
        raise
