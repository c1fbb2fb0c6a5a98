"""SkyRL dataset for search_env: ``train.parquet`` and ``validation.parquet`` (a fixed held-out split), rows as
``search_env.integrations.skyrl.dataset_rows`` writes them (prompt, env_class ``search_env``, reward_spec,
extra_info). Needs ``pip install "search_env[skyrl]"`` (pandas, pyarrow).

    python examples/skyrl/prepare_data.py --output-dir data/search_env   # the built-in world's questions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search_env.data import load_questions
from search_env.integrations import skyrl
from search_env.training.args import arg, parse_args
from search_env.training.splits import held_out_split


@dataclass
class Args:
    output_dir: str = arg("data/search_env", "where train.parquet and validation.parquet go")
    questions: str | None = arg(None, "FlashRAG QA JSONL (default: the built-in world's questions)")
    validation_size: int = arg(200, "questions held out for validation (a fixed split)")
    topk: int = arg(3, "passages per search, as the prompt states it")
    dialect: str = arg("search-r1", "tag dialect of the prompt: search-r1 or autorefine")


def main(argv=None) -> dict[str, int]:
    import pandas

    args = parse_args(Args, argv, description=__doc__.split("\n\n")[0])
    train, validation = held_out_split(load_questions(args.questions), args.validation_size)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in (("train", train), ("validation", validation)):
        rows = skyrl.dataset_rows(part, topk=args.topk, dialect=args.dialect)
        pandas.DataFrame(rows).to_parquet(out / f"{name}.parquet")
        counts[name] = len(rows)
    print(f"{counts['train']} train and {counts['validation']} validation rows in {out}")
    return counts


if __name__ == "__main__":
    main()
