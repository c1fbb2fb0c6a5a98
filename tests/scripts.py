"""Import the examples and benchmarks (plain scripts, not a package) by path."""

import contextlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def imported(relative_path: str):
    """The script at ``ROOT / relative_path`` as a module, registered in ``sys.modules`` while in use (dataclasses
    look their module up there). Its folder is first on ``sys.path`` while it loads, as when Python runs it (a
    benchmark imports the ``study`` package beside it)."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
    try:
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
        yield module
    finally:
        sys.modules.pop(spec.name, None)
