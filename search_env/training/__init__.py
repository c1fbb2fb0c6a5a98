"""Pieces a trainer built on the env uses: token-exact rollouts of a Hugging Face causal LM, the held-out split,
a dataclass as the command line, and a run folder's timings, metrics and checkpoints."""
