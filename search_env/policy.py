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
    ):
        self.model, self.tokenizer = model, tokenizer
        self.dialect = get_dialect(template)
        self.max_new_tokens, self.temperature, self.few_shot = max_new_tokens, temperature, few_shot

    def prompt_text(self, prompt: str, continuation: str = "") -> str:
        """The model input: chat-templated prompt, then the episode so far as the assistant's words."""
        user = (FEW_SHOT.format(info=self.dialect.info_tag) if self.few_shot else "") + prompt
        messages = [{"role": "user", "content": user}]
        if getattr(self.tokenizer, "chat_template", None):
            head = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            head = user + "\n"
        return head + continuation.lstrip()

    def act(self, prompt: str, continuation: str = "") -> str:
        return self.act_batch([prompt], [continuation])[0]

    def act_batch(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[str]:
        """One turn for each (prompt, episode-so-far) pair, generated together with left padding."""
        import torch

        texts = [self.prompt_text(p, c) for p, c in zip(prompts, continuations)]
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                stop_strings=list(STOP_STRINGS),
                tokenizer=tok,
                pad_token_id=tok.pad_token_id,
                **sampling,
            )
        turns = tok.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return [cut_at_stop(t) for t in turns]


def cut_at_stop(text: str) -> str:
    """The text up to and including the first closing action tag (generation may run a token past it)."""
    ends = [text.find(s) + len(s) for s in STOP_STRINGS if s in text]
    return text[: min(ends)] if ends else text
