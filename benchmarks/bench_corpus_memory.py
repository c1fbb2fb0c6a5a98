"""What a large corpus costs in memory: the in-memory corpus and bm25s build (old) vs the memory-mapped corpus and
the chunked build (new), each step in a fresh process, and 16 env processes sharing one mapped corpus.

    .venv/bin/python benchmarks/bench_corpus_memory.py [--passages 1000000] [--processes 16]

Phases, each in its own interpreter: generate a random-word corpus (bench_bm25's Zipf generator) as FlashRAG
JSONL; **old build**: the corpus in memory and bm25s's ``index`` over every passage's token list at once (the
code before the chunked build); **new build**: the corpus memory-mapped (``load_corpus(path, mmap=True)``, built
once) and ``BM25Retriever``'s chunked build; the two indexes' top-10 on 200 queries compared; **query
processes**: an env-like process (the corpus, the index memory-mapped, 200 searches, 2,000 random passage draws
as IG's baselines make) with the corpus in memory vs mapped; **shared**: ``--processes`` mapped query processes
at once, their RSS and PSS (proportional set size: shared pages split between the processes that map them)
summed while all are alive. The last line: query-process RSS new / old, and the build peaks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_bm25 import make_corpus, make_queries  # noqa: E402

MB = 1 << 20


def memory() -> dict[str, float]:
    """RSS, its anonymous and file-backed parts, the peak (``/proc/self/status``) and PSS (``smaps_rollup``), MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["Pss"] = int(line.split()[1]) / 1024
    return {"rss": out["VmRSS"], "anon": out["RssAnon"], "mapped": out["RssFile"], "peak": out["VmHWM"], "pss": out["Pss"]}


def queries_for(corpus) -> list[str]:
    """200 queries from passages drawn with a fixed seed (the same from the in-memory and the mapped corpus)."""
    rng = np.random.default_rng(3)
    return make_queries([corpus[int(i)].text for i in rng.integers(0, len(corpus), 400)], 200)


# -- phases, each in a fresh process -----------------------------------------------------------------


def phase_generate(n: int, workdir: Path) -> dict:
    start = time.perf_counter()
    corpus, _ = make_corpus(n)
    corpus.to_jsonl(workdir / f"corpus-{n}.jsonl")
    return {"generate_s": time.perf_counter() - start, "jsonl_mb": (workdir / f"corpus-{n}.jsonl").stat().st_size / MB}


def phase_build_old(n: int, workdir: Path) -> dict:
    """The build before the chunked one: every passage's tokens as Python lists, then bm25s's ``index``."""
    import bm25s

    from search_env.data.corpus import load_corpus
    from search_env.retrieval import bm25 as module

    start = time.perf_counter()
    corpus = load_corpus(workdir / f"corpus-{n}.jsonl")
    t_corpus, after_corpus = time.perf_counter() - start, memory()["rss"]
    start = time.perf_counter()
    analyzer = module._Analyzer("english", "en")
    analyzer.tokenizer.reset_vocab()
    ids = analyzer.tokenizer.tokenize([module._passage_text(p) for p in corpus], update_vocab=True, return_as="ids",
                                      allow_empty=True, show_progress=False)
    bm = bm25s.BM25(k1=0.9, b=0.4, method="lucene", backend="numpy")
    bm.index(bm25s.tokenization.Tokenized(ids=ids, vocab=analyzer.vocab), show_progress=False)
    t_build, peak = time.perf_counter() - start, memory()["peak"]
    del ids
    top = []
    for q in queries_for(corpus):
        q_ids = analyzer.query_ids(q)
        scores = bm.get_scores(q_ids) if q_ids else np.zeros(len(corpus))
        top.append(np.argsort(-scores, kind="stable")[:10].tolist())
    (workdir / "top_old.json").write_text(json.dumps(top))
    return {"load_corpus_s": t_corpus, "corpus_rss_mb": after_corpus, "build_s": t_build, "peak_mb": peak}


def phase_build_new(n: int, workdir: Path) -> dict:
    from search_env.data.mapped import load_mapped_corpus
    from search_env.retrieval.bm25 import BM25Retriever

    start = time.perf_counter()
    corpus = load_mapped_corpus(workdir / f"corpus-{n}.jsonl", workdir / "mapped")
    t_corpus, after_corpus = time.perf_counter() - start, memory()["rss"]
    start = time.perf_counter()
    retriever = BM25Retriever(corpus, cache=workdir / "bm25", mmap=True)
    t_build = time.perf_counter() - start
    peak = memory()["peak"]
    top = [np.argsort(-retriever.get_scores(q), kind="stable")[:10].tolist() for q in queries_for(corpus)]
    old = json.loads((workdir / "top_old.json").read_text()) if (workdir / "top_old.json").exists() else None
    return {"map_corpus_s": t_corpus, "corpus_rss_mb": after_corpus, "build_s": t_build, "peak_mb": peak,
            "mapped_disk_mb": sum(f.stat().st_size for f in (workdir / "mapped").iterdir()) / MB,
            "same_top10": None if old is None else float(np.mean([a == b for a, b in zip(top, old)]))}


def phase_query(n: int, workdir: Path, mapped: bool, hold: bool = False) -> dict:
    """An env process's memory: the corpus (in memory or mapped), the index mapped, searches and random draws."""
    from search_env.data.corpus import load_corpus
    from search_env.data.mapped import load_mapped_corpus
    from search_env.retrieval.bm25 import BM25Retriever

    base = memory()["rss"]
    corpus = load_mapped_corpus(workdir / f"corpus-{n}.jsonl", workdir / "mapped") if mapped else \
        load_corpus(workdir / f"corpus-{n}.jsonl")
    retriever = BM25Retriever.load(workdir / "bm25", corpus, mmap=True)
    queries = queries_for(corpus)
    start = time.perf_counter()
    for q in queries:
        retriever.search(q, 3)
    t_search = (time.perf_counter() - start) / len(queries)
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(corpus), 2000):  # IG's random baselines read passages anywhere in the corpus
        corpus[int(i)].text
    result = {"base_rss_mb": base, "search_ms": t_search * 1e3, **{f"{k}_mb": v for k, v in memory().items()}}
    if hold:  # stay alive (and keep the pages) until the parent has measured every process
        print(json.dumps(result), flush=True)
        sys.stdin.read()
    return result


def run_phase(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def shared(n: int, workdir: Path, processes: int) -> dict:
    procs = [subprocess.Popen([sys.executable, __file__, "--phase", "query_mapped_hold", str(n), str(workdir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.stdin.close()
        p.wait(timeout=60)
    return {"processes": processes, "rss_total_mb": sum(r["rss_mb"] for r in results),
            "pss_total_mb": sum(r["pss_mb"] for r in results), "anon_total_mb": sum(r["anon_mb"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--phase", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, n, workdir = args.phase[0], int(args.phase[1]), Path(args.phase[2])
        run = {"generate": phase_generate, "build_old": phase_build_old, "build_new": phase_build_new,
               "query_memory": lambda n, w: phase_query(n, w, False), "query_mapped": lambda n, w: phase_query(n, w, True),
               "query_mapped_hold": lambda n, w: phase_query(n, w, True, hold=True)}[name]
        print(json.dumps(run(n, workdir)))
        return
    n = args.passages
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        gen = run_phase("generate", str(n), str(workdir))
        old = run_phase("build_old", str(n), str(workdir))
        new = run_phase("build_new", str(n), str(workdir))
        q_old = run_phase("query_memory", str(n), str(workdir))
        q_new = run_phase("query_mapped", str(n), str(workdir))
        many = shared(n, workdir, args.processes)
        print(f"{n:,} passages ({gen['jsonl_mb']:.0f} MB of JSONL); every step in a fresh process; total "
              f"{time.perf_counter() - start:.0f} s")
        print(f"build, old (corpus in memory, bm25s index over all token lists): {old['build_s']:.0f} s, peak "
              f"{old['peak_mb']:.0f} MB (the corpus alone {old['corpus_rss_mb']:.0f} MB)")
        print(f"build, new (mapped corpus, chunked build): map the corpus {new['map_corpus_s']:.0f} s, index "
              f"{new['build_s']:.0f} s, peak {new['peak_mb']:.0f} MB; mapped corpus on disk {new['mapped_disk_mb']:.0f} MB; "
              f"same top-10 as the old index on 200 queries: {new['same_top10']:.3f}")
        for label, q in (("in memory", q_old), ("mapped", q_new)):
            print(f"query process, corpus {label}: RSS {q['rss_mb']:.0f} MB (anon {q['anon_mb']:.0f}, mapped "
                  f"{q['mapped_mb']:.0f}), PSS {q['pss_mb']:.0f} MB, search {q['search_ms']:.2f} ms")
        print(f"{many['processes']} mapped query processes at once: RSS summed {many['rss_total_mb']:.0f} MB, PSS summed "
              f"{many['pss_total_mb']:.0f} MB (anon {many['anon_total_mb']:.0f} MB)")
        print(f"query-process RSS at {n:,} passages, new / old: {q_new['rss_mb']:.0f} / {q_old['rss_mb']:.0f} MB = "
              f"{q_new['rss_mb'] / q_old['rss_mb']:.2f}x; build peak new / old: {new['peak_mb']:.0f} / {old['peak_mb']:.0f} MB "
              f"= {new['peak_mb'] / old['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
