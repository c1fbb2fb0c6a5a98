"""Warm start of a small LM search agent for the built-in world: a word-level tokenizer and a Llama-style model of a
couple of million parameters, built here (nothing is downloaded), then supervised fine-tuning on teacher
trajectories that the env itself plays. The result is a Hugging Face folder that ``examples/grpo_ig.py --model
<folder>`` loads.

1. **Tokenizer**: word-level (``tokenizers``), trained on the world's prompts, worked examples, passages, questions,
   answers and feedback. A space becomes ``▁`` and sticks to the word after it; tags (``<search>``, ``</answer>``,
   …, with their ``▁``) and newlines are single tokens, and decoding concatenates tokens, so the env's text
   round-trips exactly. Pad, unk and end-of-text tokens; no chat template (``chat_prompt`` uses the plain text).
2. **Teacher**: ``OraclePolicy(accuracy=p)`` searches the correct next entity with probability p, else another entity
   it has read about, then answers from what it found. Played through the env (``play_episode``) on the training
   part of ``search_env.training.splits.held_out_split`` (grpo_ig.py's held-out split), restricted to ``--hops``;
   with ``--max-questions N`` its first N questions only, ``three_way_split``'s warm part (``grpo_ig.py
   --warm-questions N`` then trains on the rest). In the plan dialect its ``<plan>`` is the gold decomposition: SFT
   on annotated plans (``--keep-correct``: only its right episodes). ``--trajectories self`` is the Plan paper's
   self-bootstrapping instead: the model itself (``--base-model``, one that sometimes succeeds) is sampled through
   grpo_ig's rollout, only its episodes that answered right after searching are kept, and it is fine-tuned on them,
   for ``--self-rounds`` rounds.
3. **SFT**: cross-entropy on the policy's turns (prompt and env text masked), with the model input exactly as
   ``grpo_ig.py`` builds it: ``chat_prompt(prompt)`` ids, then each turn's ids and each observation's ids. Plus
   (``--copy-weight``; 0 turns it off) the loss on env tokens that repeat a name or number already in the context:
   in-context copying, which the policy needs to search and answer with what it read and which ~13 policy tokens
   per episode teach too slowly to a model built from scratch; it teaches no world fact (each target is in the
   context already), so answers still have to come from retrieval. ``--rename`` (off by default) gives each episode
   fresh random names in each epoch, against memorising the training questions' chains; at the default budget it
   did worse here (held-out EM 0.00 and own-IG validity 0.77, against 0.02 and 0.94 without it).
4. **Report**, before and after: the policy's own IG validity (for N held-out questions, IG of a search for the
   answer-holding gold title vs an unrelated title, both scored by the policy, ``TransformersScorer(model, tok)``, on
   its own input; paired win rate, ~50% for a model that cannot read); after: greedy held-out EM, answer rate and
   valid-tag rate, as ``grpo_ig.py`` evaluates them (``search_env.training.rollout``).

``--base-model`` (``bundled``, a folder, ``tiny-random``) starts from a pretrained causal LM and its own tokenizer
instead (``benchmarks/gpu_ig_run.py`` warm-starts SmolLM2 so, on a GPU with ``--device cuda``, bf16-mixed).

The folder is cached under ``search_env._cache.cache_dir("testbed")``, keyed by every setting here and by the texts
the model reads (:func:`texts_fingerprint`); a second call with the same settings only prints the cached report.
An ``--output`` folder built with other settings or texts is built again. Its last line is ``warm-started model:
<folder>``.

    python benchmarks/study/warm_start.py               # the testbed's warm start (cached)
    python benchmarks/study/warm_start.py --dialect plan --max-new-tokens 40 --keep-correct   # oracle-written plans
    python benchmarks/study/warm_start.py --dialect plan --max-new-tokens 40 --trajectories self --base-model <that>
    python examples/grpo_ig.py --model <folder> --hops 2,3 --no-few-shot --learning-rate 1e-4
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from contextlib import nullcontext
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
import transformers

from search_env import (
    IGConfig,
    QADataset,
    SearchQAEnv,
    SearchQAVectorEnv,
    TransformersScorer,
    build_world,
    parse_action,
)
from search_env._cache import cache_dir, replace_dir
from search_env.agents.policy import STOP_STRINGS, OraclePolicy, chat_prompt, play_episode
from search_env.dialects import DIALECTS, get_dialect, invalid_feedback, search_block
from search_env.retrieval import Hit
from search_env.training.args import arg, parse_args
from search_env.training.rollout import build_model, rollout
from search_env.training.run import Timer, seed_everything
from search_env.training.splits import held_out_split

# The dialects whose text each tokenizer version was trained on; bump (add a version) when the tokenizer's design
# changes. Version 3 (the IG testbed's) stays what it was, so its warm start and runs are reproducible; the plan
# dialect's words (its prompt, "<plan>", sub-questions) came with version 4.
TOKENIZER_DIALECTS = {3: ("search-r1", "autorefine"), 4: ("search-r1", "autorefine", "plan")}
VERSION = 1  # bump when the teacher, the SFT or the report changes (with the tokenizer's, part of the cache key)
SPACE = "\u2581"  # "▁": a space, kept on the token that follows it
# Pre-tokens, after spaces became "▁": a tag, a newline, a word, a number (up to 4 digits), one other character.
PIECES = rf"{SPACE}?</?[A-Za-z]+>|\n|{SPACE}?[A-Za-z]+|{SPACE}?[0-9]{{1,4}}|{SPACE}?[^\sA-Za-z0-9{SPACE}]|{SPACE}+|\s"
NAMELIKE = rf"{SPACE}?([A-Z][A-Za-z']*|[0-9]+)"  # tokens of names and numbers (copy targets)
SPECIAL = {"pad_token": "<|pad|>", "unk_token": "<|unk|>", "eos_token": "<|endoftext|>"}


@dataclasses.dataclass
class Args:
    output: str | None = arg(None, "folder to write (default: the cache, keyed by the settings below)")
    force: bool = arg(False, "rebuild even when the folder is cached")
    seed: int = arg(0, "seed of the model's initialisation, the teacher's draws and SFT's order")
    threads: int = arg(1, "torch threads (1: on a shared 2-core machine two threads can run 20x slower, not 2x faster)")
    device: str = arg("cpu", "cpu, cuda or auto")
    precision: str = arg("auto", "fp32 | bf16-mixed (fp32 weights, bf16 compute); auto: bf16-mixed on GPU, fp32 on CPU")
    # world and env: pass the same to grpo_ig.py
    world_seed: int = arg(0, "seed of the built-in world")
    eval_size: int = arg(200, "held-out questions before the hop filter (grpo_ig's --eval-size: the same split)")
    hops: str = arg("2,3", "hop counts of the questions, comma-separated (grpo_ig's --hops)")
    dialect: str = arg("search-r1", "tag dialect: search-r1, autorefine or plan (the teacher then writes a <plan> of "
                                     "sub-questions before its first search)")
    topk: int = arg(3, "passages per search")
    max_turns: int = arg(4, "turns per episode")
    few_shot: bool = arg(False, "show the dialect's worked example in the prompt")
    # model: built here for the world's word-level tokenizer, or a pretrained one with its own tokenizer
    base_model: str | None = arg(None, "start from this causal LM (grpo_ig's --model: bundled, a folder, tiny-random) "
                                       "instead of building one; the sizes below then do not apply")
    hidden_size: int = arg(128, "model width")
    layers: int = arg(4, "transformer layers")
    heads: int = arg(4, "attention heads")
    intermediate_size: int = arg(512, "MLP width")
    # teacher and SFT
    accuracy: float = arg(0.5, "teacher's probability of searching the correct next entity")
    episodes_per_question: int = arg(4, "teacher episodes per training question (different noise draws)")
    max_questions: int | None = arg(None, "use only this many training questions (tests)")
    epochs: int = arg(8, "passes over the teacher episodes")
    batch_size: int = arg(8, "episodes per optimiser step")
    learning_rate: float = arg(3e-3, "AdamW peak learning rate (linear warm-up over 5% of steps, cosine decay)")
    copy_weight: float = arg(1.0, "weight of the loss on env tokens that repeat a name or number in the context "
                                  "(0: none)")
    trajectories: str = arg("oracle", "who plays the SFT episodes: oracle (OraclePolicy at --accuracy; in the plan "
                                       "dialect its plan is the gold decomposition) or self (the model, sampled; "
                                       "only episodes that answered right after searching are kept: the Plan paper's "
                                       "self-bootstrapping; needs --base-model)")
    keep_correct: bool = arg(False, "with --trajectories oracle: SFT only on the oracle's episodes that answered right "
                                    "(oracle-written plans, not self-bootstrapping)")
    self_rounds: int = arg(1, "with --trajectories self: rounds of sampling the model, keeping its right episodes "
                              "and fine-tuning on them")
    temperature: float = arg(1.0, "with --trajectories self: sampling temperature (no top-k or top-p, as grpo_ig)")
    rename: bool = arg(False, "give each episode, in each epoch, random names (consistently within it): SFT then "
                             "teaches copying names from the context, not the world's facts")
    # reports
    ig_questions: int = arg(64, "held-out questions for the IG validity check")
    eval_questions: int = arg(64, "held-out questions for greedy EM (grpo_ig's --eval-questions)")
    max_new_tokens: int = arg(12, "tokens per generated turn in the evaluation (grpo_ig's --max-new-tokens)")


# ------------------------------------------------------------------------------- tokenizer and model


def tokenizer_version(dialect: str) -> int:
    """The oldest tokenizer version that knows ``dialect``'s words."""
    for version, dialects in sorted(TOKENIZER_DIALECTS.items()):
        if dialect in dialects:
            return version
    known = ", ".join(TOKENIZER_DIALECTS[max(TOKENIZER_DIALECTS)])
    raise SystemExit(f"--dialect {dialect}: the testbed's tokenizer knows {known}")


def world_texts(world, topk: int, version: int = 3) -> list[str]:
    """What the agent and the env write in this world: prompts (each of the version's dialects, with its worked
    example), passages as documents blocks, searches, plans (version 4), answers and feedback."""
    texts = []
    for dialect in (DIALECTS[name] for name in TOKENIZER_DIALECTS[version]):
        texts.append(dialect.worked_example())
        texts += [dialect.prompt(q.question, topk) for q in world.questions]
        texts += [dialect.documents_block([Hit(p.id, p.title, p.text, 0.0)]) for p in world.corpus]
    # OraclePolicy's turns
    texts += [f"<think>I should look up {p.title}.</think>\n{search_block(p.title)}" for p in world.corpus]
    texts += [f"<answer> {a} </answer>" for q in world.questions for a in q.golden_answers]
    bad = ["no tags", "<search> x", "<answer></answer>", "<search> a <answer> b </answer> </search>",
           "<think><search> a </search></think>", "<answer> x", "<search></search>"]
    texts += [invalid_feedback(parse_action(b).message) for b in bad]
    if "plan" in TOKENIZER_DIALECTS[version]:
        texts += [OraclePolicy.plan_block(q, q.metadata.get("supporting_titles", [])) for q in world.questions]
        env = SearchQAEnv(questions=world.questions, corpus=world.corpus, ig=False, dialect="plan", max_turns=8)
        env.reset(seed=0)
        for bad in ("<search> a </search>", "<plan></plan><search> a </search>", "<plan> a <search> b </search>"):
            texts.append(env.step(bad)[0])  # the env's feedback on a missing, empty or unclosed plan
    return texts + ["abcdef"]  # transformers' StopStringCriteria probes the vocabulary with this word


def train_tokenizer(texts) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over ``texts`` (every pre-token seen once is in the vocabulary)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL["unk_token"]))
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PIECES), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.Fuse()])
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=1 << 20, min_frequency=1,
                                                             special_tokens=list(SPECIAL.values())))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **SPECIAL)


@lru_cache(maxsize=None)
def texts_fingerprint(world_seed: int, topk: int, version: int) -> str:
    """A hash of :func:`world_texts`: what the tokenizer is trained on and the warm-started model reads (prompts,
    documents blocks, feedback). A change to any of them (a dialect's instructions, say) makes a new tokenizer and
    a new warm start, instead of a cached model meeting a prompt it was not trained on."""
    texts = world_texts(build_world(seed=world_seed), topk, version)
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:8]


def load_tokenizer(world_seed: int, topk: int = 3, dialect: str = "search-r1"):
    """The world's tokenizer for ``dialect``, trained once and cached on disk."""
    version = tokenizer_version(dialect)
    texts = texts_fingerprint(world_seed, topk, version)
    folder = cache_dir("testbed") / f"tokenizer-world{world_seed}-topk{topk}-v{version}-{texts}"
    if not (folder / "tokenizer.json").exists():
        tokenizer = train_tokenizer(world_texts(build_world(seed=world_seed), topk, version))
        replace_dir(folder, tokenizer.save_pretrained, overwrite=True)
    return transformers.AutoTokenizer.from_pretrained(folder)


def new_model(tokenizer, args: Args):
    """A randomly initialised Llama-style causal LM for ``tokenizer``, with a clean generation config."""
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(args.seed)
    model = transformers.LlamaForCausalLM(config)
    model.generation_config = transformers.GenerationConfig(eos_token_id=[tokenizer.eos_token_id],
                                                            pad_token_id=tokenizer.pad_token_id)
    return model


# ----------------------------------------------------------------------------------- teacher and SFT


def teacher_episodes(tokenizer, questions, corpus, args: Args) -> tuple[list[tuple[list[int], list[bool]]], float]:
    """``episodes_per_question`` teacher episodes per question as ``(ids, loss mask)`` (the mask is True on the
    policy's turns), built as grpo_ig's rollout builds its input (only the right ones with ``keep_correct``); and
    the teacher's EM over all of them. In the plan dialect the teacher's first turn opens with its ``<plan>``."""
    env = SearchQAEnv(questions=QADataset(questions), corpus=corpus, topk=args.topk, max_turns=args.max_turns,
                      dialect=args.dialect, ig=False)
    teacher = OraclePolicy(questions, think=False, accuracy=args.accuracy, seed=args.seed, plan=args.dialect == "plan")
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    examples, ems = [], []
    for _ in range(args.episodes_per_question):
        for item in questions:
            prompt = get_dialect(args.dialect).prompt(item.question, args.topk)
            parts, seen = [], [len(prompt)]  # (text, is the policy's) in order, read off the transcript as it grows

            def on_step(text, *_, seen=seen, parts=parts):
                new, seen[0] = env.transcript[seen[0] :], len(env.transcript)
                assert new.startswith(text), "the env appends a turn's text as it was written"
                parts.extend([(text, True), (new[len(text) :], False)])

            ems.append(play_episode(env, teacher, options={"question_id": item.id}, on_step=on_step)["em"])
            if args.keep_correct and not ems[-1]:
                continue
            ids = encode(chat_prompt(tokenizer, prompt, dialect=args.dialect, few_shot=args.few_shot))
            mask = [False] * len(ids)
            for text, learn in parts[:-1]:  # the last observation (after the answer) is never read
                part_ids = encode(text) if text else []
                ids, mask = ids + part_ids, mask + [learn] * len(part_ids)
            examples.append((ids, mask))
    return examples, float(np.mean(ems))


def copy_targets(ids: list[int], mask: list[bool], namelike: np.ndarray) -> list[bool]:
    """The env tokens (mask False) that repeat a name or number already in the context: in-context copying, the
    skill the policy needs to search and answer with names it has read, with no world fact to learn (each target
    is in the context already)."""
    seen, out = set(), [False] * len(ids)
    for j, token in enumerate(ids):
        out[j] = bool(not mask[j] and namelike[token] and token in seen)
        seen.add(token)
    return out


def name_words(world, tokenizer, most: int = 12) -> tuple[np.ndarray, dict[int, int]]:
    """The tokens (``▁word``) of the capitalised words that make titles unique (in at most ``most`` titles: stems and
    first names, not "The", "University" or "Books"), and each one's space-less twin where the vocabulary has it."""
    counts = Counter(w for p in world.corpus for w in set(re.findall(r"[A-Z][a-z']+", p.title)))
    vocab = tokenizer.get_vocab()
    words = sorted(w for w, n in counts.items() if n <= most and SPACE + w in vocab)
    return np.array([vocab[SPACE + w] for w in words]), {vocab[SPACE + w]: vocab[w] for w in words if w in vocab}


def rename(ids: list[int], names: np.ndarray, twins: dict[int, int], rng: np.random.Generator) -> list[int]:
    """``ids`` with each name token replaced by a random other one, the same one wherever it occurs."""
    present = sorted(set(ids) & set(names.tolist()))
    new = rng.choice(names, size=len(present), replace=False).tolist()
    mapping = dict(zip(present, new))
    mapping.update({twins[a]: twins[b] for a, b in zip(present, new) if a in twins and b in twins})
    return [mapping.get(t, t) for t in ids]


def sft_loss(model, rows, pad_id: int, copy_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, policy loss)`` of right-padded ``rows`` ``(ids, policy mask, copy mask)``: the mean cross-entropy
    over the policy's tokens, plus ``copy_weight`` times the mean over the copy targets. The output layer runs
    only where a token is learnt (a third of the model's compute at every other position)."""
    width = max(len(row[0]) for row in rows)
    def pad(values, fill):
        return torch.tensor([list(v) + [fill] * (width - len(v)) for v in values], device=model.device)

    ids, attention = pad([r[0] for r in rows], pad_id), pad([[1] * len(r[0]) for r in rows], 0)
    policy = pad([r[1] for r in rows], False)[:, 1:]  # token j is predicted at position j - 1
    copy = pad([r[2] if copy_weight else [] for r in rows], False)[:, 1:] & ~policy
    learn = policy | copy
    hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1][learn]
    logits = model.get_output_embeddings()(hidden).float()
    ce = torch.nn.functional.cross_entropy(logits, ids[:, 1:][learn], reduction="none")
    on_policy = policy[learn]
    policy_loss = ce[on_policy].mean()
    return (policy_loss + copy_weight * ce[~on_policy].mean() if (~on_policy).any() else policy_loss), policy_loss


def sft(model, examples, args: Args, tokenizer, names: tuple[np.ndarray, dict[int, int]] | None = None,
        amp=nullcontext) -> list[float]:
    """AdamW on :func:`sft_loss` (``args.copy_weight``), warm-up over 5% of the steps then cosine decay; with ``names``
    (:func:`name_words`) each episode gets fresh random names in each epoch (:func:`rename`). Batches hold episodes
    of similar length (shuffled, then sorted within chunks of 8 batches). Returns the policy losses."""
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    namelike = np.array([bool(re.fullmatch(NAMELIKE, t)) for t in vocabulary])
    rows = [(ids, mask, copy_targets(ids, mask, namelike)) for ids, mask in examples]
    rng, size = np.random.default_rng(args.seed), args.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
    total = -(-len(rows) // size) * args.epochs
    schedule = transformers.get_cosine_schedule_with_warmup(optimizer, max(1, total // 20), total)
    model.train()
    losses = []
    for epoch in range(args.epochs):
        order = [int(i) for i in rng.permutation(len(rows))]
        chunks = [sorted(order[c : c + 8 * size], key=lambda i: len(rows[i][0]))
                  for c in range(0, len(order), 8 * size)]
        batches = [chunk[b : b + size] for chunk in chunks for b in range(0, len(chunk), size)]
        for b in rng.permutation(len(batches)):
            batch = [rows[i] if names is None else (rename(rows[i][0], *names, rng), *rows[i][1:]) for i in batches[b]]
            with amp():
                loss, policy_loss = sft_loss(model, batch, tokenizer.pad_token_id, args.copy_weight)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(policy_loss.item())
        print(f"  epoch {epoch + 1}/{args.epochs}: policy-token loss {np.mean(losses[-len(batches):]):.3f}", flush=True)
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------- reports


def ig_validity(model, tokenizer, items, corpus, args: Args) -> dict:
    """Per held-out question, IG of a first search for the answer-holding gold title and for an unrelated title (a
    random passage's, off the chain), from the same env seed, scored by the model on its own input (in the plan
    dialect both searches come after the teacher's plan)."""
    render = partial(chat_prompt, tokenizer, dialect=args.dialect, few_shot=args.few_shot)
    env = SearchQAEnv(questions=QADataset(items), corpus=corpus, topk=args.topk, max_turns=max(2, args.max_turns),
                      dialect=args.dialect, ig=IGConfig(n_random=3, render_prefix=render),
                      scorer=TransformersScorer(model, tokenizer))
    rng = np.random.default_rng(args.seed)
    gold, unrelated = [], []
    for i, item in enumerate(items):
        titles = item.metadata["supporting_titles"]
        other = next(t for t in (corpus[int(rng.integers(len(corpus)))].title for _ in range(100)) if t not in titles)
        pair = []
        plan = OraclePolicy.plan_block(item, titles) if args.dialect == "plan" else ""
        for title in (titles[-1], other):
            env.reset(seed=i, options={"question_id": item.id})
            pair.append(env.step(plan + search_block(title))[4]["ig"])
        if None not in pair:
            gold.append(pair[0])
            unrelated.append(pair[1])
    gold, unrelated = np.array(gold), np.array(unrelated)
    return {"n": int(gold.size), "win_rate": float(np.mean(gold > unrelated)), "ig_gold": float(gold.mean()),
            "ig_unrelated": float(unrelated.mean())}


def play(model, tokenizer, items, corpus, args: Args, *, group_size: int = 1, sample: bool = False, seed: int = 0,
         amp=nullcontext) -> tuple[list, list[dict]]:
    """``(trajectories, episodes)``: ``group_size`` episodes per question of ``items`` with grpo_ig.py's rollout, up
    to 32 at a time, greedy or sampled at ``args.temperature`` (no top-k or top-p)."""
    per_batch = max(1, 32 // group_size)
    venv = SearchQAVectorEnv(min(per_batch, len(items)) * group_size, questions=QADataset(items), corpus=corpus,
                             topk=args.topk, max_turns=args.max_turns, dialect=args.dialect, ig=False,
                             autoreset_mode="Disabled")
    stop = transformers.StoppingCriteriaList([transformers.StopStringCriteria(tokenizer, list(STOP_STRINGS))])
    config = dict(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0) if sample else dict(do_sample=False)
    gen_kwargs = dict(generation_config=transformers.GenerationConfig(
        **config, max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id), stopping_criteria=stop)
    prompt_text = partial(chat_prompt, tokenizer, dialect=args.dialect, few_shot=args.few_shot)
    trajectories, episodes = [], []
    for s in range(0, len(items), per_batch):
        t, e = rollout(model, tokenizer, venv, items[s : s + per_batch], group_size=group_size, seed=seed,
                       gen_kwargs=gen_kwargs, prompt_text=prompt_text, timer=Timer(), amp=amp)
        trajectories, episodes = trajectories + t, episodes + e
    return trajectories, episodes


def self_episodes(model, tokenizer, items, corpus, args: Args, seed: int = 0, amp=nullcontext):
    """The Plan paper's self-bootstrapping data: ``episodes_per_question`` sampled episodes of the model itself per
    question, kept as ``(ids, loss mask)`` (the mask True on its own turns, the ids as it generated them) when they
    answered right after at least one search (in the plan dialect a search needs a plan). Returns the kept examples,
    the sampled EM and the number sampled."""
    trajectories, episodes = play(model, tokenizer, items, corpus, args, group_size=args.episodes_per_question,
                                  sample=True, seed=seed, amp=amp)
    kept = [(t.input_ids, t.loss_mask().tolist()) for t, e in zip(trajectories, episodes)
            if e["em"] and e["searches"] >= 1]
    return kept, float(np.mean([e["em"] for e in episodes])), len(episodes)


def self_bootstrap(model, tokenizer, items, corpus, args: Args, timer: Timer, amp=nullcontext):
    """``args.self_rounds`` rounds of :func:`self_episodes` then :func:`sft` on what was kept. Returns the SFT
    losses and, per round, the sampled EM and the episodes sampled and kept.

    A later round that keeps no episode ends the bootstrapping there (the earlier rounds' SFT stands).

    Raises:
        SystemExit: the first round keeps no episode (the model never succeeds: start from one that sometimes does)."""
    losses, rounds = [], []
    for r in range(args.self_rounds):
        model.eval()
        with timer("teacher"), torch.no_grad():
            examples, em, n = self_episodes(model, tokenizer, items, corpus, args, seed=r, amp=amp)
        rounds.append({"em": em, "sampled": n, "kept": len(examples)})
        print(f"round {r + 1}/{args.self_rounds}: the model's own episodes EM {em:.3f}, {len(examples)} of {n} kept "
              f"(right after searching); SFT:", flush=True)
        if not examples and r:
            print(f"round {r + 1} kept no episode: self-bootstrapping stops after round {r}", flush=True)
            break
        if not examples:
            raise SystemExit(f"--trajectories self: none of the model's {n} sampled episodes answered right after "
                             f"searching (round {r + 1}); self-bootstrapping needs a seed model that sometimes "
                             f"succeeds (--base-model: a folder warm-started with --trajectories oracle, for one)")
        with timer("sft"):
            losses += sft(model, examples, args, tokenizer, None, amp)
    return losses, rounds


def evaluate(model, tokenizer, items, corpus, args: Args, amp=nullcontext) -> dict:
    """Greedy episodes on ``items`` with grpo_ig.py's rollout (:func:`play`): EM, answer rate, searches per episode,
    truncation rate and the share of turns with a valid tag."""
    done = play(model, tokenizer, items, corpus, args, amp=amp)[1]
    out = {k: float(np.mean([e[k] for e in done])) for k in ("em", "answered", "searches", "truncated")}
    turns = sum(e["searches"] + e["invalid"] + e["answered"] for e in done)
    out["valid_tag_rate"] = float(1 - sum(e["invalid"] for e in done) / max(turns, 1))
    return out


def describe(report: dict) -> str:
    before, after, ev = report["ig_validity_before"], report["ig_validity_after"], report["eval"]
    def validity(v):
        return (f"{v['win_rate']:.2f} (mean IG gold {v['ig_gold']:+.3f} vs unrelated {v['ig_unrelated']:+.3f}, "
                f"n={v['n']})")

    rounds = report.get("self_rounds")
    source = (f"teacher (accuracy {report['args']['accuracy']:g}) EM {report['teacher_em']:.3f} on "
              f"{report['sft_episodes']} episodes" if not rounds else
              "self-bootstrapped: the model's own sampled EM " + ", ".join(
                  f"{r['em']:.3f} ({r['kept']} of {r['sampled']} kept)" for r in rounds) + " by round")
    return "\n".join([
        f"model: {report['parameters'] / 1e6:.2f}M parameters, vocabulary {report['vocab_size']}; {source}",
        f"IG validity (own IG, gold-title search beats unrelated-title search): before {validity(before)}",
        f"                                                                       after  {validity(after)}",
        f"warm-started greedy held-out EM {ev['em']:.3f}, answer rate {ev['answered']:.3f}, valid-tag rate "
        f"{ev['valid_tag_rate']:.3f}, searches/episode {ev['searches']:.2f}, truncation rate {ev['truncated']:.3f}",
        "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items()),
    ])


# --------------------------------------------------------------------------------------------------- main


def cache_key(args: Args, precision: str = "fp32") -> str:
    """Every setting that changes the model, hashed: the settings (a base model and bf16 only when used), the
    tokenizer's version (which the dialect picks) and :func:`texts_fingerprint` (the texts the model reads)."""
    settings = {k: v for k, v in dataclasses.asdict(args).items()
                if k not in ("output", "force", "threads", "device", "precision", "base_model")}
    settings.update({k: v for k, v in (("base_model", args.base_model), ("precision", precision))
                     if v not in (None, "fp32")})
    later = (("keep_correct", False), ("trajectories", "oracle"), ("self_rounds", 1), ("temperature", 1.0))
    for name, default in later:
        if settings[name] == default:  # added later: absent from the keys made before them
            del settings[name]
    version = tokenizer_version(args.dialect)
    text = json.dumps([settings, version, VERSION, texts_fingerprint(args.world_seed, args.topk, version)],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def main(argv=None) -> Path:
    args = parse_args(Args, argv, description=__doc__.split("\n\n")[0])
    if args.trajectories not in ("oracle", "self"):
        raise SystemExit(f"--trajectories must be oracle or self, not {args.trajectories!r}")
    if args.trajectories == "self" and not args.base_model:
        raise SystemExit("--trajectories self samples the model itself, so it needs a seed model that sometimes "
                         "succeeds: pass --base-model (a folder warm-started with --trajectories oracle, for one)")
    if args.trajectories == "self" and args.rename:
        raise SystemExit("--rename renames the oracle's episodes; it does not apply to --trajectories self")
    if args.self_rounds < 1 or not args.temperature > 0:
        raise SystemExit(f"--self-rounds must be at least 1 and --temperature positive (got {args.self_rounds}, "
                         f"{args.temperature})")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    precision = args.precision if args.precision != "auto" else ("bf16-mixed" if device.type == "cuda" else "fp32")
    key = cache_key(args, precision)
    folder = Path(args.output) if args.output else cache_dir("testbed") / f"warm-{key}"
    if (folder / "warm_start.json").exists() and not args.force:
        report = json.loads((folder / "warm_start.json").read_text())
        if report.get("cache_key") == key or not args.output:  # the cache's folders are named by their key
            print(describe(report) + f"\n(cached)\nwarm-started model: {folder}")
            return folder
        print(f"{folder} was built with other settings or texts (key {report.get('cache_key')}, now {key}): "
              "building it again", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    seed_everything(args.seed)
    amp = partial(torch.autocast, device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext
    timer = Timer()
    with timer("tokenizer"):
        if args.base_model:  # grpo_ig.py's loader: its tokenizer, a clean generation config, fp32 weights
            model, tokenizer = build_model(args.base_model, args.seed)
        else:
            tokenizer = load_tokenizer(args.world_seed, args.topk, args.dialect)
            model = new_model(tokenizer, args)
    model.to(device)
    world = build_world(seed=args.world_seed)
    train_set, held_out = held_out_split(world.questions, args.eval_size, args.hops)  # grpo_ig.py's held-out split
    corpus = world.corpus
    train = list(train_set)[: args.max_questions]
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}; "
          f"{len(train)} training and {len(held_out)} held-out questions ({args.hops} hops)", flush=True)
    with timer("ig_validity"), amp():
        before = ig_validity(model, tokenizer, list(held_out)[: args.ig_questions], corpus, args)
    rounds = None
    if args.trajectories == "self":
        losses, rounds = self_bootstrap(model, tokenizer, train, corpus, args, timer, amp)
        teacher_em, n_examples = rounds[0]["em"], sum(r["kept"] for r in rounds)
    else:
        with timer("teacher"):
            examples, teacher_em = teacher_episodes(tokenizer, train, corpus, args)
        n_examples = len(examples)
        print(f"teacher: {len(examples)} episodes, EM {teacher_em:.3f}, {np.mean([len(i) for i, _ in examples]):.0f} "
              f"tokens ({np.mean([sum(m) for _, m in examples]):.1f} of the policy) on average; SFT:", flush=True)
        with timer("sft"):
            names = name_words(build_world(seed=args.world_seed), tokenizer) if args.rename else None
            losses = sft(model, examples, args, tokenizer, names, amp)
    with timer("ig_validity"), amp():
        after = ig_validity(model, tokenizer, list(held_out)[: args.ig_questions], corpus, args)
    with timer("eval"):
        ev = evaluate(model, tokenizer, list(held_out)[: args.eval_questions], corpus, args, amp)
    report = {"args": dataclasses.asdict(args), "cache_key": key,
              "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
              "teacher_em": teacher_em, "sft_episodes": n_examples,
              "sft_loss_first_last": [losses[0], float(np.mean(losses[-10:]))], "ig_validity_before": before,
              "ig_validity_after": after, "eval": ev, "seconds": dict(timer.seconds)}
    if rounds:
        report["self_rounds"] = rounds

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "warm_start.json").write_text(json.dumps(report, indent=2))

    replace_dir(folder, write, overwrite=True)
    print(describe(report) + f"\nwarm-started model: {folder}")
    return folder


if __name__ == "__main__":
    main()
