"""What a training run keeps in its folder: seconds per phase, metrics per step (CSV, and TensorBoard), and
checkpoints it resumes from exactly (weights, optimizer state, data position, random states). torch and
TensorBoard are imported on first use."""

from __future__ import annotations

import csv
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Timer:
    """Seconds per phase (``with timer("generate"): ...``), summed until ``reset()``; ``phases`` are always
    in ``seconds`` (0 when unused). On a CUDA ``device`` it synchronises, so that time lands where it is spent."""

    def __init__(self, device=None, phases: Sequence[str] = ()):
        self.phases, self.sync = tuple(phases), (lambda: None)
        if getattr(device, "type", device) == "cuda":
            import torch

            self.sync = torch.cuda.synchronize
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float, dict.fromkeys(self.phases, 0.0))

    @contextmanager
    def __call__(self, phase: str):
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.seconds[phase] += time.perf_counter() - start

    def wrap(self, inner, phase: str, *methods: str) -> SimpleNamespace:
        """``inner`` (a retriever, a scorer) reduced to ``methods``, each call timed as ``phase``."""
        return SimpleNamespace(**{name: partial(self.run, phase, getattr(inner, name)) for name in methods})

    def run(self, phase: str, function, *args):
        with self(phase):
            return function(*args)


# ------------------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(root: Path, step: int, model, tokenizer, *, keep_every: int | None = None, **state) -> Path:
    """``root/step_N``: model and tokenizer (Hugging Face format), and ``trainer_state.pt`` with the step, ``state``
    and the random states. Written to a temporary folder and renamed, so a checkpoint is complete or absent. Then
    the earlier checkpoints are removed, but for those of steps that are multiples of ``keep_every``."""
    import torch

    final, tmp = root / f"step_{step:06d}", root / f".step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"step": step, **state, "rng": rng}, tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    for old in root.glob("step_*"):
        if old != final and not (keep_every and int(old.name.removeprefix("step_")) % keep_every == 0):
            shutil.rmtree(old)
    return final


def last_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint of the latest step under ``root``, or None."""
    done = sorted(p for p in root.glob("step_*") if (p / "trainer_state.pt").exists())
    return done[-1] if done else None


def load_checkpoint(folder: Path) -> dict:
    """The ``trainer_state.pt`` of a checkpoint; the random states it holds are restored."""
    import torch

    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


# ---------------------------------------------------------------------------------------------------- metrics


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    """``rows`` as CSV; ``columns`` is the header (default: every key of the rows, in the order first seen)."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """The rows of a CSV of numbers as floats, empty cells left out; ``[]`` when there is no such file."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


class MetricsLog:
    """Metrics per step in ``rows``, all rewritten to ``csv_path`` after each step (columns: ``step``, then the
    others sorted), and to TensorBoard under ``tensorboard_dir`` when given. Starting at ``start_step`` > 1 (a
    resumed run) keeps the rows of earlier steps and drops TensorBoard events from ``start_step`` on; ``notes``
    are written as TensorBoard text."""

    def __init__(self, csv_path: Path, tensorboard_dir: Path | None = None, *, start_step: int = 1,
                 notes: str | None = None):
        self.path, self.writer = csv_path, None
        self.rows = [dict(r, step=int(r["step"])) for r in read_csv(csv_path) if r["step"] < start_step]
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard_dir), purge_step=start_step if start_step > 1 else None)
            if notes:
                self.writer.add_text("args", notes)

    def add(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append({"step": step, **metrics})
        write_csv(self.path, self.rows, ["step", *sorted({k for row in self.rows for k in row} - {"step"})])
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def add_episodes(self, step: int, records: list[dict]) -> None:
        """Sample episodes as TensorBoard text (``episodes/<split>``), one block per episode: question, gold,
        prediction, EM, then each turn's kind, query or answer, IG and advantage (nothing without TensorBoard)."""
        if self.writer is None:
            return
        by_split: dict[str, list[str]] = {}
        for r in records:
            lines = [f"**{r['question']}** gold {r['golden_answers']} predicted {r.get('prediction')!r} EM {r['em']:g}"
                     + (f", advantage {r['advantage']:+.3f}" if "advantage" in r else "")]
            for t, turn in enumerate(r["turns"]):
                what = turn.get("query") or turn.get("invalid_reason") or turn["text"].strip()[-80:]
                extra = "".join(f", {k} {turn[k]:+.3f}" for k in ("ig", "advantage") if turn.get(k) is not None)
                lines.append(f"- turn {t + 1} {turn['action_type']}: `{what}`{extra}")
            by_split.setdefault(r.get("split", "episodes"), []).append("\n".join(lines))
        for split, blocks in by_split.items():
            self.writer.add_text(f"episodes/{split}", "\n\n".join(blocks), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
