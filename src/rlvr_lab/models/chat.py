"""Turning a question into the prompt text a model is conditioned on."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    *,
    system: str | None = None,
    use_chat_template: bool = True,
) -> str:
    """Render ``question`` (and an optional system message) as prompt text, ending where the answer starts.

    With a chat template (and ``use_chat_template``), the messages go through
    ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``, so the text ends with the assistant
    header. Without one, the prompt is the raw question, preceded by ``system`` and a newline when given.

    The result is text, not ids. Special tokens the template writes out (``<bos>`` for the character
    tokenizer, ``<|im_start|>`` for SmolLM2) are encoded from that text; neither tokenizer adds a BOS of its
    own when encoding, so each appears exactly once.
    """
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": question})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(rendered, str):  # a batched or tokenized result would mean a misuse above
            raise TypeError(f"apply_chat_template returned {type(rendered).__name__}, expected str")
        return rendered
    return question if system is None else f"{system}\n{question}"
