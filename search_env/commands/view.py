"""``search-env view RUN -o report.html``: the trajectory viewer (:mod:`search_env.viewer`) as a command."""

from __future__ import annotations

import argparse
from pathlib import Path

from search_env.commands.args import CLIError


def add_parser(commands) -> None:
    """Register ``view`` among the CLI's subcommands."""
    view = commands.add_parser(
        "view", help="write one self-contained HTML page showing a run's episodes (eval output, a training run)",
        description="Write one HTML file (no network needed to open it) that shows each episode of RUN: its turns, "
        "queries, passages, IG against its random draws, credit and reward terms, with filters, sorts and plots. RUN "
        "is a `search-env eval --output` file, a training run folder (grpo_ig.py's episodes.jsonl and metrics.csv) or "
        "any JSONL / JSON list of episode records (search_env.records).",
    )
    view.add_argument("run", metavar="RUN", help="eval output JSONL, training run folder, or file of episode records")
    view.add_argument("-o", "--output", default="report.html", help="the HTML file to write")
    view.set_defaults(handler=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    from search_env.viewer import write_report

    if not Path(args.run).exists():
        raise CLIError(f"{args.run}: no such file or folder")
    if Path(args.output).is_dir():
        raise CLIError(f"-o {args.output}: is a directory, expected the HTML file to write")
    run = write_report(args.run, args.output)
    print(f"{args.output}: {len(run.records)} episodes" + (f", {len(run.metrics)} metric rows" if run.metrics else "")
          + f" from {args.run}")
    return 0
