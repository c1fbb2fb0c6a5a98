"""Errors for bad data files, and the one JSONL reader that raises them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


class DataFileError(ValueError):
    """A data file (or list of records) that cannot be used; says which file, which line and why."""

    def __init__(self, source: str, line: int | None, reason: str):
        self.source, self.line, self.reason = source, line, reason
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


def iter_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """Yield (line number, parsed object) for each non-blank line; bad JSON raises DataFileError."""
    if not path.exists():
        raise DataFileError(str(path), None, "no such file")
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFileError(str(path), line_no, f"not UTF-8 (byte {e.start})") from None
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                what = e.msg.removesuffix(" at")  # "Unterminated string starting at": the column says where
                raise DataFileError(str(path), line_no, f"invalid JSON ({what} at column {e.colno})") from None
