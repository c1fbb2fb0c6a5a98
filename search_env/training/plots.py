"""Curves of a run or a study as a PNG: panels side by side, each a few lines (with an optional band), or stacked
areas such as seconds per phase. matplotlib (Agg backend: no display needed) is imported on first use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


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
