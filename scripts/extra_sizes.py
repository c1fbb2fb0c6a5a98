"""What each optional extra of search_env (as pyproject.toml beside this folder declares them) adds to an installed
virtualenv: the distributions its requirements pull in (transitively) beyond the base install's, and their installed
size (the files pip recorded). Run it with the virtualenv's Python, where every extra is installed (``make setup``
installs them all; Python >= 3.11, for tomllib):

    .venv/bin/python scripts/extra_sizes.py
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement


def closure(requirements: list[str], extra: str | None = None) -> set[str]:
    """The installed distributions ``requirements`` pull in, with their own requirements (markers evaluated)."""
    seen: set[str] = set()
    todo = [(r, extra) for r in requirements]
    while todo:
        raw, active = todo.pop()
        req = Requirement(raw)
        if req.marker and not req.marker.evaluate({"extra": active or ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [(r, None) for r in dist.requires or [] if "extra ==" not in r]
        todo += [(r, e) for e in req.extras for r in dist.requires or [] if f'extra == "{e}"' in r]
    return seen


def size_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        for f in metadata.distribution(name).files or []:
            path = f.locate()
            total += path.stat().st_size if path.is_file() else 0
    return total / 1e6


def main() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    base = closure(project["dependencies"])
    print(f"base: {len(base)} distributions, {size_mb(base):.0f} MB (torch {size_mb({'torch'}):.0f} MB)")
    for extra, reqs in project["optional-dependencies"].items():
        added = closure(reqs, extra) - base
        top = sorted(added, key=lambda n: -size_mb({n}))[:3]
        print(f"{extra}: +{len(added)} distributions, +{size_mb(added):.0f} MB (largest: "
              + ", ".join(f"{n} {size_mb({n}):.0f}" for n in top) + ")")


if __name__ == "__main__":
    main()
