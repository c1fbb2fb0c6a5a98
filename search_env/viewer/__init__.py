"""The trajectory viewer: one self-contained HTML file (styles, script and data inline; nothing fetched) showing
the episodes of a run: each turn's text, query, passages (folded), IG against its random draws, per-document
gains, credit and reward terms; filters by outcome, hops, question type and dialect; sorts by IG or credit; plots of
IG by outcome, IG by turn, searches per episode and, for a training run, its metrics by step.

- :func:`load_run`: the records (:mod:`search_env.records`) of a ``search-env eval`` output, of a training run
  folder (its ``episodes.jsonl`` and ``metrics.csv``) or of any file of records.
- :func:`render_html`: the page, as a string.
- :func:`write_report`: both, to a file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from search_env.data.errors import DataFileError
from search_env.records import read_records

EPISODES_FILE, METRICS_FILE = "episodes.jsonl", "metrics.csv"


@dataclass
class Run:
    """What the viewer shows: ``records``, and a training run's ``metrics`` rows (``metrics.csv``, by step)."""

    name: str
    source: str
    records: list[dict]
    metrics: list[dict] = field(default_factory=list)


def load_run(path: str | os.PathLike) -> Run:
    """The run at ``path``: a training run folder (``episodes.jsonl``, ``metrics.csv``), a ``search-env eval``
    output or any JSONL / JSON list of episode records.

    Raises:
        DataFileError: no such file, a folder without either file, a file without records, or a bad record (the
            file and the line).
    """
    from search_env.training.run import read_csv

    path = Path(path)
    if path.is_dir():
        episodes, metrics = path / EPISODES_FILE, path / METRICS_FILE
        if not episodes.exists() and not metrics.exists():
            raise DataFileError(str(path), None, f"a folder without {EPISODES_FILE} or {METRICS_FILE}: not a training "
                                "run folder (give a file of episode records instead)")
        records = read_records(episodes) if episodes.exists() else []
        rows = read_csv(metrics)
        return Run(path.name, f"training run {path}: {len(records)} logged episodes, {len(rows)} metric rows",
                   records, rows)
    records = read_records(path)
    if not records:
        raise DataFileError(str(path), None, "no episode records in it")
    return Run(path.stem, f"{_kind(path)} {path}", records)


def _kind(path: Path) -> str:
    with open(path, "rb") as f:
        first = f.readline()
    try:
        head = json.loads(first)
    except ValueError:
        return "records"
    return f"search-env {head['search_env']} output" if isinstance(head, dict) and "search_env" in head else "records"


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def page_data(run: Run) -> dict:
    """The JSON the page reads: the records with each passage as ``[index, score, doc_id]`` into one table of
    distinct ``[title, text]`` passages (runs retrieve the same passages again and again), numbers to 6 significant
    digits, without what the page does not show (``schema_version``, ``doc_ids``, ``search_credit``: each search
    turn has its ``credit``); and the metrics as columns and rows."""
    table: dict[tuple[str, str], int] = {}
    records = []
    for record in run.records:
        turns = []
        for turn in record["turns"]:
            turn = {k: v for k, v in turn.items() if k != "doc_ids"}
            if turn.get("passages"):
                turn["passages"] = [[table.setdefault((p["title"], p["text"]), len(table)), p["score"], p["doc_id"]]
                                    for p in turn["passages"]]
            turns.append(turn)
        shown = {k: v for k, v in record.items() if k not in ("schema_version", "search_credit")}
        records.append(_rounded(dict(shown, turns=turns)))
    columns = ["step", *sorted({k for row in run.metrics for k in row} - {"step"})] if run.metrics else []
    metrics = {"columns": columns, "rows": [[_finite(row.get(c)) for c in columns] for row in run.metrics]}
    return {"title": run.name, "source": run.source, "records": records, "passages": [list(k) for k in table],
            "metrics": metrics}


def _rounded(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None  # JSON has no NaN: a missing value


def render_html(run: Run) -> str:
    """The viewer page of ``run``: one HTML file, its style, script and data inline."""
    script, style = _asset("viewer.js"), _asset("viewer.css")
    assert "</script" not in script.lower() and "</style" not in style.lower()
    # "<" escaped everywhere in the JSON, so no text in a record can close the <script> element it sits in
    try:
        data = json.dumps(page_data(run), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or infinity in a key the record format leaves open
        raise DataFileError(run.name, None, "a record holds NaN or infinity, which JSON cannot carry") from None
    data = data.replace("<", "\\u003c")
    page = _asset("viewer.html").replace("/*STYLE*/", style).replace("/*SCRIPT*/", script)
    head, tail = page.split("/*DATA*/")
    return head + data + tail


def write_report(path: str | os.PathLike, output: str | os.PathLike) -> Run:
    """:func:`load_run` ``path`` and write its page to ``output``; returns the run."""
    run = load_run(path)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(render_html(run), encoding="utf-8")
    return run
