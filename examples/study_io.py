"""What the example studies (``grpo_ig.py``, ``sb3_ablation.py``) read and write, beside their algorithms: an
``Args`` dataclass as the command line, seeds, seconds per phase, checkpoints, metrics as CSV (and TensorBoard),
and curves as a PNG. They import it from beside themselves (``python examples/<name>.py`` puts ``examples/`` on
``sys.path``). torch, TensorBoard and matplotlib (Agg backend: no display needed) are imported on first use.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np

# ------------------------------------------------------------------------------------------ command line


def arg(default, help: str):
    """A field of an ``Args`` dataclass: its default and its ``--help`` text."""
    return field(default=default, metadata={"help": help})


def parse_args(cls, argv: Sequence[str] | None = None, description: str | None = None):
    """A ``cls`` (a dataclass of ``arg`` fields) from the command line: ``--field-name value``, and
    ``--flag`` / ``--no-flag`` for booleans."""
    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(cls):
        name, help_text = "--" + f.name.replace("_", "-"), f"{f.metadata['help']} (default: {f.default})"
        if f.type in (bool, "bool"):
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
            parser.add_argument(name, type=kind, default=f.default, help=help_text)
    return cls(**vars(parser.parse_args(argv)))


# ------------------------------------------------------------------------- seeds, time and checkpoints


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


def save_checkpoint(root: Path, step: int, model, tokenizer, *, keep: int, **state) -> Path:
    """``root/step_N``: model and tokenizer (Hugging Face format), and ``trainer_state.pt`` with the step, ``state``
    and the RNG states. Written to a temporary folder and renamed, so a checkpoint is complete or absent; the
    last ``keep`` checkpoints are kept."""
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
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def last_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step_*") if (p / "trainer_state.pt").exists())
    return done[-1] if done else None


def load_checkpoint(folder: Path) -> dict:
    """The ``trainer_state.pt`` of a checkpoint; the RNG states it holds are restored."""
    import torch

    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


# ------------------------------------------------------------------------------------------------ metrics


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

    def __init__(self, csv_path: Path, tensorboard_dir: Path | None = None, *, start_step: int = 1, notes: str | None = None):
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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------------------------------------- curves


@dataclass
class Curve:
    """One series of a panel: a line, and a shaded band from ``low`` to ``high`` when they are given."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    band_label: str | None = None

    @classmethod
    def of(cls, rows: Sequence[dict], key: str, label: str, x: str = "step") -> Curve:
        """``key`` against ``x`` over the rows that have it."""
        rows = [r for r in rows if key in r]
        return cls(label, [r[x] for r in rows], [r[key] for r in rows])


@dataclass
class Panel:
    """One plot of a figure. ``stacked``: the curves (on one x) as stacked areas, e.g. seconds per phase."""

    title: str
    curves: list[Curve] = field(default_factory=list)
    xlabel: str = "step"
    ylabel: str | None = None
    stacked: bool = False
    ylim: tuple[float, float] | None = None
    hline: float | None = None  # a dotted grey reference level
    legend_loc: str = "best"


def plot_panels(path: str | Path, panels: Sequence[Panel], *, title: str | None = None,
                panel_size: tuple[float, float] = (5.0, 4.0), dpi: int = 100, fontsize: float | None = None) -> None:
    """Draw ``panels`` side by side into the image file ``path``; an empty panel says "nothing logged"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(panel_size[0] * len(panels), panel_size[1]), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        curves = [c for c in panel.curves if len(c.x)]
        if panel.stacked and curves:
            ax.stackplot(curves[0].x, *[c.y for c in curves], labels=[c.label for c in curves])
        for c in [] if panel.stacked else curves:
            (line,) = ax.plot(c.x, c.y, marker="o" if len(c.x) < 30 else None, label=c.label)
            if c.low is not None and c.high is not None:
                ax.fill_between(c.x, c.low, c.high, color=line.get_color(), alpha=0.2, label=c.band_label)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="grey", ls=":", lw=1)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.set_title(panel.title, fontsize=fontsize)
        ax.set_xlabel(panel.xlabel)
        if panel.ylabel:
            ax.set_ylabel(panel.ylabel)
        if curves:
            ax.legend(loc=panel.legend_loc, fontsize=fontsize and fontsize - 1)
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_training_curves(history: list[dict], path: Path, title: str) -> None:
    """``grpo_ig.py``'s curves: reward, EM, IG and seconds per phase against the step."""
    curve = partial(Curve.of, history)
    seconds = [Curve(p, [r["step"] for r in history], [r.get(f"time/{p}", 0.0) for r in history])
               for p in ("generate", "retrieve", "ig", "logprob", "update", "eval")]
    plot_panels(path, [Panel("reward", [curve("train/reward", "train reward")]),
                       Panel("exact match", [curve("train/em", "train EM"), curve("eval/em", "held-out EM (greedy)")]),
                       Panel("information gain (nats/token)", [curve("ig/mean", "mean IG per search"),
                                                               curve("ig/positive_ratio", "share of IG > 0")]),
                       Panel("seconds per step", seconds, stacked=True, legend_loc="upper left")], title=title)
