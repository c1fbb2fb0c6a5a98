"""Helpers for tests that start a retrieval server."""

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
