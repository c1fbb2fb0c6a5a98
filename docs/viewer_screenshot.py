"""Make docs/viewer.png, the README's screenshot of ``search-env view``: 16 episodes of the noisy oracle (accuracy
0.7) on the built-in world, IG scored by the bundled SmolLM2-135M (3 random draws, per-document gains,
leave-one-out credit), written as records, rendered, and shot with headless Chromium.

    .venv/bin/python docs/viewer_screenshot.py     # 13-14 minutes on 2 shared CPU cores (load average 8-9)

The shot is reduced to a 256-colour palette when Pillow is installed (it comes with the examples extra).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from search_env.agents.policy import OraclePolicy, play_episode
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.records import write_records
from search_env.viewer import write_report

OUT = Path(__file__).resolve().parent / "viewer.png"


def main() -> None:
    env = SearchQAEnv(scorer="bundled", topk=3, max_turns=4,
                      ig=IGConfig(n_random=3, per_document=True, credit="leave-one-out"))
    oracle = OraclePolicy(env.questions, think=False, accuracy=0.7, seed=0)
    records = [play_episode(env, oracle, seed=i, options={"index": i}) for i in range(16)]  # seeded IG draws
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the page names the file as it was given
        jsonl, html = Path("oracle_bundled_ig.jsonl"), Path(tmp, "report.html")
        write_records(jsonl, records)
        write_report(jsonl, html)
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--hide-scrollbars", f"--screenshot={OUT}",
                        "--window-size=1400,900", html.as_uri()], check=True, capture_output=True, timeout=120)
    shrink(OUT)
    print(f"{OUT}: {OUT.stat().st_size / 1e3:.0f} kB")


def shrink(path: Path) -> None:
    """A 256-colour palette PNG: the page is flat colours and text, so this keeps it sharp at a third the size."""
    try:
        from PIL import Image
    except ImportError:
        return
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


if __name__ == "__main__":
    main()
