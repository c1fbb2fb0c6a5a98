"""The one way tests reach the real QA sets in ``../shared/data``.

Outside CI a missing folder skips the test with the reason; in CI (``CI`` set) it fails it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CANDIDATES = [
    os.environ.get("SEARCH_ENV_SHARED_DATA"),
    Path(__file__).resolve().parents[1].parent / "shared" / "data",
]


def shared_data(name: str = "") -> Path:
    """Path of ``../shared/data/<name>``; skips (or fails in CI) when it is not there."""
    for candidate in _CANDIDATES:
        if candidate and Path(candidate, name).exists():
            return Path(candidate, name)
    reason = f"../shared/data/{name} not found (set SEARCH_ENV_SHARED_DATA to its folder)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
