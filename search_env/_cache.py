"""Where search_env keeps what it builds once: BM25 indexes, converted models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$SEARCH_ENV_CACHE`` or ``$XDG_CACHE_HOME/search_env`` (``~/.cache/search_env``), created on use."""
    root = os.environ.get("SEARCH_ENV_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "search_env")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
