"""Can IG credit say what the outcome cannot? The CPU testbed study, gated, in one command (issue 22).

    .venv/bin/python benchmarks/ig_testbed.py --gate-only           # the gate alone
    .venv/bin/python benchmarks/ig_testbed.py                       # warm start, gate, then the study if it passes
    .venv/bin/python benchmarks/ig_testbed.py --tiny --seeds 1 --total-steps 2 --eval-every 1 --ignore-gate  # smoke

1. **Three disjoint parts** of the built-in world's 2- and 3-hop questions (``search_env.training.splits.
   three_way_split``): the warm start's (``--warm-questions``, 240), GRPO's (the other 245 training questions) and
   the held-out 115, every one of which is evaluated. GRPO never trains on a question the warm start saw.
2. **Warm start** (``benchmarks/study/warm_start.py --max-questions 240``, cached under
   ``~/.cache/search_env/testbed``): a 1.6M-parameter Llama-style model and word-level tokenizer for the world, SFT on
   noisy-teacher trajectories of the warm start's questions only.
3. **Gate** (``benchmarks/study/gate.py``, its thresholds fixed in its docstring): on GRPO's questions, whether the
   policy's own credit tells apart rollouts of groups the outcome cannot (all-failed groups), beyond the noise of
   the random draws, whether it is valid on bridge and answer hops, and how much of ``|A_tok|`` it is. Written to
   ``gate.json`` / ``gate.md`` and kept (a rerun reads it). The study's IG arms run only if an IG arm passes
   (``--ignore-gate`` overrides).
4. **Study** (``examples/grpo_ig.py``), arms fixed in advance: **outcome** (``--ig-weight 0``), **ig** (outcome +
   per-turn IG, ``--ig-norm turn``, shared draws) and **subanswer** (outcome + sub-answer credit: each search scored
   against the chain's intermediate answers, the built-in world's entities, ``--ig-credit sub-answer``), each under
   GRPO's std scaling and Dr. GRPO's centring (``--normalisers std dr``; ``<arm>-dr`` runs). Paired seeds 1..N: a
   seed is the same warm start, data order, sampling seed and IG draws in every arm. Runs go to
   ``--output-dir/runs/<arm>_s<seed>``; a finished run is kept, an unfinished one resumed, so rerunning the command
   only aggregates. The neighbouring methods (issue 23) are further arms, ``--arms outcome hindsight sibling
   plan_dialect plan``: SD-Search's hindsight JSD and Search-E1's sibling rounds on outcome-only GRPO, and Plan Before
   Search's dialect alone (``plan_dialect``) and with its plan-aware reward (``plan``), which start from a warm start
   of their own in the plan dialect (same questions, teacher and SFT; the oracle writes the gold decomposition as
   its plan) with 40-token turns; ``plan`` is also compared with ``plan_dialect``.
5. **Aggregate**: per arm (mean ± sd over seeds) final held-out EM, steps to a threshold (warm start + 0.10), answer,
   truncation and all-failed rates, seconds per step and of it IG's; per arm against outcome (same normaliser) the
   paired per-seed differences of final held-out EM: their mean, a 95% paired bootstrap interval and an exact sign
   test; the step time ratio next to IG-Search's 1.064. ``results.json`` / ``results.md``, ``ig_testbed.png``; the
   last line is the primary comparison, ig - outcome under GRPO's std scaling (the primary metric and its threshold
   are in benchmarks/README.md).

Sizing (the default, for <= 120 minutes on an idle 2-core machine with ``--jobs 2 --threads 1``), from steps measured
on this machine idle just before the full study, two runs at a time (3 steps each, 8 x 4 episodes, seed 1,
``/work/runs/probe``): outcome 7.9-9.7 s, ig 10.0-12.0 s, subanswer 15.3-16.5 s a step; an evaluation of all 115
held-out questions ~7 s, a run's start ~10 s. 42 runs (7 seeds x 3 arms x 2 normalisers) cost per step
~7 x 2 x (8.6 + 11.1 + 16.1) = 501 s of one core, ~250 s on two: 20 steps ~5,000 s, 2 evaluations ~300 s, starts
~210 s, the gate ~190 s on one core: ~96 minutes with the warm start cached, plus the warm start (SFT on 240
questions: 517 s idle with ``--threads 2``, which is not in its cache key; 2,777 s at load 6-10): ~105 minutes
cold. The study's ``[study: ...s]`` line is the measurement to check this against (benchmarks/README.md). (The
earlier sizing, 36 steps from older step times, came to ~150 minutes with these.)
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

from search_env import build_world
from search_env.training.plots import Curve, Panel, plot_panels
from search_env.training.rollout import build_model
from search_env.training.run import read_csv, seed_everything
from search_env.training.splits import three_way_split
from study.gate import CREDITS, describe, run_gate
from study.runs import GRPO_IG, WARM_START, child_env
from study.stats import paired_bootstrap, sign_test

# The env as both the warm start and GRPO see it (the warm-started model only knows this setting).
ENV = {"hops": "2,3", "topk": 3, "max_turns": 4, "max_new_tokens": 12}
ENV_FLAGS = ["--hops", ENV["hops"], "--topk", str(ENV["topk"]), "--max-turns", str(ENV["max_turns"]), "--no-few-shot",
             "--max-new-tokens", str(ENV["max_new_tokens"])]
# arm -> (--ig-weight, extra grpo_ig.py flags); None: the --ig-weight option. The study fixed before its runs is
# outcome vs ig vs subanswer; the self-distillation arms add SD-Search's or OFSD's loss to outcome-only GRPO.
ARMS = {"outcome": (0.0, []), "ig": (None, ["--ig-norm", "turn", "--ig-credit", "step"]),
        "subanswer": (None, ["--ig-norm", "turn", "--ig-credit", "sub-answer"]),
        "hindsight": (0.0, ["--distill", "hindsight"]), "sibling": (0.0, ["--distill", "sibling"]),
        "plan_dialect": (0.0, []), "plan": (0.0, ["--plan-weight", "0.3"])}
# The plan arms (Plan Before Search) play the plan dialect, so they start from their own warm start: the same
# teacher, SFT and questions, with the oracle's gold-decomposition <plan> opening its first turn (oracle-written
# plans, the annotation the paper's self-bootstrapping avoids; --warm-args can add a --trajectories self round),
# and turns long enough for a plan. ``plan_dialect`` is the dialect alone; ``plan`` adds the plan-aware reward.
DIALECT_FLAGS = {"search-r1": [], "plan": ["--dialect", "plan", "--max-new-tokens", "40"]}
ARM_DIALECTS = {"plan_dialect": "plan", "plan": "plan"}
EXTRA_PAIRS = [("plan", "plan_dialect")]  # compared too when both run: the plan-aware reward alone
NORMALISERS = {"std": [], "dr": ["--no-scale-rewards"]}  # GRPO's std scaling; Dr. GRPO's centring alone
PAPER_COST = 1.064  # IG-Search's step time with IG over without
# A tiny model and warm start, for smoke tests.
TINY_WARM = ["--episodes-per-question", "1", "--epochs", "1", "--ig-questions", "4", "--hidden-size", "32",
             "--layers", "1", "--intermediate-size", "64"]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="runs/ig_testbed", help="where runs, table and curves go")
    p.add_argument("--seeds", type=int, default=7, help="paired seeds per arm (1..N)")
    p.add_argument("--total-steps", type=int, default=20, help="GRPO steps per run")
    p.add_argument("--eval-every", type=int, default=10, help="held-out evaluation every N steps")
    p.add_argument("--eval-questions", type=int, default=None, help="held-out questions per evaluation (default: all)")
    p.add_argument("--warm-questions", type=int, default=240,
                   help="training questions of the warm start; GRPO trains on the rest (tiny: 16)")
    p.add_argument("--questions-per-step", type=int, default=8, help="questions per GRPO step")
    p.add_argument("--group-size", type=int, default=4, help="rollouts per question")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="GRPO learning rate (every arm)")
    p.add_argument("--kl-coef", type=float, default=0.001, help="KL to the warm-started model (every arm)")
    p.add_argument("--ig-weight", type=float, default=0.3, help="lambda of the IG arms")
    p.add_argument("--threshold", type=float, default=None, help="held-out EM to reach (default: warm start's + 0.10)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (more can be far slower on a shared machine)")
    p.add_argument("--arms", nargs="+", default=["outcome", "ig", "subanswer"], choices=list(ARMS),
                   help="arms to run; the first is the baseline every other arm is compared with")
    p.add_argument("--normalisers", nargs="+", default=["std", "dr"], choices=list(NORMALISERS),
                   help="advantage normalisers, each crossed with every arm: std (GRPO) and dr (Dr. GRPO)")
    p.add_argument("--gate-only", action="store_true", help="run the gate and stop")
    p.add_argument("--ignore-gate", action="store_true", help="run the IG arms even where the gate failed")
    p.add_argument("--gate-questions", type=int, default=32, help="GRPO questions of the gate's rollouts")
    p.add_argument("--gate-draws", type=int, default=4, help="other draw seeds per episode (the draw noise)")
    p.add_argument("--validity-questions", type=int, default=48, help="questions of the gate's paired validity")
    p.add_argument("--tiny", action="store_true", help="a tiny model and warm start (smoke tests)")
    p.add_argument("--warm-args", default="", help="extra benchmarks/study/warm_start.py flags, space-separated")
    p.add_argument("--grpo-args", default="", help="extra examples/grpo_ig.py flags for every arm, space-separated")
    args = p.parse_args(argv)
    if args.tiny and "--warm-questions" not in (argv if argv is not None else sys.argv[1:]):
        args.warm_questions = 16
    return args


def splits(args):
    """The study's three disjoint parts of the built-in world: warm start's, GRPO's, held-out."""
    return three_way_split(build_world(seed=0).questions, 200, ENV["hops"], args.warm_questions)


# ------------------------------------------------------------------------------------------------ runs


def dialect_of(arm: str) -> str:
    return ARM_DIALECTS.get(arm, "search-r1")


def warm_start(args, dialect: str = "search-r1") -> tuple[Path, dict]:
    """The warm-started model's folder for ``dialect`` (built, or found in the cache) and its report."""
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--output")
    given, extra = output.parse_known_args(args.warm_args.split())
    if given.output:  # each dialect's warm start in its own folder
        extra += ["--output", given.output + ("" if dialect == "search-r1" else f"-{dialect}")]
    cmd = [sys.executable, str(WARM_START), *ENV_FLAGS, *DIALECT_FLAGS[dialect], "--eval-questions",
           str(args.eval_questions), "--max-questions", str(args.warm_questions), "--threads", str(args.threads),
           *(TINY_WARM if args.tiny else []), *extra]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads))
    if out.returncode:
        raise SystemExit(f"warm start failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    print(out.stdout.rstrip(), f"\n[warm start: {time.perf_counter() - start:.0f}s]", flush=True)
    folder = Path(out.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    return folder, json.loads((folder / "warm_start.json").read_text())


def variant(arm: str, norm: str) -> str:
    """A run's arm and normaliser as one name: ``ig`` (GRPO's std scaling), ``ig-dr`` (Dr. GRPO's centring)."""
    return arm if norm == "std" else f"{arm}-{norm}"


def grpo_command(args, folder: Path, arm: str, norm: str, seed: int, runs: Path) -> list[str]:
    weight, flags = ARMS[arm]
    weight = args.ig_weight if weight is None else weight
    return [sys.executable, str(GRPO_IG), "--model", str(folder), *ENV_FLAGS, *DIALECT_FLAGS[dialect_of(arm)],
            "--warm-questions",
            str(args.warm_questions), "--total-steps", str(args.total_steps), "--eval-every", str(args.eval_every),
            "--eval-questions", str(args.eval_questions), "--questions-per-step", str(args.questions_per_step),
            "--group-size", str(args.group_size), "--learning-rate", str(args.learning_rate),
            "--kl-coef", str(args.kl_coef), "--ig-weight", str(weight), "--seed", str(seed), "--device", "cpu",
            "--precision", "fp32", "--no-tensorboard", "--output-dir", str(runs),
            "--run-name", f"{variant(arm, norm)}_s{seed}", *flags, *NORMALISERS[norm], *args.grpo_args.split()]


def run_one(args, folder: Path, arm: str, norm: str, seed: int, runs: Path) -> str:
    """One GRPO run; a finished one is kept, an interrupted one resumed from its last checkpoint."""
    run_dir = runs / f"{variant(arm, norm)}_s{seed}"
    rows = read_csv(run_dir / "metrics.csv")
    if rows and rows[-1]["step"] >= args.total_steps and "eval/em" in rows[-1]:
        return f"{run_dir.name}: done before"
    cmd = grpo_command(args, folder, arm, norm, seed, runs)
    cmd += ["--resume"] if (run_dir / "checkpoints").exists() else []
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "stdout.log", "a") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(args.threads)).returncode
    if code:
        raise RuntimeError(f"{run_dir.name} failed (exit {code}); see {run_dir / 'stdout.log'}")
    return f"{run_dir.name}: {time.perf_counter() - start:.0f}s"


def gate(args, folder: Path, out: Path) -> dict:
    """The gate's figures (``gate.json``, kept: a rerun reads them), computed on GRPO's questions."""
    path = out / "gate.json"
    settings = {k: getattr(args, k) for k in ("gate_questions", "gate_draws", "validity_questions", "group_size",
                                              "ig_weight", "warm_questions", "tiny")} | {"model": str(folder),
                                                                                          "validity_from": "grpo"}
    if path.exists() and json.loads(path.read_text()).get("settings") == settings:
        return json.loads(path.read_text())
    import torch

    torch.set_num_threads(args.threads)
    seed_everything(0)
    model, tokenizer = build_model(str(folder), 0)
    _, grpo, _ = splits(args)
    start = time.perf_counter()
    result = run_gate(model, tokenizer, grpo.__class__(list(grpo)[: args.gate_questions], name=grpo.name),
                      build_world(seed=0).corpus, group_size=args.group_size, draws=args.gate_draws,
                      validity_questions=grpo.__class__(list(grpo)[: args.validity_questions], name=grpo.name),
                      ig_weight=args.ig_weight, env=ENV)
    result.update(settings=settings, seconds=time.perf_counter() - start)
    path.write_text(json.dumps(result, indent=2))
    (out / "gate.md").write_text("\n".join(describe(result)) + "\n")
    return result


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
                "searches": [], "all_failed_groups": [], "seconds_per_step": [], "ig_seconds_per_step": []}
    for rows in rows_by_seed.values():
        last = [r for r in rows if "eval/em" in r][-1]
        steps, reached = steps_to(rows, threshold, start_em)
        # a step's time without its evaluation and checkpoint: what the arms' training costs
        train_time = [r["time/step"] - r.get("time/eval", 0.0) - r.get("time/checkpoint", 0.0) for r in rows]
        for key, value in (("final_em", last["eval/em"]), ("steps_to_threshold", steps), ("reached", float(reached)),
                           ("answered", last["eval/answered"]), ("truncated", last.get("eval/truncated", np.nan)),
                           ("searches", last["eval/searches"]),
                           ("all_failed_groups", np.mean([r.get("train/all_failed_groups", np.nan) for r in rows])),
                           ("seconds_per_step", np.mean(train_time)),
                           ("ig_seconds_per_step", np.mean([r.get("time/ig", 0.0) for r in rows]))):
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


LABELS = {"outcome": "outcome", "ig": "IG", "subanswer": "sub-answer", "hindsight": "hindsight", "sibling": "sibling",
          "plan_dialect": "plan dialect", "plan": "plan + plan reward"}
NORM_NAMES = {"std": "GRPO std", "dr": "Dr. GRPO"}


def arm_name(args, name: str) -> str:
    arm, _, norm = name.partition("-")
    described = {"outcome": "outcome only (--ig-weight 0)",
                 "ig": f"outcome + per-turn IG (--ig-weight {args.ig_weight:g}, --ig-norm turn, shared draws)",
                 "subanswer": f"outcome + sub-answer credit (--ig-weight {args.ig_weight:g}, --ig-norm turn)",
                 "hindsight": "outcome + hindsight JSD (--distill hindsight; own attempt left out)",
                 "sibling": "outcome + sibling KL (--distill sibling; separate rounds, every 5th step)",
                 "plan_dialect": "plan dialect, outcome only (own warm start, oracle-written plans)",
                 "plan": "plan dialect + plan-aware reward (--plan-weight 0.3; own warm start)"}[arm]
    return f"{described}, {NORM_NAMES[norm or 'std']}"


def paired(a: dict, base: dict, key: str = "final_em") -> dict:
    """Per-seed differences of ``key`` (arm minus baseline, same seeds): mean, 95% paired bootstrap, sign test."""
    mean, lo, hi = paired_bootstrap(a[key]["values"], base[key]["values"])
    plus, minus, p = sign_test(a[key]["values"], base[key]["values"])
    return {"mean_difference": mean, "low": lo, "high": hi, "wins": plus, "losses": minus, "sign_test_p": p}


def report(args, results: dict[str, dict[int, list[dict]]], warms: dict[str, dict], out: Path,
           gate_result: dict | None) -> str:
    """The table, the paired comparisons and the curves; ``warms``: each dialect's warm-start report. Each arm's
    threshold is ``--threshold``, or its own warm start's held-out EM + 0.10."""
    warm = warms["search-r1"]
    start = warm["eval"]
    by_dialect = {d: args.threshold if args.threshold is not None else round(w["eval"]["em"] + 0.10, 4)
                  for d, w in warms.items()}
    threshold = by_dialect["search-r1"]
    arm_of = {variant(arm, norm): arm for norm in args.normalisers for arm in args.arms}
    starts = {name: warms[dialect_of(arm_of[name])]["eval"] for name in results}
    thresholds = {name: by_dialect[dialect_of(arm_of[name])] for name in results}
    also = "".join(f" ({d} dialect's arms: {t:.3f})" for d, t in by_dialect.items() if d != "search-r1")
    stats = {name: summarise(rows, thresholds[name], starts[name]["em"]) for name, rows in results.items()}
    cell = lambda s, k, f="{:.3f}": f"{f.format(s[k]['mean'])} ± {f.format(s[k]['sd'])}"  # noqa: E731
    lines = [f"warm start ({args.warm_questions} questions GRPO never sees): held-out EM {start['em']:.3f}, answer "
             f"rate {start['answered']:.3f}, valid-tag rate {start['valid_tag_rate']:.3f}; own-IG validity "
             f"{warm['ig_validity_after']['win_rate']:.2f} (before warm start "
             f"{warm['ig_validity_before']['win_rate']:.2f})",
             *[f"{d} dialect's warm start (same questions, teacher and SFT): held-out EM {w['eval']['em']:.3f}, answer "
               f"rate {w['eval']['answered']:.3f}, valid-tag rate {w['eval']['valid_tag_rate']:.3f}"
               for d, w in warms.items() if d != "search-r1"],
             f"threshold: held-out EM >= {threshold:.3f}{also}; paired seeds per arm: {args.seeds}; {args.total_steps} "
             f"steps of {args.questions_per_step}x{args.group_size} episodes; held-out EM on {args.eval_questions} "
             f"questions", "", "| arm | final EM | steps to threshold (reached) | answer rate | truncation rate "
             "| searches/ep | all-failed groups | s/step (IG s) |", "|---|---|---|---|---|---|---|---|"]
    for name, s in stats.items():
        reached = int(sum(s["reached"]["values"]))
        lines.append(f"| {arm_name(args, name)} | {cell(s, 'final_em')} | "
                     f"{cell(s, 'steps_to_threshold', '{:.0f}')} ({reached}/{len(s['reached']['values'])}) | "
                     f"{cell(s, 'answered')} | {cell(s, 'truncated')} | {cell(s, 'searches', '{:.2f}')} | "
                     f"{cell(s, 'all_failed_groups', '{:.2f}')} | {cell(s, 'seconds_per_step', '{:.1f}')} "
                     f"({s['ig_seconds_per_step']['mean']:.1f}) |")
    baseline, *others = args.arms
    pairs = [(arm, baseline) for arm in others] + [
        (a, b) for a, b in EXTRA_PAIRS if a in args.arms and b in args.arms and baseline not in (a, b)]
    comparisons, tests, costs = [], {}, {}
    rng = np.random.default_rng(0)
    for norm in args.normalisers:
        for arm, against in pairs:
            name, base = variant(arm, norm), stats[variant(against, norm)]
            a, test = stats[name], paired(stats[name], base)
            key = name if against == baseline else f"{name} vs {variant(against, norm)}"
            tests[key] = test
            cost = a["seconds_per_step"]["mean"] / base["seconds_per_step"]["mean"]
            costs[key] = cost
            lo_s, hi_s = ratio_interval(a["steps_to_threshold"]["values"], base["steps_to_threshold"]["values"], rng)
            comparisons.append(
                f"{LABELS[arm]} - {LABELS[against]} ({NORM_NAMES[norm]}): final held-out EM "
                f"{test['mean_difference']:+.3f} [{test['low']:+.3f}, {test['high']:+.3f}] (95% paired bootstrap over "
                f"{args.seeds} seeds; {cell(a, 'final_em')} vs {cell(base, 'final_em')}), sign test "
                f"{test['wins']}+/{test['losses']}- p={test['sign_test_p']:.3f}; steps to EM >= {thresholds[name]:.2f}"
                f"{'' if thresholds[name] == thresholds[variant(against, norm)] else ' (its warm start + 0.10)'} "
                f"x{a['steps_to_threshold']['mean'] / max(base['steps_to_threshold']['mean'], 1e-9):.2f} "
                f"[{lo_s:.2f}, {hi_s:.2f}]; step time x{cost:.3f} (IG-Search paper: x{PAPER_COST})")
    last = comparisons[0] if comparisons else ""
    lines += [""] + comparisons[1:]
    (out / "results.json").write_text(json.dumps({"threshold": threshold, "thresholds": thresholds, "warm_start": warm,
                                                  "warm_starts": warms, "arms": stats,
                                                  "paired": tests, "step_time_ratio": costs, "gate": gate_result,
                                                  "args": vars(args)}, indent=2))
    (out / "results.md").write_text("\n".join(lines + ["", last]) + "\n")

    def panel(title, key, start=None, ylim=None):
        return Panel(title, [curve(results[a], key, arm_name(args, a).split(" (")[0],
                                   None if start is None else starts[a][start]) for a in results], ylim=ylim)

    plot_panels(out / "ig_testbed.png", [
        panel("held-out EM (greedy)", "eval/em", "em", (0, 1)),
        panel("held-out answer rate", "eval/answered", "answered", (0, 1)),
        panel("held-out truncation rate", "eval/truncated", "truncated", (0, 1)),
        panel("groups whose rollouts all failed (train)", "train/all_failed_groups", None, (0, 1)),
        panel("searches per episode (held-out)", "eval/searches", "searches")],
        title=f"IG testbed: mean ± sd over {args.seeds} seeds per arm")
    return "\n".join(lines + ["", f"curves: {out / 'ig_testbed.png'}; table: {out / 'results.md'}", last])


def main(argv=None) -> None:
    args = parse(argv)
    _, _, held_out = splits(args)
    args.eval_questions = args.eval_questions or len(held_out)
    out = Path(args.output_dir)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    warms = {d: warm_start(args, d) for d in dict.fromkeys(["search-r1", *map(dialect_of, args.arms)])}
    folder, warm = warms["search-r1"]
    gate_result = None
    if args.gate_only or any(arm in CREDITS for arm in args.arms):
        gate_result = gate(args, folder, out)
        print("\n".join(describe(gate_result)) + f"\n[gate: {gate_result['seconds']:.0f}s; {out / 'gate.md'}]",
              flush=True)
        if args.gate_only:
            return
        if not gate_result["passed"] and not args.ignore_gate:
            raise SystemExit("the gate failed: the study's IG arms are not run (--ignore-gate runs them anyway)")
    # arms interleaved within each seed: a partial study is balanced and paired
    jobs = [(arm, norm, seed) for seed in range(1, args.seeds + 1) for norm in args.normalisers for arm in args.arms]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for message in pool.map(lambda job: run_one(args, warms[dialect_of(job[0])][0], *job, runs), jobs):
            print(message, flush=True)
    results = {variant(arm, norm): {s: read_csv(runs / f"{variant(arm, norm)}_s{s}" / "metrics.csv")
                                    for s in range(1, args.seeds + 1)}
               for norm in args.normalisers for arm in args.arms}
    text = report(args, results, {d: w for d, (_, w) in warms.items()}, out, gate_result)
    print(f"[study: {time.perf_counter() - start:.0f}s]\n" + text)


if __name__ == "__main__":
    main()
