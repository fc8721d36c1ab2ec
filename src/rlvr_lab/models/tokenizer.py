"""A character-level tokenizer built locally, for tiny models and tests that must not touch a model hub.

Vocabulary, in id order:

* ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` (special: dropped by ``decode(..., skip_special_tokens=True)``);
* the tag tokens (``<answer>``, ``</think>``, ...), one token each. They are registered as *non-special*
  added tokens, so they are never split when encoding and still come back as text when special tokens
  are skipped: a reward function reading decoded completions must still see ``<answer>...</answer>``;
* every printable ASCII character (32..126) and ``"\\n"``, one token each.

Any other character encodes to ``<unk>``. There is no normalizer and no automatic BOS/EOS, and the decoder
concatenates tokens as they are, so ``decode(encode(s)) == s`` for every string over that alphabet.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

DEFAULT_TAGS: tuple[str, ...] = (
    "<answer>",
    "</answer>",
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<information>",
    "</information>",
)

CHAR_ALPHABET: tuple[str, ...] = tuple(chr(code) for code in range(32, 127)) + ("\n",)

# A character model pays one forward position per character, so the template stays minimal:
# "<bos>user: What is 2+3?\nassistant: ".
CHAR_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] + ': ' + message['content'] + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def build_char_tokenizer(extra_special: Sequence[str] = DEFAULT_TAGS) -> PreTrainedTokenizerFast:
    """Build the character tokenizer described in the module docstring.

    Args:
        extra_special: tag strings that each become a single, never-split token. They are kept as text by
            ``decode(..., skip_special_tokens=True)``; only pad/bos/eos/unk are dropped there.

    Returns:
        A ``PreTrainedTokenizerFast`` with pad/bos/eos/unk set, ``padding_side="left"`` and a short chat
        template. It round-trips through ``save_pretrained`` and ``AutoTokenizer.from_pretrained``.
    """
    tags = list(dict.fromkeys(extra_special))  # drop duplicates, keep order
    clashes = [tag for tag in tags if tag in SPECIAL_TOKENS or len(tag) < 2]
    if clashes:
        raise ValueError(
            f"extra_special={clashes!r}: tags must be at least two characters long and differ from "
            f"{list(SPECIAL_TOKENS)}"
        )

    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *tags, *CHAR_ALPHABET):
        vocab.setdefault(token, len(vocab))

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # Every character is its own pre-token; "[\s\S]" rather than "." so that "\n" matches too.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Without a decoder `tokenizers` joins tokens with spaces; Fuse concatenates them unchanged.
    backend.decoder = decoders.Fuse()
    # The ids already exist in the vocabulary, so registering them keeps the order above. Added tokens are
    # matched on the raw text before pre-tokenization, which is what keeps each tag whole.
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in tags])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAR_CHAT_TEMPLATE
    return tokenizer
