"""Adapters that let other trainers drive search_env.

- :mod:`search_env.integrations.trl`: a tool-calling environment for TRL's ``GRPOTrainer(environment_factory=...)``.
- :mod:`search_env.integrations.verl`: a verl agent loop (``"search_env_agent"``) with IG as per-turn rewards, and
  the advantage estimator ``"search_env_ig"``.

Submodules are imported on demand, so ``import search_env.integrations`` needs none of the trainers installed.
"""
