"""A language model acting in the env: one turn of text from the transcript so far."""

from __future__ import annotations

from collections.abc import Sequence

from search_env.actions import Dialect, get_dialect

STOP_STRINGS = ("</search>", "</answer>")

# A worked episode in the env's own format, on a question outside any dataset, so that a small model
# sees what a turn looks like.
FEW_SHOT = (
    "Here is an example of how to work.\n"
    "Question: In which country was the founder of Pellwick Mills born?\n"
    "<think>I need the founder of Pellwick Mills first.</think>\n<search> Pellwick Mills founder </search>\n\n"
    "<{info}>Doc 1(Title: Pellwick Mills) Pellwick Mills is a textile company founded in 1881 by Ansel Dorrow.\n"
    "</{info}>\n\n"
    "<think>The founder is Ansel Dorrow. Now I need where he was born.</think>\n<search> Ansel Dorrow born </search>\n\n"
    "<{info}>Doc 1(Title: Ansel Dorrow) Ansel Dorrow was born in Castemar, a town in Ruvenia.\n</{info}>\n\n"
    "<think>Castemar is in Ruvenia.</think>\n<answer> Ruvenia </answer>\n\n"
    "Now the real task.\n"
)


class LMPolicy:
    """Generates each turn with a Hugging Face causal LM, stopping after ``</search>`` or ``</answer>``.

    The env's prompt becomes the user message of the model's chat template (with a worked example in
    front when ``few_shot``); everything after the prompt is the assistant's message so far.

    ``constrained=True`` is for models too small to follow the tag format: the model first chooses
    ``<search>`` or ``<answer>`` (whichever opening tag it gives the higher log-probability; ``act(...,
    force="search" | "answer")`` imposes one), then writes the content, so every turn is well formed and
    the words are still the model's.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        template: str | Dialect = "search-r1",
        max_new_tokens: int = 96,
        temperature: float = 0.0,
        few_shot: bool = True,
        constrained: bool = False,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.dialect = get_dialect(template)
        self.max_new_tokens, self.temperature, self.few_shot = max_new_tokens, temperature, few_shot
        self.constrained = constrained
        self._stopping = None

    def prompt_text(self, prompt: str, continuation: str = "") -> str:
        """The model input: chat-templated prompt, then the episode so far as the assistant's words."""
        user = (FEW_SHOT.format(info=self.dialect.info_tag) if self.few_shot else "") + prompt
        messages = [{"role": "user", "content": user}]
        if getattr(self.tokenizer, "chat_template", None):
            head = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            head = user + "\n"
        return head + continuation.lstrip()

    def act(self, prompt: str, continuation: str = "", *, force: str | None = None) -> str:
        return self.act_batch([prompt], [continuation], force=force)[0]

    def act_batch(self, prompts: Sequence[str], continuations: Sequence[str], *, force: str | None = None) -> list[str]:
        """One turn for each (prompt, episode-so-far) pair, generated together with left padding."""
        texts = [self.prompt_text(p, c) for p, c in zip(prompts, continuations)]
        if not self.constrained:
            return [cut_at_stop(t) for t in self._generate(texts)]
        tags = [f"<{force}>"] * len(texts) if force else self._choose_tags(texts)
        contents = self._generate([t + tag for t, tag in zip(texts, tags)])
        # The content runs to the first tag the model writes (its closing tag, normally).
        return [f"{tag} {c.split('<', 1)[0].strip()} </{tag[1:]}" for tag, c in zip(tags, contents)]

    def _choose_tags(self, texts: Sequence[str]) -> list[str]:
        """The opening tag each context makes more likely: log p("<search>") vs log p("<answer>")."""
        import torch

        options = ("<search>", "<answer>")
        batch = [t + o for t in texts for o in options]
        tok = self._tokenizer_for_batch()
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        lengths = [len(tok(o, add_special_tokens=False)["input_ids"]) for o in options] * len(texts)
        keep = max(lengths) + 1  # logits only where the option tokens are predicted
        with torch.inference_mode():
            logits = self.model(**enc, logits_to_keep=keep).logits[:, :-1].float()
        targets = enc["input_ids"][:, -keep + 1 :]
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        scores = [float(token_logp[i, -n:].sum()) for i, n in enumerate(lengths)]
        return [options[int(scores[2 * i + 1] > scores[2 * i])] for i in range(len(texts))]

    def _tokenizer_for_batch(self):
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        return tok

    def _generate(self, texts: Sequence[str]) -> list[str]:
        import torch
        from transformers import StoppingCriteriaList, StopStringCriteria

        if self._stopping is None:  # built once: it precomputes tables over the whole vocabulary
            self._stopping = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(STOP_STRINGS))])
        tok = self._tokenizer_for_batch()
        batch = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                stopping_criteria=self._stopping,
                pad_token_id=tok.pad_token_id,
                **sampling,
            )
        return tok.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def cut_at_stop(text: str) -> str:
    """The text up to and including the first closing action tag (generation may run a token past it)."""
    ends = [text.find(s) + len(s) for s in STOP_STRINGS if s in text]
    return text[: min(ends)] if ends else text
