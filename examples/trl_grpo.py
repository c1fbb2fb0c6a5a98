"""GRPO with TRL's ``GRPOTrainer`` on the search env's tools, CleanRL style: ``Args`` (the command line), then
``main``.

TRL drives :class:`search_env.integrations.trl.SearchToolEnv` through ``environment_factory``: the model calls the
tools ``search(query)`` and ``answer(text)`` through its chat template; each rollout's reward is the outcome (EM)
plus ``ig_weight * sum(IG)`` of its searches, IG scored by a frozen scorer in the env (the bundled SmolLM2 by
default) against random passages shared by the rollouts of a batch. The bundled model's own chat template cannot
render tools, so :func:`~search_env.integrations.trl.with_tool_template` gives it TRL's Qwen2.5 template.
Needs ``pip install "search_env[trl]"`` (Python >= 3.11).

    python examples/trl_grpo.py --model bundled --max-steps 20         # offline, the bundled SmolLM2-135M-Instruct
    python examples/trl_grpo.py --model Qwen/Qwen3-0.6B --ig-weight 0  # outcome-only GRPO, on a GPU
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from search_env.integrations.trl import SearchEnvFactory, checkpointing_setting, make_dataset, with_tool_template
from search_env.training.args import arg, parse_args
from search_env.training.rollout import build_model


@dataclass
class Args:
    output_dir: str = arg("runs/trl_grpo", "where TRL writes its logs and checkpoints")
    seed: int = arg(1, "seed of sampling, data order and the IG draws")
    model: str = arg("bundled", "a Hugging Face causal LM (hub name or folder), bundled, or tiny-random (smoke tests)")
    questions: str | None = arg(None, "FlashRAG QA JSONL (default: the built-in world's questions)")
    corpus: str | None = arg(None, "FlashRAG corpus JSONL (default: the built-in world's corpus)")
    limit: int | None = arg(None, "train on the first N questions only")
    topk: int = arg(3, "passages per search")
    max_searches: int = arg(3, "searches allowed per episode")
    ig_weight: float = arg(0.1, "weight of the summed IG in the reward (0: outcome-only GRPO; no scorer is loaded)")
    ig_scorer: str = arg("bundled", "the frozen IG scorer: bundled, a model name or folder, or a vLLM server URL")
    num_generations: int = arg(4, "rollouts per question (the GRPO group)")
    batch_size: int = arg(8, "rollouts per device and step (a multiple of --num-generations)")
    max_steps: int = arg(20, "optimizer steps")
    max_completion_length: int = arg(512, "tokens per rollout, tool responses included")
    max_tool_calls: int = arg(4, "tool-calling iterations per rollout")
    learning_rate: float = arg(1e-6, "AdamW learning rate")
    temperature: float = arg(1.0, "sampling temperature")
    save_steps: int = arg(0, "save a checkpoint every N steps (0: none)")
    report_to: str = arg("none", "TRL's loggers: none, tensorboard, wandb")


def main(argv=None) -> dict:
    args = parse_args(Args, argv, description=__doc__.split("\n\n")[0])
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory is experimental in TRL 1.16
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = build_model(args.model, args.seed)
    with_tool_template(tokenizer)
    dataset = make_dataset(args.questions, topk=args.topk, max_searches=args.max_searches, limit=args.limit)
    factory = SearchEnvFactory(args.corpus, topk=args.topk, max_searches=args.max_searches, ig_weight=args.ig_weight,
                               scorer=args.ig_scorer if args.ig_weight else None, seed=args.seed)
    gpu = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=args.output_dir, seed=args.seed, use_cpu=not gpu, bf16=gpu, **checkpointing_setting(GRPOConfig, gpu),
        per_device_train_batch_size=args.batch_size, num_generations=args.num_generations, max_steps=args.max_steps,
        max_completion_length=args.max_completion_length, max_tool_calling_iterations=args.max_tool_calls,
        learning_rate=args.learning_rate, temperature=args.temperature, logging_steps=1, report_to=args.report_to,
        save_strategy="steps" if args.save_steps else "no", save_steps=args.save_steps or 500,
    )
    trainer = GRPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                          environment_factory=factory)
    trainer.train()

    steps = [log for log in trainer.state.log_history if "rewards/SearchToolEnv/mean" in log]
    for log in steps:
        calls, loss = log.get("tools/call_frequency", 0.0), log.get("loss", float("nan"))
        print(f"step {log['step']}: reward {log['rewards/SearchToolEnv/mean']:+.3f}  "
              f"tool calls/rollout {calls:.2f}  loss {loss:.4f}")
    summary = {"steps": len(steps), "reward": [log["rewards/SearchToolEnv/mean"] for log in steps],
               "tool_calls": [log.get("tools/call_frequency", 0.0) for log in steps]}
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{len(steps)} GRPO steps; summary in {Path(args.output_dir) / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
