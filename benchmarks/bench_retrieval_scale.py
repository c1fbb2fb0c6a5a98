"""Wiki-scale BM25 on one machine: build, memory and latency at 1M and 3M passages, old vs new, the server's memory
while it serves, many env processes sharing one corpus, and the projection to wiki-18's 21M passages.

    .venv/bin/python benchmarks/bench_retrieval_scale.py [--passages 1000000 3000000] [--processes 16]

For each size, every step in a fresh interpreter, on a random-word corpus (bench_bm25's Zipf generator, 40-120
words a passage) written as FlashRAG JSONL:

- **build**: the corpus memory-mapped (``load_corpus(path, mmap=True)``, built once) and ``BM25Retriever``'s
  chunked build: seconds, peak RSS, index and mapped corpus on disk;
- **env process**: what an env worker holds: corpus and index mapped, 200 single searches, 10 batches of 64,
  2,000 random passage draws (IG's random baselines read passages anywhere): RSS (anonymous + file pages),
  PSS (shared pages split between the processes that map them), latency;
- **server**: ``search-env serve --mmap`` in its own process, the same queries sent over HTTP; its RSS and PSS
  while serving;
- **shared**: ``--processes`` env processes alive at once; their RSS, PSS and anonymous memory summed.

At ``--old-at`` (the first size) also the code before the mapped corpus and the chunked build (the corpus as
Python objects, bm25s's ``index`` over every passage's token list at once): its build peak, an env process's RSS,
and whether the two indexes give the same top-10 on 200 queries. Then the growth from the smallest to the largest
size, extrapolated linearly to 21M passages, and what a vocabulary of ``--vocab-words`` distinct words costs each
process that loads the index (the generated corpora's vocabulary is far smaller than Wikipedia's). The last line:
an env process's RSS at ``--old-at`` passages, new / old, with the build peaks beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_bm25 import make_corpus, make_queries
from bench_dense_http import per_call, start_server

MB = 1 << 20
WIKI18 = 21_000_000
N_SINGLE, BATCH, N_BATCHES, N_DRAWS = 200, 64, 10, 2000


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
    return {
        "rss": out["VmRSS"],
        "anon": out["RssAnon"],
        "mapped": out["RssFile"],
        "peak": out["VmHWM"],
        "pss": out["Pss"],
    }


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MB


def queries_for(corpus) -> tuple[list[str], list[list[str]]]:
    """200 single queries and 10 batches of 64, from passages drawn with a fixed seed (the same from either corpus)."""
    rng = np.random.default_rng(3)
    n = N_SINGLE + N_BATCHES * BATCH
    queries = make_queries([corpus[int(i)].text for i in rng.integers(0, len(corpus), 2 * n)], n)
    return queries[:N_SINGLE], [queries[N_SINGLE + k * BATCH:][:BATCH] for k in range(N_BATCHES)]


def jsonl(n: int, workdir: Path) -> Path:
    return workdir / f"corpus-{n}.jsonl"


# -- phases, each in a fresh process -----------------------------------------------------------------


def phase_generate(n: int, workdir: Path) -> dict:
    start = time.perf_counter()
    corpus, _ = make_corpus(n)
    corpus.to_jsonl(jsonl(n, workdir))
    return {"generate_s": time.perf_counter() - start, "jsonl_mb": jsonl(n, workdir).stat().st_size / MB}


def phase_build_new(n: int, workdir: Path) -> dict:
    from search_env.data.corpus import load_corpus
    from search_env.retrieval.bm25 import BM25Retriever

    start = time.perf_counter()
    corpus = load_corpus(jsonl(n, workdir), mmap=True)
    t_corpus = time.perf_counter() - start
    start = time.perf_counter()
    retriever = BM25Retriever(corpus, cache=workdir / f"bm25-{n}", mmap=True)
    t_build, peak = time.perf_counter() - start, memory()["peak"]
    singles, _ = queries_for(corpus)
    top = [np.argsort(-retriever.get_scores(q), kind="stable")[:10].tolist() for q in singles]
    (workdir / f"top_new-{n}.json").write_text(json.dumps(top))
    return {
        "map_corpus_s": t_corpus,
        "build_s": t_build,
        "peak_mb": peak,
        "index_disk_mb": dir_mb(workdir / f"bm25-{n}"),
        "mapped_disk_mb": dir_mb(corpus.folder),
        "vocab_words": len(retriever.analyzer.tokenizer.word_to_id),
    }


def phase_build_old(n: int, workdir: Path) -> dict:
    """The build before the chunked one: the corpus in memory, every passage's tokens as Python lists, then
    bm25s's ``index``; it writes its index beside the new one (the old env process loads it)."""
    import bm25s

    from search_env.data.corpus import load_corpus
    from search_env.retrieval import bm25 as module

    start = time.perf_counter()
    corpus = load_corpus(jsonl(n, workdir))
    t_corpus, corpus_rss = time.perf_counter() - start, memory()["rss"]
    start = time.perf_counter()
    analyzer = module._Analyzer("english", "en")
    analyzer.tokenizer.reset_vocab()
    ids = analyzer.tokenizer.tokenize([module._passage_text(p) for p in corpus], update_vocab=True, return_as="ids",
                                      allow_empty=True, show_progress=False)
    bm = bm25s.BM25(k1=0.9, b=0.4, method="lucene", backend="numpy")
    bm.index(bm25s.tokenization.Tokenized(ids=ids, vocab=analyzer.vocab), show_progress=False)
    t_build, peak = time.perf_counter() - start, memory()["peak"]
    del ids
    singles, _ = queries_for(corpus)
    top = []
    for q in singles:
        q_ids = analyzer.query_ids(q)
        scores = bm.get_scores(q_ids) if q_ids else np.zeros(len(corpus))
        top.append(np.argsort(-scores, kind="stable")[:10].tolist())
    new = json.loads((workdir / f"top_new-{n}.json").read_text())
    return {"load_corpus_s": t_corpus, "corpus_rss_mb": corpus_rss, "build_s": t_build, "peak_mb": peak,
            "same_top10": float(np.mean([a == b for a, b in zip(top, new)]))}


def phase_query(n: int, workdir: Path, mapped: bool, hold: bool = False) -> dict:
    """An env process: the corpus (mapped, or in memory as before), the index mapped, searches and random draws."""
    from search_env.data.corpus import load_corpus
    from search_env.retrieval.bm25 import BM25Retriever

    corpus = load_corpus(jsonl(n, workdir), mmap=mapped)
    retriever = BM25Retriever.load(workdir / f"bm25-{n}", corpus, mmap=True)
    singles, batches = queries_for(corpus)
    single_ms = per_call(lambda q: retriever.search(q, 10), singles) * 1e3
    batch_ms = per_call(lambda b: retriever.batch_search(b, 10), batches) * 1e3
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(corpus), N_DRAWS):
        _ = corpus[int(i)].text  # touch the passage (pages it in)
    result = {"single_ms": single_ms, "batch_ms": batch_ms, **{f"{k}_mb": v for k, v in memory().items()}}
    if hold:  # stay alive (and keep the pages) until the parent has measured every process
        print(json.dumps(result), flush=True)
        sys.stdin.read()
    return result


def phase_vocab_build(words: int, workdir: Path) -> dict:
    """A corpus whose vocabulary has ``words`` distinct words (random letter strings, one passage each, with a
    common word so that no passage is empty of known words) and its index."""
    from search_env.data.corpus import Corpus, Passage
    from search_env.retrieval.bm25 import BM25Retriever

    rng = np.random.default_rng(5)
    letters = np.array(list("bcdfghjklmnpqrstvwxz"))
    vocab = {"".join(w) for w in letters[rng.integers(0, len(letters), (words + words // 10, 9))]}
    corpus = Corpus([Passage(f"v{i}", "", f"{w} lexicon") for i, w in enumerate(sorted(vocab)[:words])], name="vocab")
    BM25Retriever(corpus, cache=workdir / f"vocab-{words}", mmap=True)
    corpus.to_jsonl(workdir / f"vocab-{words}.jsonl")
    return {"words": len(corpus)}


def phase_vocab_load(words: int, workdir: Path) -> dict:
    """What loading that index (the analyzer's word, stem and id dictionaries, bm25s's vocabulary) costs a process
    beyond the corpus: anonymous memory, per word."""
    from search_env.data.corpus import load_corpus
    from search_env.retrieval.bm25 import BM25Retriever

    corpus = load_corpus(workdir / f"vocab-{words}.jsonl", mmap=True)
    before = memory()["anon"]
    retriever = BM25Retriever.load(workdir / f"vocab-{words}", corpus, mmap=True)
    retriever.search("lexicon", 3)
    anon = memory()["anon"] - before
    return {"words": words, "vocab_anon_mb": anon, "bytes_per_word": anon * MB / words}


# -- measured from this process ----------------------------------------------------------------------


def run_phase(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve(n: int, workdir: Path) -> dict:
    """``search-env serve --mmap`` in its own process, queried over HTTP like an env; its memory while serving."""
    import psutil

    from search_env.data.corpus import load_corpus
    from search_env.retrieval.http import HTTPRetriever

    server, url, t_start = start_server("--corpus", str(jsonl(n, workdir)), "--mmap", "--retriever", "bm25",
                                        "--index-dir", str(workdir / f"bm25-{n}"), "--max-batch", str(BATCH))
    try:
        process = psutil.Process(server.pid)
        idle = process.memory_full_info()
        client = HTTPRetriever(url, timeout=120, retries=0)
        singles, batches = queries_for(load_corpus(jsonl(n, workdir), mmap=True))
        single_ms = per_call(lambda q: client.search(q, 10), singles) * 1e3
        batch_ms = per_call(lambda b: client.batch_search(b, 10), batches) * 1e3
        busy = process.memory_full_info()
        return {"start_s": t_start, "idle_rss_mb": idle.rss / MB, "rss_mb": busy.rss / MB, "pss_mb": busy.pss / MB,
                "uss_mb": busy.uss / MB, "single_ms": single_ms, "batch_ms": batch_ms}
    finally:
        server.terminate()
        server.wait(timeout=60)


def shared(n: int, workdir: Path, processes: int) -> dict:
    procs = [subprocess.Popen([sys.executable, __file__, "--phase", "query_mapped_hold", str(n), str(workdir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ)
             for _ in range(processes)]
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.stdin.close()
        p.wait(timeout=120)
    return {"processes": processes, "rss_total_mb": sum(r["rss_mb"] for r in results),
            "pss_total_mb": sum(r["pss_mb"] for r in results), "anon_total_mb": sum(r["anon_mb"] for r in results)}


def measure(n: int, workdir: Path, processes: int, old: bool) -> dict:
    start = time.perf_counter()
    result = {"generate": run_phase("generate", str(n), str(workdir)),
              "build": run_phase("build_new", str(n), str(workdir))}
    if old:
        result["build_old"] = run_phase("build_old", str(n), str(workdir))
        result["env_old"] = run_phase("query_memory", str(n), str(workdir))
    result["env"] = run_phase("query_mapped", str(n), str(workdir))
    result["server"] = serve(n, workdir)
    result["shared"] = shared(n, workdir, processes)
    result["total_s"] = time.perf_counter() - start
    for file in workdir.glob(f"corpus-{n}.jsonl"):  # the next size needs the disk more than this needs keeping
        file.unlink()
    return result


def report(n: int, r: dict) -> None:
    b, e, s, m = r["build"], r["env"], r["server"], r["shared"]
    print(f"\n== {n:,} passages ({r['generate']['jsonl_mb']:,.0f} MB of JSONL; {r['total_s']:.0f} s) ==")
    print(f"build: map the corpus {b['map_corpus_s']:.0f} s ({b['mapped_disk_mb']:,.0f} MB on disk), index "
          f"{b['build_s']:.0f} s, peak {b['peak_mb']:,.0f} MB, index on disk {b['index_disk_mb']:,.0f} MB")
    if "build_old" in r:
        o = r["build_old"]
        print(
            f"build, old (corpus in memory, bm25s index over all token lists): {o['build_s']:.0f} s, peak "
            f"{o['peak_mb']:,.0f} MB (the corpus alone {o['corpus_rss_mb']:,.0f} MB); same top-10 as the new index on "
            f"{N_SINGLE} queries: {o['same_top10']:.3f}"
        )
    rows = [("env process, corpus mapped", e)] + (
        [("env process, corpus in memory (old)", r["env_old"])] if "env_old" in r else []
    )
    for label, q in rows:
        print(f"{label}: RSS {q['rss_mb']:,.0f} MB (anon {q['anon_mb']:,.0f}, file pages {q['mapped_mb']:,.0f}), PSS "
              f"{q['pss_mb']:,.0f} MB; search {q['single_ms']:.1f} ms single, {q['batch_ms'] / BATCH:.1f} ms/query in "
              f"batches of {BATCH}")
    print(f"server (search-env serve --mmap): up in {s['start_s']:.1f} s, RSS idle {s['idle_rss_mb']:,.0f} MB, while "
          f"serving {s['rss_mb']:,.0f} MB (PSS {s['pss_mb']:,.0f}, USS {s['uss_mb']:,.0f}); over HTTP "
          f"{s['single_ms']:.1f} ms single, {s['batch_ms'] / BATCH:.1f} ms/query in batches of {BATCH}")
    print(f"{m['processes']} env processes at once: RSS summed {m['rss_total_mb']:,.0f} MB, PSS summed "
          f"{m['pss_total_mb']:,.0f} MB (anon {m['anon_total_mb']:,.0f} MB)")


def projection(results: dict[int, dict]) -> None:
    """Linear in the growth from the smallest to the largest size measured."""
    (n1, a), (n2, b) = min(results.items()), max(results.items())
    quantities = {
        "build peak MB": lambda r: r["build"]["peak_mb"],
        "build s": lambda r: r["build"]["build_s"] + r["build"]["map_corpus_s"],
        "index on disk MB": lambda r: r["build"]["index_disk_mb"],
        "mapped corpus on disk MB": lambda r: r["build"]["mapped_disk_mb"],
        "env process RSS MB": lambda r: r["env"]["rss_mb"],
        "env process anon MB": lambda r: r["env"]["anon_mb"],
        "server RSS MB (serving)": lambda r: r["server"]["rss_mb"],
        "single search ms": lambda r: r["env"]["single_ms"],
        "batched search ms/query": lambda r: r["env"]["batch_ms"] / BATCH,
        f"{a['shared']['processes']} env processes PSS MB": lambda r: r["shared"]["pss_total_mb"],
    }
    print(f"\n== projection to {WIKI18:,} passages (linear in the {n1:,} -> {n2:,} growth) ==")
    print(f"{'':>34} {n1:>12,} {n2:>12,} {WIKI18:>12,}")
    for name, get in quantities.items():
        v1, v2 = get(a), get(b)
        print(f"{name:>34} {v1:>12,.1f} {v2:>12,.1f} {v2 + (v2 - v1) / (n2 - n1) * (WIKI18 - n2):>12,.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--processes", type=int, default=16, help="env processes alive at once, sharing the corpus")
    parser.add_argument("--old-at", type=int, help="size at which the old code is measured too (default: the first)")
    parser.add_argument("--workdir", help="keep indexes here (default: a temporary folder)")
    parser.add_argument("--vocab-words", type=int, default=1_000_000,
                        help="distinct words of the vocabulary whose per-process cost is measured (0: skip)")
    parser.add_argument("--json", help="also write every measurement here")
    parser.add_argument("--phase", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, n, workdir = args.phase[0], int(args.phase[1]), Path(args.phase[2])
        run = {
            "generate": phase_generate,
            "build_new": phase_build_new,
            "build_old": phase_build_old,
            "query_memory": lambda n, w: phase_query(n, w, False),
            "query_mapped": lambda n, w: phase_query(n, w, True),
            "query_mapped_hold": lambda n, w: phase_query(n, w, True, hold=True),
            "vocab_build": phase_vocab_build,
            "vocab_load": phase_vocab_load,
        }[name]
        print(json.dumps(run(n, workdir)))
        return
    old_at = args.old_at or args.passages[0]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        os.environ["SEARCH_ENV_CACHE"] = str(
            workdir / "cache"
        )  # mapped corpora go here, for every phase and the server
        print(f"{os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.0f} GiB; "
              f"load average before {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        results = {n: measure(n, workdir, args.processes, old=n == old_at) for n in args.passages}
        vocab = None
        if args.vocab_words:
            run_phase("vocab_build", str(args.vocab_words), str(workdir))
            vocab = run_phase("vocab_load", str(args.vocab_words), str(workdir))
        for n, r in results.items():
            report(n, r)
        if len(results) > 1:
            projection(results)
        if vocab:
            print(f"\nvocabulary: loading an index with {vocab['words']:,} distinct words costs a process "
                  f"{vocab['vocab_anon_mb']:,.0f} MB of anonymous memory ({vocab['bytes_per_word']:.0f} bytes a word); "
                  f"the corpora above have {results[min(results)]['build'].get('vocab_words', 0):,} distinct words")
        if args.json:
            Path(args.json).write_text(
                json.dumps({**{str(n): r for n, r in results.items()}, "vocab": vocab}, indent=1)
            )
        print(f"\nload average after {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    r = results[old_at]
    new, old = r["env"], r["env_old"]
    print(f"env-process RSS at {old_at:,} passages, new / old: {new['rss_mb']:.0f} / {old['rss_mb']:.0f} MB = "
          f"{new['rss_mb'] / old['rss_mb']:.2f}x; build peak new / old: {r['build']['peak_mb']:.0f} / "
          f"{r['build_old']['peak_mb']:.0f} MB = {r['build']['peak_mb'] / r['build_old']['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
