"""The tests' stand-ins, in one place: a scorer that needs no model, and tiny random Llama models on any vocabulary
(the bundled tokenizer's, usually), so that scoring and generation run in milliseconds."""

from __future__ import annotations

import numpy as np


class FakeScorer:
    """score = 1 if the answer is in the last documents block of the context, plus a length-based jitter
    so different contexts get different scores. Counts calls."""

    def __init__(self):
        self.calls = 0
        self.pairs = 0

    def score(self, contexts, answers):
        self.calls += 1
        self.pairs += len(contexts)
        out = []
        for context, answer in zip(contexts, answers):
            last = context.rsplit("<search>", 1)[-1]
            out.append(float(answer in last) + 1e-4 * (len(context) % 7))
        return np.array(out, dtype=np.float64)


def tiny_llama_config(vocab_size: int, *, layers: int = 2, hidden: int = 32, heads: int = 4, kv_heads: int = 2,
                      intermediate: int = 64, **config):
    """A ``LlamaConfig`` for a model of a few thousand parameters (``config``: any other Llama setting)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, intermediate_size=intermediate, **config)


def tiny_llama(vocab_size: int, *, seed: int | None = 0, **settings):
    """A random tiny Llama in eval mode, its weights drawn after ``torch.manual_seed(seed)`` (None: not reseeded)."""
    import torch
    from transformers import LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(vocab_size, **settings)).eval()


def bundled_tokenizer():
    """The bundled SmolLM2's tokenizer (49k tokens), for tiny models that read real text."""
    from transformers import AutoTokenizer

    from search_env.agents.models import bundled_model_dir

    return AutoTokenizer.from_pretrained(bundled_model_dir())
