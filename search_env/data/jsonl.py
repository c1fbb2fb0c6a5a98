"""The one resumable JSONL output, of ``search-env eval`` and ``search-env dig``: records appended across runs, and
a run resumes a file only if the file's records were made with the run's settings.

Format: the first line is a header, ``{"search_env": KIND, "settings": {...}}``, naming the command that wrote the
file and the settings that made its records (a flat JSON object; each command lists its keys). Every later line is
one record. Records are appended in units (an eval episode; a question's DIG rows), each unit in one write, then
flushed to disk. A header met again further down (two files concatenated) must carry the same settings.

Resuming keeps the complete units and cuts a torn tail (a crash mid-write: a last line without its newline, or a
unit missing rows) back to the end of the last complete unit; a file holding no complete unit is started over. A
file with records written by another command or with other settings, or without a header (an older search-env,
another program), is refused with :class:`ResumeRefused`, which names the settings that differ, and is left as it
is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

HEADER_KEY = "search_env"
HOW_TO_PROCEED = "write to another --output, or delete the file to start over"


class ResumeRefused(ValueError):
    """An existing output was not made with these settings (or cannot be checked), so it is not resumed."""


def is_header(obj: object) -> bool:
    """A line is a header: ``{"search_env": KIND, "settings": {...}}`` and nothing else."""
    return isinstance(obj, dict) and set(obj) == {HEADER_KEY, "settings"} and isinstance(obj["settings"], dict)


def _show(settings: Mapping, key: str) -> str:
    if key not in settings:
        return "(absent)"
    text = json.dumps(settings[key], ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _flat(settings: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_diff(old: Mapping, new: Mapping) -> list[str]:
    """One ``key: old in the file, new now`` line per setting that differs (nested ones as ``outer.inner``)."""
    old, new = _flat(old), _flat(new)
    return [f"{key}: {_show(old, key)} in the file, {_show(new, key)} now"
            for key in sorted(set(old) | set(new)) if old.get(key, ...) != new.get(key, ...)]


def read_units(path: str | os.PathLike, complete: Callable[[list[dict]], bool] | None = None):
    """``(headers, units, good_bytes)`` of a file in this format, without checking or changing it: every header
    met, the complete units of records (``complete(rows)`` says when the rows read since the last unit make one;
    default: every record is a unit) and the length of the file up to the end of the last complete unit.

    Raises:
        ResumeRefused: a record before any header, or a line other than the last that is not JSON.
    """
    path = Path(path)
    complete = complete or (lambda rows: True)
    headers: list[dict] = []
    units: list[list[dict]] = []
    unit: list[dict] = []
    good = offset = 0
    size = path.stat().st_size
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                obj = json.loads(raw) if raw.endswith(b"\n") else None
            except ValueError:
                obj = None
            offset += len(raw)
            if obj is None and offset == size and (headers or raw.startswith(b'{"' + HEADER_KEY.encode())):
                break  # the last line, torn by a crash
            if not headers and not is_header(obj):
                raise ResumeRefused(f"{path} has no settings header (an older search-env, or another program wrote "
                                    f"it), so its records cannot be checked against this run's settings; "
                                    f"{HOW_TO_PROCEED}")
            if obj is None:
                raise ResumeRefused(f"{path}:{number}: not a JSON line, so the file is not resumed; {HOW_TO_PROCEED}")
            if is_header(obj):
                headers.append(obj)
                if not unit:
                    good = offset
                continue
            unit.append(obj)
            if complete(unit):
                units.append(unit)
                unit, good = [], offset
    return headers, units, good


class ResumableJSONL:
    """An output file of ``kind`` records made with ``settings``, resumed if it exists (see the module docstring).

    ``units`` holds what earlier runs wrote; ``with`` opens it for appending (writing the header into a new or
    empty file) and ``append(rows)`` adds one unit.

    Raises:
        ResumeRefused: the file was made by another command or with other settings, or has no header.
    """

    def __init__(self, path: str | os.PathLike, kind: str, settings: Mapping,
                 complete: Callable[[list[dict]], bool] | None = None):
        self.path, self.kind = Path(path), kind
        self.settings = json.loads(json.dumps(dict(settings)))  # as it reads back: tuples become lists
        self.units: list[list[dict]] = []
        self._file = None
        if not self.path.exists():
            return
        headers, self.units, good = read_units(self.path, complete)
        if not self.units:  # a header and at most a torn tail: nothing to keep, so start over
            headers, good = [], 0
        for header in headers:
            if header[HEADER_KEY] != kind:
                raise ResumeRefused(f"{self.path} holds search-env {header[HEADER_KEY]} output, not {kind}; "
                                    f"{HOW_TO_PROCEED}")
            diff = settings_diff(header["settings"], self.settings)
            if diff:
                raise ResumeRefused(f"{self.path} was made with other settings, so it is not resumed: "
                                    f"{'; '.join(diff)}. Rerun with the file's settings, or {HOW_TO_PROCEED}")
        if good != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def __enter__(self) -> ResumableJSONL:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        if self._file.tell() == 0:
            self._write([{HEADER_KEY: self.kind, "settings": self.settings}])
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._file = None

    def append(self, rows: Sequence[dict]) -> None:
        """Add one unit of records in one write, flushed to disk (a crash loses at most this unit)."""
        self._write(rows)

    def _write(self, rows: Sequence[dict]) -> None:
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._file.flush()
        os.fsync(self._file.fileno())
