"""Trainer tools: turning episodes into per-token advantages, and the self-distillation losses.

- :mod:`~search_env.training.credit`: ``Trajectory``, GRPO group advantages, IG on query tokens, loss masks.
- :mod:`~search_env.training.distill`: hindsight and sibling teacher prompts and their token-level losses.
"""
