"""Adapters that let other trainers drive search_env.

- :mod:`search_env.integrations.trl`: a tool-calling environment for TRL's ``GRPOTrainer(environment_factory=...)``.

Submodules are imported on demand, so ``import search_env.integrations`` needs none of the trainers installed.
"""
