"""A dataclass of ``arg`` fields as a command line, in the manner of ``tyro.cli``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence


def arg(default, help: str):
    """A field of an ``Args`` dataclass: its default and its ``--help`` text."""
    return dataclasses.field(default=default, metadata={"help": help})


def parse_args(cls, argv: Sequence[str] | None = None, description: str | None = None):
    """A ``cls`` from the command line: ``--field-name value``, and ``--flag`` / ``--no-flag`` for booleans."""
    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(cls):
        name = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default})".replace("%", "%%")  # argparse formats with %
        if f.type in (bool, "bool"):
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            kind = f.type if isinstance(f.type, type) else {"int": int, "float": float}.get(str(f.type).split(" |")[0])
            parser.add_argument(name, type=kind or str, default=f.default, help=help_text)
    return cls(**vars(parser.parse_args(argv)))
