"""Modules that moved, importable under their old names for one release (with a ``DeprecationWarning``)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED: dict[str, str] = {
    "search_env.numeric": "search_env.wrappers.numeric",
    "search_env.policy": "search_env.agents.policy",
    "search_env.bundled": "search_env.agents.models",
    "search_env.credit": "search_env.training.credit",
    "search_env.distill": "search_env.training.distill",
    "search_env.scorers": "search_env.scoring.transformers_scorer",
    "search_env.server_scorers": "search_env.scoring.servers",
    "search_env.score_format": "search_env.scoring.score_format",
    "search_env.score_cache": "search_env.scoring.cache",
    "search_env.cli": "search_env.commands.cli",
    "search_env.demo": "search_env.commands.demo",
    "search_env.dig": "search_env.info_gain.dig",
    "search_env.commands.dig": "search_env.info_gain.dig",
    "search_env.commands.jsonl": "search_env.data.jsonl",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module it moved to (the same object, so patches reach it)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__spec__.name
        warnings.warn(f"{name} moved to {MOVED[name]}; the old name will be removed", DeprecationWarning,
                      stacklevel=4)
        sys.modules[name] = importlib.import_module(MOVED[name])  # what the import statement hands out


    def get_code(self, name):
        """``python -m OLD`` runs the module it moved to as ``__main__``."""
        warnings.warn(f"{name} moved to {MOVED[name]}; run python -m {MOVED[name]}", DeprecationWarning, stacklevel=2)
        source = f"import runpy\nrunpy.run_module({MOVED[name]!r}, run_name='__main__', alter_sys=True)\n"
        return compile(source, f"<{name}, moved to {MOVED[name]}>", "exec")


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())  # before any finder that might still see the old file


def moved_names(module: str, names: dict[str, str]):
    """A module-level ``__getattr__`` for ``module`` that hands out each of ``names`` (name -> the module it moved
    to) from its new module, with a ``DeprecationWarning``."""

    def __getattr__(name: str):
        if name in names:
            warnings.warn(f"{module}.{name} moved to {names[name]}.{name}; the old name will be removed",
                          DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
