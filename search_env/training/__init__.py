"""Trainer tools: turning episodes into per-token advantages, the self-distillation losses, and what a trainer
built on the env shares with the examples.

- :mod:`~search_env.training.credit`: ``Trajectory``, GRPO group advantages, IG on query tokens, loss masks.
- :mod:`~search_env.training.distill`: hindsight and sibling teacher prompts and their token-level losses.
- :mod:`~search_env.training.rollout`: token-exact rollouts of a Hugging Face causal LM through the vector env.
- :mod:`~search_env.training.splits`, :mod:`~search_env.training.args`, :mod:`~search_env.training.run`,
  :mod:`~search_env.training.plots`: the held-out split, a dataclass as the command line, a run folder's timings,
  metrics and checkpoints, and its curves.
"""
