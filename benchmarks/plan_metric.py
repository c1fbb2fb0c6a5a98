"""How ``search_env.plan.plan_quality`` scores natural-language plans against MuSiQue's decompositions as written
(``"#1 >> capital"``, ``"When was #1 crowned?"``).

The plans below were written by hand for the first 24 rows of ``musique_dev_migres200`` plus its first 3-hop row
and first two 4-hop rows (no row skipped), as a planner would write them before searching: sub-questions that ask
what the gold ones ask, referring to earlier answers without naming them ("that county"). Controls: the gold
sub-questions themselves (1.0 by construction), the question alone as a one-step plan, and each row's plan scored
against another row's decomposition (7 rows on, so not a near-duplicate neighbour). Last line: the ratio of the
hand-written plans' mean ``sub_question_f1`` to the question alone's (how far a real plan scores above none).

    python benchmarks/plan_metric.py [--data ../shared/data/musique_dev_migres200]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from search_env.data import load_questions
from search_env.plan import plan_quality

# row k of musique_dev_migres200 (id musique_dev_migres_<k>): the hand-written plan
PLANS = {
    0: ['Which county is Van Hook Township located in?', 'What is the county seat of that county?'],
    1: ['Who was the father of Edward Baring, 1st Baron Revelstoke?', "Who was that man's father?"],
    2: ["Who is Anna Benson's husband?", 'Which team did her husband play on?'],
    3: ['Which territory contains Bansaan Island?', 'On which island is that territory located?'],
    4: ["Who was the Liberal Party of Australia's longest-serving leader?",
        'What event made that leader Prime Minister?'],
    5: ['Which actress played Susan Walker in Miracle on 34th Street?', "Who is that actress's sibling?"],
    6: ['Which actress played the little girl in Miracle on 34th Street (1947)?', "Who is that actress's sibling?"],
    7: ['Which company was the top PC manufacturer in 1994?', 'Which company merged with it in 2002?'],
    8: ['Which team is Adam Hammill on?', 'Who has played for West Ham, Ajax and that team?'],
    9: ["Who was Mach's principle named after?", 'Who employed that person?'],
    10: ['Which physicist is the Mach number named after?', "Who was that physicist's employer?"],
    11: ["Who was Empress Wang's husband?", "Who was her husband's father?"],
    12: ["Who was Chiang Hsiao-wen's father?", 'Who is a child of that father?'],
    13: ['Who was the socialist candidate for president in 1912?',
        'Which political party was that candidate a member of?'],
    14: ['Which river does the Kichi Sipi Bridge cross?', 'Of which river is that river a tributary?'],
    15: ['Who published the abolitionist newspaper The North Star?', 'Who did that publisher marry?'],
    16: ["What is India's highest civilian honor?", 'Who received that honor before becoming President of India?'],
    17: ['Which award did Dhondo Keshav Karve receive?', 'Who received that award before becoming President of India?'],
    18: ['Which actor played Truman Capote in Capote?', 'What recognition did that actor receive?'],
    19: ['Which actress played the Fairy Godmother in Shrek 2?', "Who is that actress's spouse?"],
    20: ['Who is the sibling of Alice de Lusignan, Countess of Surrey?', 'When was that sibling crowned?'],
    21: ['Who was the King of England in 1950?', "Who played that king in The King's Speech?"],
    22: ['Which actress played Thelma in Thelma and Louise?',
        "Who played that actress's husband in A League of Their Own?"],
    23: ['Which actress played Thelma in Thelma and Louise?',
        'Which character did that actress play in A League of Their Own?'],
    122: ['Who wrote The Feminine Mystique?',
        'What nationality was that author?',
        'What is the average yearly income for people of that nationality?'],
    137: ['Where was Tenement founded?',
        'Which county is that place in?',
        'Which county shares a border with that county?',
        'What is the seat of that county?'],
    138: ['Where was Amy McKenzie born?',
        'Which county is that place in?',
        'Which county borders that county?',
        'What is the seat of that bordering county?'],
}


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "musique_dev_migres200"
    parser.add_argument("--data", default=str(default), help="a MuSiQue folder of FlashRAG JSONL (test.jsonl)")
    args = parser.parse_args(argv)
    rows = {q.id: q for q in load_questions(Path(args.data) / "test.jsonl")}
    by_id = {k: rows[f"musique_dev_migres_{k}"] for k in PLANS if f"musique_dev_migres_{k}" in rows}
    missing = sorted(set(PLANS) - set(by_id))
    if missing:
        raise SystemExit(f"{args.data}: rows {missing} not found (the plans are for musique_dev_migres200)")
    ids = list(PLANS)
    gold = {i: by_id[i].metadata["question_decomposition"] for i in ids}
    score = lambda plan, row: plan_quality(plan, gold[row])["sub_question_f1"]  # noqa: E731
    means = {
        "gold sub-questions as the plan": np.mean([score([g["question"] for g in gold[i]], i) for i in ids]),
        "the question alone as the plan": np.mean([score([by_id[i].question], i) for i in ids]),
        "hand-written plan, its own row": np.mean([score(PLANS[i], i) for i in ids]),
        "hand-written plan, another row": np.mean([score(PLANS[i], ids[(k + 7) % len(ids)])
                                                   for k, i in enumerate(ids)]),
    }
    print(f"{len(ids)} MuSiQue dev rows ({Path(args.data).name}); mean sub_question_f1:")
    for name, value in means.items():
        print(f"  {name:<32} {value:.3f}")
    wins = np.mean([score(PLANS[k], k) > score([by_id[k].question], k) for k in ids])
    print(f"rows where the hand-written plan beats the question alone: {wins:.2f}")
    ratio = means["hand-written plan, its own row"] / max(means["the question alone as the plan"], 1e-9)
    print(f"hand-written plan / question alone: {ratio:.2f}x")
    return means


if __name__ == "__main__":
    main()
