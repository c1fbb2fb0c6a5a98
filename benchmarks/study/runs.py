"""The scripts a study runs as child processes, and their environment."""

from __future__ import annotations

import os
from pathlib import Path

import search_env

GRPO_IG = Path(__file__).resolve().parents[2] / "examples" / "grpo_ig.py"
WARM_START = Path(__file__).resolve().parent / "warm_start.py"


def child_env(threads: int) -> dict:
    """This process's environment for a child run: ``threads`` OpenMP and MKL threads, and the ``search_env`` this
    process imported first on ``PYTHONPATH``, so that the child imports the same one."""
    paths = [str(Path(search_env.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)), "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads)}
