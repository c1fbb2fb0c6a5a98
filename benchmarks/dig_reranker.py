"""InfoGain-RAG in miniature: DIG labels from the bundled SmolLM2-135M train a MiniLM reranker; does it rank gold
passages better than BM25's own order and than the untrained encoder?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dig_reranker.py [--out /work/runs/dig] [--train-limit 100]

1. Labels: for each question of the training sets (HotpotQA and MuSiQue, ``*_train_hipporag100``) the DIG rows of
   BM25's top ``--train-topk`` passages (:mod:`search_env.info_gain.dig`: InfoGain-RAG's confidence, label = DIG > 0),
   cached in ``--out/<set>.dig.jsonl`` (a rerun scores only the questions not there yet).
2. Training: the bundled MiniLM bi-encoder (query and passage share it; its lower layers frozen), score = cosine
   similarity times a learned scale, trained on InfoGain-RAG's two objectives: cross-entropy of each passage's label
   and, within each question, a margin ranking loss (CircleLoss-style LogSumExp) that puts each passage above those
   with a lower DIG.
3. Evaluation on the dev sets (``*_dev_migres200``): the AUC of ranking the gold supporting passages among BM25's top
   ``--dev-topk`` (pairs within a question, pooled), for BM25's order, the untrained encoder and the trained one,
   with percentile bootstrap intervals over questions. The last line is the trained/BM25 AUC ratio on both sets.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from search_env.data import load_corpus, load_questions
from search_env.info_gain.dig import dig_env, dig_scorer, label, ranking_auc
from search_env.retrieval import make_retriever
from search_env.retrieval.encoder import Encoder

SETS = {"hotpotqa": ("hotpotqa_train_hipporag100", "hotpotqa_dev_migres200"),
        "musique": ("musique_train_hipporag100", "musique_dev_migres200")}


def identity(collection) -> str:
    return f"{len(collection)} {collection.kind}, sha256 {collection.fingerprint[:16]}"


def load_set(folder: Path):
    return load_questions(folder / "test.jsonl"), load_corpus(str(folder / "corpus.jsonl"))


def dig_labels(data: Path, out: Path, name: str, limit: int, topk: int, scorer, progress: bool = False) -> list[dict]:
    """The DIG rows of the first ``limit`` training questions of ``name``, from (and into) the cache in ``out``."""
    questions, corpus = load_set(data / SETS[name][0])
    env = dig_env(questions, corpus, topk=topk)
    settings = {"questions": identity(questions), "corpus": identity(corpus), "retriever": "bm25", "scorer": "bundled"}
    out.mkdir(parents=True, exist_ok=True)
    done, _ = label(list(questions)[:limit], env, scorer, out / f"{name}.dig.jsonl", settings=settings,
                    progress=progress)
    return [row for rows in done.values() for row in rows]


def passage_text(passage) -> str:
    return f"{passage.title}\n{passage.text}"


def dev_rows(data: Path, name: str, limit: int, topk: int) -> list[dict]:
    """BM25's top ``topk`` passages of the first ``limit`` dev questions of ``name``, with their gold flags."""
    questions, corpus = load_set(data / SETS[name][1])
    retriever = make_retriever("bm25", corpus)
    rows = []
    for item in list(questions)[:limit]:
        gold = set(item.supporting_doc_ids)
        hits = retriever.search(item.question, topk)
        rows += [{"question_id": item.id, "question": item.question, "doc_id": hit.doc_id, "bm25": hit.score,
                  "gold": hit.doc_id in gold, "text": passage_text(hit)} for hit in hits]
    return rows


class TopLayer:
    """The encoder's last transformer layer, run (and fine-tuned) on the hidden states cached below it: what the
    encoder computes with its lower layers frozen, at a sixth of the cost."""

    def __init__(self, encoder: Encoder, texts: list[str], batch_size: int = 32):
        self.encoder, self.layer = encoder, copy.deepcopy(encoder.model.encoder.layer[-1])
        self.states: dict[str, torch.Tensor] = {}
        self.untrained: dict[str, np.ndarray] = {}
        order = sorted(set(texts), key=len)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                inputs = encoder.tokenizer(batch, padding=True, truncation=True, max_length=encoder.max_length,
                                           return_tensors="pt")
                out = encoder.model(**inputs, output_hidden_states=True)
                vectors = pool(out.last_hidden_state, inputs["attention_mask"]).numpy()
                for k, text in enumerate(batch):
                    n = int(inputs["attention_mask"][k].sum())
                    self.states[text] = out.hidden_states[-2][k, :n].clone()
                    self.untrained[text] = vectors[k]
        check = order[:8]
        with torch.inference_mode():
            again = self.vectors(check).numpy()
        if not np.allclose(again, np.stack([self.untrained[t] for t in check]), atol=1e-4):
            raise RuntimeError("the last layer on cached states does not reproduce the encoder's vectors")

    def vectors(self, texts: list[str]) -> torch.Tensor:
        """Pooled, normalised vectors of ``texts`` (cached) through the (possibly fine-tuned) last layer."""
        width = max(len(self.states[t]) for t in texts)
        hidden = torch.zeros(len(texts), width, self.encoder.dim)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        for k, text in enumerate(texts):
            hidden[k, : len(self.states[text])] = self.states[text]
            mask[k, : len(self.states[text])] = 1
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        out = self.layer(hidden, attention_mask=additive)
        return pool(out[0] if isinstance(out, tuple) else out, mask)


def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MiniLM's sentence vector: the masked mean of the last hidden states, L2-normalised (as :class:`Encoder`)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)


def train(top: TopLayer, groups: list[dict], *, epochs: int, lr: float, batch: int, gamma: float, margin: float,
          beta: float, min_gap: float, seed: int) -> list[float]:
    """Fine-tune the last layer on DIG groups (a question, its passages, their DIG and labels); the mean loss of
    each epoch. Loss per question: BCE of each passage's label from ``scale * cos + bias``, plus ``beta`` times
    ``log(1 + sum exp(gamma * (cos_j - cos_i + margin)))`` over pairs whose DIG differs by more than ``min_gap``."""
    torch.manual_seed(seed)
    scale, bias = torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-5.0))
    optimizer = torch.optim.AdamW([*top.layer.parameters(), scale, bias], lr=lr)
    rng = np.random.default_rng(seed)
    top.layer.train()
    losses = []
    for _ in range(epochs):
        total = 0.0
        order = rng.permutation(len(groups))
        for start in range(0, len(order), batch):
            chosen = [groups[i] for i in order[start : start + batch]]
            loss = torch.zeros(())
            for g in chosen:
                vectors = top.vectors([g["question"], *g["passages"]])
                cos = vectors[1:] @ vectors[0]
                labels = torch.tensor(g["labels"], dtype=torch.float32)
                loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(scale * cos + bias, labels)
                dig = torch.tensor(g["dig"])
                better = (dig[:, None] - dig[None, :]) > min_gap  # [i, j]: passage i should rank above j
                if better.any():
                    gaps = gamma * (cos[None, :] - cos[:, None] + margin)[better]
                    loss = loss + beta * torch.nn.functional.softplus(torch.logsumexp(gaps, 0))
            loss = loss / len(chosen)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(chosen)
        losses.append(total / len(groups))
    top.layer.eval()
    return losses


def auc_with_interval(rows: list[dict], keys: list[str], draws: int, seed: int) -> dict:
    """Pooled AUC per key, its 95% percentile bootstrap interval over questions, and the paired intervals of each
    key's difference from the keys before it."""
    by_question: dict[str, list[dict]] = {}
    for row in rows:
        by_question.setdefault(row["question_id"], []).append(row)
    right = np.zeros((len(by_question), len(keys)))
    pairs = np.zeros(len(by_question))
    for q, group in enumerate(by_question.values()):
        for k, key in enumerate(keys):
            auc, n = ranking_auc(group, key)
            right[q, k], pairs[q] = (auc * n if n else 0.0), n
    right, pairs = right[pairs > 0], pairs[pairs > 0]  # questions with a gold and a non-gold passage
    samples = np.random.default_rng(seed).integers(len(pairs), size=(draws, len(pairs)))
    boot = right[samples].sum(1) / np.maximum(pairs[samples].sum(1), 1)[:, None]  # [draw, key]
    out = {"questions": len(pairs), "pairs": int(pairs.sum())}
    for k, key in enumerate(keys):
        out[key] = {"auc": float(right[:, k].sum() / pairs.sum()),
                    "interval": np.percentile(boot[:, k], [2.5, 97.5]).tolist()}
        for j, other in enumerate(keys[:k]):
            out[key]["minus_" + other] = np.percentile(boot[:, k] - boot[:, j], [2.5, 97.5]).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("runs/dig_reranker"), help="DIG label cache and results")
    parser.add_argument("--sets", default="hotpotqa,musique")
    parser.add_argument("--train-limit", type=int, default=100, help="training questions per set (all: 100)")
    parser.add_argument("--dev-limit", type=int, default=200, help="dev questions per set (all: 200)")
    parser.add_argument("--train-topk", type=int, default=5)
    parser.add_argument("--dev-topk", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=8, help="questions per step")
    parser.add_argument("--gamma", type=float, default=10.0, help="scale of the ranking loss's LogSumExp")
    parser.add_argument("--margin", type=float, default=0.05, help="cosine margin of the ranking loss")
    parser.add_argument("--beta", type=float, default=1.0, help="weight of the ranking loss against the BCE")
    parser.add_argument("--min-gap", type=float, default=1e-3, help="DIG gap for a pair to enter the ranking loss")
    parser.add_argument("--max-length", type=int, default=128, help="encoder tokens per text")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.sets.split(",")
    start = time.time()
    scorer = dig_scorer("bundled")
    train_rows = {n: dig_labels(args.data, args.out, n, args.train_limit, args.train_topk, scorer) for n in names}
    t_labels = time.time() - start
    corpora = {n: load_set(args.data / SETS[n][0])[1] for n in names}
    groups = []
    for n, rows in train_rows.items():
        by_question: dict[str, list[dict]] = {}
        for row in rows:
            by_question.setdefault(row["question_id"], []).append(row)
        groups += [{"question": g[0]["question"], "passages": [passage_text(corpora[n].get(r["doc_id"])) for r in g],
                    "dig": [r["dig"] for r in g], "labels": [r["label"] for r in g]} for g in by_question.values()]
    dev = {n: dev_rows(args.data, n, args.dev_limit, args.dev_topk) for n in names}
    texts = [t for g in groups for t in (g["question"], *g["passages"])]
    texts += [t for rows in dev.values() for r in rows for t in (r["question"], r["text"])]
    encoder = Encoder("bundled", max_length=args.max_length)
    top = TopLayer(encoder, texts)
    t_encode = time.time() - start - t_labels
    for rows in dev.values():
        for r in rows:
            r["untrained"] = float(top.untrained[r["question"]] @ top.untrained[r["text"]])
    losses = train(top, groups, epochs=args.epochs, lr=args.lr, batch=args.batch, gamma=args.gamma,
                   margin=args.margin, beta=args.beta, min_gap=args.min_gap, seed=args.seed)
    t_train = time.time() - start - t_labels - t_encode
    with torch.inference_mode():
        for rows in dev.values():
            for r in rows:
                q, p = top.vectors([r["question"], r["text"]])
                r["trained"] = float(q @ p)
    keys = ["bm25", "untrained", "trained"]
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "losses": losses,
               "train": {n: {"questions": len({r["question_id"] for r in rows}), "rows": len(rows),
                             "helpful": sum(r["label"] for r in rows), "dig_auc": ranking_auc(rows, "dig")[0],
                             "bm25_auc": ranking_auc(rows, "bm25")[0]} for n, rows in train_rows.items()},
               "dev": {n: auc_with_interval(rows, keys, args.bootstrap, args.seed) for n, rows in dev.items()},
               "dev_rows": {n: [{k: r[k] for k in ("question_id", "doc_id", "gold", *keys)} for r in rows]
                            for n, rows in dev.items()},
               "seconds": {"labels": t_labels, "encode": t_encode, "train": t_train, "total": time.time() - start}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"training labels: {json.dumps(results['train'])}; epoch losses {[round(x, 4) for x in losses]}")
    print(f"time: {', '.join(f'{k} {v:.0f}s' for k, v in results['seconds'].items())}")
    print(f"{'dev set':<10} {'questions':>9} {'pairs':>6}  " + "  ".join(f"{k + ' AUC [95% CI]':>24}" for k in keys))
    for n, r in results["dev"].items():
        cells = "  ".join(f"{r[k]['auc']:>7.3f} [{r[k]['interval'][0]:.3f}, {r[k]['interval'][1]:.3f}]" for k in keys)
        print(f"{n:<10} {r['questions']:>9} {r['pairs']:>6}  {cells}")
        for k, key in enumerate(keys):
            for other in keys[:k]:
                lo, hi = r[key]["minus_" + other]
                diff = r[key]["auc"] - r[other]["auc"]
                print(f"{'':<10} {key} - {other}: {diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print("trained / BM25 AUC: " + ", ".join(f"{n} {r['trained']['auc'] / r['bm25']['auc']:.3f}"
                                             for n, r in results["dev"].items()))


if __name__ == "__main__":
    main()
