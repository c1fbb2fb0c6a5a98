"""How long ``search-env view``'s page of 10,000 episodes takes to open in headless Chromium (target: under 3 s).

Records: 500 episodes of the noisy oracle (accuracy 0.7) on the built-in world, IG scored with a stand-in
scorer (``AnswerInLastBlock``; 3 random draws, per-document gains, leave-one-out credit), repeated under new ids
to 10,000 (and to 100, for comparison). Opening is timed from navigation to the page's ready mark (data parsed,
rows, plots and the first episode drawn: ``performance.now()`` at that point), median of 3 loads in a fresh page.

    .venv/bin/python benchmarks/bench_view.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from search_env.agents.policy import OraclePolicy, play_episode
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.records import write_records
from search_env.viewer import write_report

CHROMIUM = os.environ.get("SEARCH_ENV_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BUDGET_S = 3.0


class AnswerInLastBlock:
    """A cheap stand-in scorer (the page's size, not the values, is what is timed): 1 if the answer is in the
    context's last documents block, plus a length-based jitter so contexts differ."""

    def score(self, contexts, answers):
        return np.array([float(a in c.rsplit("<search>", 1)[-1]) + 1e-4 * (len(c) % 7)
                         for c, a in zip(contexts, answers)])


def played(n: int) -> list[dict]:
    env = SearchQAEnv(scorer=AnswerInLastBlock(), topk=3, max_turns=4,
                      ig=IGConfig(n_random=3, per_document=True, credit="leave-one-out"))
    oracle = OraclePolicy(env.questions, think=False, accuracy=0.7, seed=0)
    return [play_episode(env, oracle, options={"index": i}) for i in range(n)]


def open_times(browser, page_path: Path, loads: int = 3) -> list[float]:
    times = []
    for _ in range(loads):
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))  # noqa: B023
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        times.append(page.evaluate("window.viewerReadyMs") / 1000)
        if errors:
            raise RuntimeError(f"the page raised: {errors[0]}")
        page.close()
    return times


def main() -> None:
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    base = played(500)
    print(f"played 500 episodes in {time.perf_counter() - start:.1f}s "
          f"({sum(r['n_searches'] for r in base)} searches)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        for n in (100, 10_000):
            records = [dict(base[i % len(base)], id=f"{base[i % len(base)]['id']}#{i}") for i in range(n)]
            jsonl, html = Path(tmp, f"run{n}.jsonl"), Path(tmp, f"run{n}.html")
            write_records(jsonl, records)
            start = time.perf_counter()
            write_report(jsonl, html)
            written = time.perf_counter() - start
            times = open_times(browser, html)
            results[n] = statistics.median(times)
            sizes = f"records {jsonl.stat().st_size / 1e6:.1f} MB, page {html.stat().st_size / 1e6:.1f} MB"
            loads = ", ".join(f"{t:.2f}" for t in times)
            print(f"{n:>6} episodes: {sizes} written in {written:.2f}s; opens in {loads} s (median {results[n]:.2f} s)")
        browser.close()
    print(f"10,000 episodes open in {results[10_000]:.2f} s vs the {BUDGET_S:.0f} s budget: "
          f"{results[10_000] / BUDGET_S:.2f}x of it ({results[10_000] / results[100]:.1f}x the 100-episode page)")


if __name__ == "__main__":
    main()
