"""``search-env eval --compare``: a table of finished eval runs, each against the first over the questions both ran.

A run is an eval output (or any file of episode records, :mod:`search_env.records`); a question is its
``(dataset, id)``. Each run's row gives its own EM, F1, answer rate and searches per episode over all its records;
for every run after the first, the difference in EM and F1 from the first over the questions they share, with a
paired bootstrap interval (the shared questions resampled with replacement, the same draws for EM and F1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from search_env.commands.args import CLIError

RESAMPLES = 10_000
LEVEL = 0.95


def paired_interval(differences: Sequence[float] | np.ndarray, *, seed: int = 0, resamples: int = RESAMPLES,
                    level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)`` of paired ``differences`` (one per question, or one row per question of several
    metrics): their mean and the central ``level`` percentile interval of the mean over ``resamples`` bootstrap
    resamples of the questions, drawn with ``np.random.default_rng(seed)``. For a 2-D array, each is per column."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        raise ValueError("paired_interval needs at least one difference")
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // len(d))  # resamples drawn at a time: bounded memory for large runs
    means = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, len(d), size=(min(chunk, resamples - start), len(d)))
        means.append(d[idx].mean(axis=1))
    low, high = np.quantile(np.concatenate(means), [(1 - level) / 2, (1 + level) / 2], axis=0)
    return d.mean(axis=0), low, high


def _summary(records: Sequence[Mapping]) -> dict[str, float]:
    n = len(records)
    return {"n": n, "em": sum(r["em"] for r in records) / n, "f1": sum(r["f1"] for r in records) / n,
            "answered": sum(r["prediction"] is not None for r in records) / n,
            "searches": sum(r["n_searches"] for r in records) / n}


def compare_runs(paths: Sequence[str], *, seed: int = 0, resamples: int = RESAMPLES) -> str:
    """The comparison table of the runs in ``paths`` (the first is the reference), as text.

    Raises:
        CLIError: fewer than two runs, a run without records, or a run that shares no question with the first.
        DataFileError: a file that is not episode records (naming the line).
    """
    from search_env.records import read_records

    if len(paths) < 2:
        raise CLIError(f"--compare needs at least two runs, got {len(paths)}")
    runs = []
    for path in paths:
        records = {(r.get("dataset"), r["id"]): r for r in read_records(path)}
        if not records:
            raise CLIError(f"{path}: no episode records to compare")
        runs.append(records)
    first = runs[0]
    width = max(len("run"), *(len(str(p)) for p in paths))
    percent = f"{LEVEL:.0%}"
    lines = [f"{'run':<{width}} {'n':>6} {'EM':>6} {'F1':>6} {'answered':>8} {'searches':>8}  "
             f"{'EM - first [' + percent + ']':>24} {'F1 - first [' + percent + ']':>24} {'n paired':>8}"]
    for k, (path, run) in enumerate(zip(paths, runs)):
        s = _summary(list(run.values()))
        row = (f"{str(path):<{width}} {s['n']:>6} {s['em']:>6.3f} {s['f1']:>6.3f} {s['answered']:>8.3f} "
               f"{s['searches']:>8.2f}  ")
        if k == 0:
            lines.append(row + f"{'(reference)':>24}")
            continue
        shared = [key for key in first if key in run]
        if not shared:
            raise CLIError(f"{path} shares no questions (dataset, id) with {paths[0]}: there is nothing to pair")
        diffs = [[run[q]["em"] - first[q]["em"], run[q]["f1"] - first[q]["f1"]] for q in shared]
        mean, low, high = paired_interval(diffs, seed=seed, resamples=resamples)
        cells = [f"{mean[j]:+.3f} [{low[j]:+.3f}, {high[j]:+.3f}]" for j in range(2)]
        lines.append(row + f"{cells[0]:>24} {cells[1]:>24} {len(shared):>8}")
    lines.append(f"differences from {paths[0]} over the questions both ran (n paired), with {percent} paired "
                 f"bootstrap intervals ({resamples:,} resamples, seed {seed}); each run's own columns over all its "
                 "records")
    return "\n".join(lines)
