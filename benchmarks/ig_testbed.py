"""Does IG credit help GRPO train a small LM search agent? The CPU testbed study, in one command.

    .venv/bin/python benchmarks/ig_testbed.py                       # the whole study, see the sizing below
    .venv/bin/python benchmarks/ig_testbed.py --seeds 2 --total-steps 2 --eval-every 1 --tiny   # a smoke run

1. Warm start (``benchmarks/study/warm_start.py``, cached under ``~/.cache/search_env/testbed``): a word-level tokenizer
   and a ~1.6M-parameter Llama-style model built for the built-in world, SFT on noisy-teacher trajectories
   (right next query with probability 0.5) plus in-context copying, so it writes the tags and reads (own-IG
   validity 0.94 vs 0.50 before) but does not know which query is right (held-out greedy EM ~0.02).
2. GRPO (``examples/grpo_ig.py``) from that model on the world's 2- and 3-hop questions, two arms with the same
   budget, seeds and questions: **outcome** (``--ig-weight 0``) and **outcome + IG** (IG scored by the policy
   itself on its own input, added to the search-query tokens' advantages). Greedy held-out EM, answer rate,
   searches per episode and truncation rate at every evaluation; per step the share of groups whose rollouts all
   failed (where only IG gives a gradient). Runs go to ``--output-dir/runs/<arm>_s<seed>``; a finished run is
   kept, an unfinished one resumed, so rerunning the command only aggregates. ``--arms`` picks other arms:
   ``hindsight`` and ``sibling`` add SD-Search's and OFSD's self-distillation losses (``--distill``) to outcome-only
   GRPO; every arm is compared with the first listed.
3. Aggregate: a table (mean ± sd over seeds per arm: final held-out EM, steps to a held-out EM threshold, answer,
   truncation and all-failed rates), ``ig_testbed.png`` (curves, mean ± sd), ``results.json`` / ``results.md``, and
   on the last line the ratio IG / outcome of steps to the threshold and of final EM (with a bootstrap interval
   over seeds). The threshold, fixed before any run: the warm-started model's held-out EM + 0.10.

Sizing, measured on this machine (2 CPU cores, otherwise idle; two runs in parallel, one torch thread each, as
``--jobs 2 --threads 1`` do), with 8 questions x 4 rollouts = 32 episodes a step and 64 held-out questions:

- a GRPO step: outcome arm 5.5-6.4 s, IG arm 7.1-8.1 s (IG scoring ~2.2 s of it); an evaluation ~3.5 s; a run's
  start ~10 s. The warm-started model answers after ~2.2 searches; if RL makes episodes longer, steps get slower.
- per run at 100 steps, evaluating every 10: outcome ~6.0x100 + 3.5x10 + 10 = ~650 s, IG ~7.8x100 + 36 + 10 = ~830 s.
- the study: 5 seeds x (650 + 830) s on 2 workers = ~3,700 s, plus at most one IG run alone at the end (~400 s):
  **~68 minutes**. The warm start, when not cached, adds ~17 minutes (SFT 1,020 s measured): ~86 minutes cold.
  Other work on the machine slows all of it (two torch threads on a busy 2-core machine run up to 20x slower, which
  is why every process here uses one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from search_env.training.plots import Curve, Panel, plot_panels
from search_env.training.run import read_csv
from study.runs import GRPO_IG, WARM_START, child_env

# The env as both the warm start and GRPO see it (the warm-started model only knows this setting).
ENV_FLAGS = ["--hops", "2,3", "--topk", "3", "--max-turns", "4", "--no-few-shot", "--max-new-tokens", "12"]
# arm -> (--ig-weight, extra grpo_ig.py flags); None: the --ig-weight option. The study fixed before its runs is
# outcome vs ig; the self-distillation arms add SD-Search's or OFSD's loss to outcome-only GRPO.
ARMS = {"outcome": (0.0, []), "ig": (None, []), "hindsight": (0.0, ["--distill", "hindsight"]),
        "sibling": (0.0, ["--distill", "sibling"])}
# A tiny model and warm start, for smoke tests.
TINY_WARM = ["--max-questions", "16", "--episodes-per-question", "1", "--epochs", "1", "--ig-questions", "4",
             "--hidden-size", "32", "--layers", "1", "--intermediate-size", "64"]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="runs/ig_testbed", help="where runs, table and curves go")
    p.add_argument("--seeds", type=int, default=5, help="seeds per arm (1..N)")
    p.add_argument("--total-steps", type=int, default=100, help="GRPO steps per run")
    p.add_argument("--eval-every", type=int, default=10, help="held-out evaluation every N steps")
    p.add_argument("--eval-questions", type=int, default=64, help="held-out questions per evaluation")
    p.add_argument("--questions-per-step", type=int, default=8, help="questions per GRPO step")
    p.add_argument("--group-size", type=int, default=4, help="rollouts per question")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="GRPO learning rate (both arms)")
    p.add_argument("--kl-coef", type=float, default=0.001, help="KL to the warm-started model (both arms)")
    p.add_argument("--ig-weight", type=float, default=0.3, help="lambda of the IG arm")
    p.add_argument("--threshold", type=float, default=None, help="held-out EM to reach (default: warm start's + 0.10)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (more can be far slower on a shared machine)")
    p.add_argument("--arms", nargs="+", default=["outcome", "ig"], choices=list(ARMS),
                   help="arms to run; the first is the baseline every other arm is compared with")
    p.add_argument("--tiny", action="store_true", help="a tiny model and warm start (smoke tests)")
    p.add_argument("--warm-args", default="", help="extra benchmarks/study/warm_start.py flags, space-separated")
    p.add_argument("--grpo-args", default="", help="extra examples/grpo_ig.py flags for both arms, space-separated")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ runs


def warm_start(args) -> tuple[Path, dict]:
    """The warm-started model's folder (built, or found in the cache) and its report."""
    cmd = [sys.executable, str(WARM_START), *ENV_FLAGS, "--eval-questions", str(args.eval_questions),
           "--threads", str(args.threads), *(TINY_WARM if args.tiny else []), *args.warm_args.split()]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads))
    if out.returncode:
        raise SystemExit(f"warm start failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    print(out.stdout.rstrip(), f"\n[warm start: {time.perf_counter() - start:.0f}s]", flush=True)
    folder = Path(out.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    return folder, json.loads((folder / "warm_start.json").read_text())


def grpo_command(args, folder: Path, arm: str, seed: int, runs: Path) -> list[str]:
    weight, flags = ARMS[arm]
    weight = args.ig_weight if weight is None else weight
    return [sys.executable, str(GRPO_IG), "--model", str(folder), *ENV_FLAGS,
            "--total-steps", str(args.total_steps), "--eval-every", str(args.eval_every),
            "--eval-questions", str(args.eval_questions), "--questions-per-step", str(args.questions_per_step),
            "--group-size", str(args.group_size), "--learning-rate", str(args.learning_rate),
            "--kl-coef", str(args.kl_coef), "--ig-weight", str(weight), "--seed", str(seed), "--device", "cpu",
            "--precision", "fp32", "--no-tensorboard", "--output-dir", str(runs),
            "--run-name", f"{arm}_s{seed}", *flags, *args.grpo_args.split()]


def run_one(args, folder: Path, arm: str, seed: int, runs: Path) -> str:
    """One GRPO run; a finished one is kept, an interrupted one resumed from its last checkpoint."""
    run_dir = runs / f"{arm}_s{seed}"
    rows = read_csv(run_dir / "metrics.csv")
    if rows and rows[-1]["step"] >= args.total_steps and "eval/em" in rows[-1]:
        return f"{run_dir.name}: done before"
    cmd = grpo_command(args, folder, arm, seed, runs) + (["--resume"] if (run_dir / "checkpoints").exists() else [])
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "stdout.log", "a") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(args.threads)).returncode
    if code:
        raise RuntimeError(f"{run_dir.name} failed (exit {code}); see {run_dir / 'stdout.log'}")
    return f"{run_dir.name}: {time.perf_counter() - start:.0f}s"


# ------------------------------------------------------------------------------------------- aggregation


def steps_to(rows: list[dict], threshold: float, start_em: float) -> tuple[float, bool]:
    """The first evaluated step whose held-out EM reaches ``threshold`` (0 when the warm start already does);
    ``(last step, False)`` when no evaluation does (censored)."""
    if start_em >= threshold:
        return 0.0, True
    evals = [r for r in rows if "eval/em" in r]
    hit = next((r["step"] for r in evals if r["eval/em"] >= threshold), None)
    return (float(hit), True) if hit is not None else (float(rows[-1]["step"]), False)


def summarise(rows_by_seed: dict[int, list[dict]], threshold: float, start_em: float) -> dict:
    """Per-seed numbers of one arm and their mean and sd (ddof 1)."""
    per_seed = {"final_em": [], "steps_to_threshold": [], "reached": [], "answered": [], "truncated": [],
                "searches": [], "all_failed_groups": [], "seconds_per_step": []}
    for rows in rows_by_seed.values():
        last = [r for r in rows if "eval/em" in r][-1]
        steps, reached = steps_to(rows, threshold, start_em)
        for key, value in (("final_em", last["eval/em"]), ("steps_to_threshold", steps), ("reached", float(reached)),
                           ("answered", last["eval/answered"]), ("truncated", last.get("eval/truncated", np.nan)),
                           ("searches", last["eval/searches"]),
                           ("all_failed_groups", np.mean([r.get("train/all_failed_groups", np.nan) for r in rows])),
                           ("seconds_per_step", np.mean([r["time/step"] for r in rows]))):
            per_seed[key].append(float(value))
    stats = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": v}
             for k, v in per_seed.items()}
    return stats


def ratio_interval(a: list[float], b: list[float], rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    """90% bootstrap interval of mean(a) / mean(b), resampling seeds within each arm."""
    a, b = np.asarray(a), np.asarray(b)
    ra = a[rng.integers(len(a), size=(n, len(a)))].mean(1)
    rb = b[rng.integers(len(b), size=(n, len(b)))].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ra / rb
    r = r[np.isfinite(r)]
    return (float(np.quantile(r, 0.05)), float(np.quantile(r, 0.95))) if r.size else (float("nan"), float("nan"))


def curve(rows_by_seed: dict[int, list[dict]], key: str, label: str, start: float | None = None) -> Curve:
    """Mean ± sd over seeds of ``key`` at the steps every seed logged it (``start`` at step 0 when given)."""
    steps = sorted(set.intersection(*[{r["step"] for r in rows if key in r} for rows in rows_by_seed.values()]))
    values = np.array([[next(r[key] for r in rows if r["step"] == s and key in r) for s in steps]
                       for rows in rows_by_seed.values()])
    if start is not None:
        steps, values = [0.0, *steps], np.hstack([np.full((len(values), 1), start), values])
    mean, sd = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
    return Curve(label, steps, mean, mean - sd, mean + sd, band_label=None)


def report(args, results: dict[str, dict[int, list[dict]]], warm: dict, out: Path) -> str:
    start = warm["eval"]
    threshold = args.threshold if args.threshold is not None else round(start["em"] + 0.10, 4)
    stats = {arm: summarise(rows, threshold, start["em"]) for arm, rows in results.items()}
    label = {"outcome": "outcome", "ig": "IG", "hindsight": "hindsight", "sibling": "sibling"}
    names = {"outcome": "outcome only (--ig-weight 0)", "ig": f"outcome + IG (--ig-weight {args.ig_weight:g}, own IG)",
             "hindsight": "outcome + hindsight JSD (--distill hindsight)",
             "sibling": "outcome + sibling KL (--distill sibling)"}
    cell = lambda s, k, f="{:.3f}": f"{f.format(s[k]['mean'])} ± {f.format(s[k]['sd'])}"  # noqa: E731
    lines = [f"warm start: held-out EM {start['em']:.3f}, answer rate {start['answered']:.3f}, valid-tag rate "
             f"{start['valid_tag_rate']:.3f}; own-IG validity {warm['ig_validity_after']['win_rate']:.2f} "
             f"(before warm start {warm['ig_validity_before']['win_rate']:.2f})",
             f"threshold: held-out EM >= {threshold:.3f}; seeds per arm: {args.seeds}; {args.total_steps} steps of "
             f"{args.questions_per_step}x{args.group_size} episodes, {args.eval_questions} held-out questions",
             "", "| arm | final EM | steps to threshold (reached) | answer rate | truncation rate | searches/ep "
             "| all-failed groups | s/step |", "|---|---|---|---|---|---|---|---|"]
    for arm, s in stats.items():
        reached = int(sum(s["reached"]["values"]))
        lines.append(f"| {names[arm]} | {cell(s, 'final_em')} | {cell(s, 'steps_to_threshold', '{:.0f}')} "
                     f"({reached}/{len(s['reached']['values'])}) | {cell(s, 'answered')} | {cell(s, 'truncated')} | "
                     f"{cell(s, 'searches', '{:.2f}')} | {cell(s, 'all_failed_groups', '{:.2f}')} | "
                     f"{cell(s, 'seconds_per_step', '{:.1f}')} |")
    rng = np.random.default_rng(0)
    baseline, *others = args.arms
    base = stats[baseline]
    comparisons = []
    for arm in others:  # each arm against the baseline; the first listed comparison is the last line
        a = stats[arm]
        ratio = lambda k, a=a: a[k]["mean"] / base[k]["mean"] if base[k]["mean"] else float("nan")  # noqa: E731
        lo_s, hi_s = ratio_interval(a["steps_to_threshold"]["values"], base["steps_to_threshold"]["values"], rng)
        lo_e, hi_e = ratio_interval(a["final_em"]["values"], base["final_em"]["values"], rng)
        comparisons.append(
            f"{label[arm]} / {label[baseline]}: steps to held-out EM >= {threshold:.2f} "
            f"{ratio('steps_to_threshold'):.2f}x "
            f"[{lo_s:.2f}, {hi_s:.2f}] ({cell(a, 'steps_to_threshold', '{:.0f}')} vs "
            f"{cell(base, 'steps_to_threshold', '{:.0f}')}; censored runs count their last step); final held-out EM "
            f"{ratio('final_em'):.2f}x [{lo_e:.2f}, {hi_e:.2f}] ({cell(a, 'final_em')} vs {cell(base, 'final_em')}); "
            f"mean ± sd over seeds (n={args.seeds}), [90% bootstrap interval]")
    last = comparisons[0] if comparisons else ""
    lines += [""] + comparisons[1:]
    (out / "results.json").write_text(json.dumps({"threshold": threshold, "warm_start": warm, "arms": stats,
                                                  "args": vars(args)}, indent=2))
    (out / "results.md").write_text("\n".join(lines + ["", last]) + "\n")
    def panel(title, key, start=None, ylim=None):
        return Panel(title, [curve(results[a], key, names[a].split(" (")[0], start) for a in results], ylim=ylim)

    plot_panels(out / "ig_testbed.png", [
        panel("held-out EM (greedy)", "eval/em", start["em"], (0, 1)),
        panel("held-out answer rate", "eval/answered", start["answered"], (0, 1)),
        panel("held-out truncation rate", "eval/truncated", start["truncated"], (0, 1)),
        panel("groups whose rollouts all failed (train)", "train/all_failed_groups", None, (0, 1)),
        panel("searches per episode (held-out)", "eval/searches", start["searches"])],
        title=f"IG testbed: mean ± sd over {args.seeds} seeds per arm")
    return "\n".join(lines + ["", f"curves: {out / 'ig_testbed.png'}; table: {out / 'results.md'}", last])


def main(argv=None) -> None:
    args = parse(argv)
    out = Path(args.output_dir)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    folder, warm = warm_start(args)
    # arms interleaved: a partial study is balanced
    jobs = [(arm, seed) for seed in range(1, args.seeds + 1) for arm in args.arms]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for message in pool.map(lambda job: run_one(args, folder, *job, runs), jobs):
            print(message, flush=True)
    results = {arm: {s: read_csv(runs / f"{arm}_s{s}" / "metrics.csv") for s in range(1, args.seeds + 1)}
               for arm in args.arms}
    text = report(args, results, warm, out)
    print(f"[study: {time.perf_counter() - start:.0f}s]\n" + text)


if __name__ == "__main__":
    main()
