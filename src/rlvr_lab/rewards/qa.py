"""Open-domain QA rewards: SQuAD-style exact match and F1, and Search-R1's format-aware reward.

Gold answers come from ``example["answers"]`` (a list, as ``envs.qa_data`` loads them) or else
``example["answer"]`` (a string or a list, as the other verifiers read it). The prediction is the
stripped content of the **last** ``<answer>...</answer>`` block of the response.

Search-R1 (arXiv 2503.09516, ``verl/utils/reward_score/qa_em.py``) scores the decoded prompt plus
response and needs at least two ``<answer>`` blocks, since the prompt's example answer is one. These
verifiers score the response only and need one block (spec section 10, erratum 12), so the text they
are given must be the response: every model turn and every ``<information>`` observation, in order,
without the prompt.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr_lab.rewards.extract import extract_answer, tagged_contents
from rlvr_lab.rewards.verifiers import Verifier
from rlvr_lab.types import Score

PROTOCOL_TAGS: tuple[str, ...] = ("think", "search", "information", "answer")
"""The tags of the Search-R1 protocol (spec section 10.1)."""

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_TAG = re.compile(r"(</?(?:think|search|information|answer)>)")


# --- answer matching -------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 answer normalisation, as Search-R1's ``qa_em.normalize_answer``.

    Lowercase, delete ASCII punctuation, replace the articles a/an/the by a space, collapse
    whitespace: ``"The  Beijing!"`` -> ``"beijing"``, ``"U.S.A."`` -> ``"usa"``. Punctuation is
    deleted, not replaced by a space as ``verifiers.normalize_text`` does, so that EM numbers match
    the papers' (``"U.S."`` is ``"us"`` here and ``"u s"`` there).
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> bool:
    """True when the normalised prediction equals any normalised gold answer."""
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(gold) for gold in golds)


def substring_match(prediction: str, golds: Sequence[str]) -> bool:
    """Search-R1's sub-EM: True when any normalised gold answer is a substring of the normalised prediction.

    A character substring, as the original ``subem_check``: gold ``"art"`` matches ``"party"``.
    An empty normalised gold never matches.
    """
    predicted = normalize_answer(prediction)
    return any(gold and gold in predicted for gold in map(normalize_answer, golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best SQuAD token F1 of ``prediction`` against any gold answer (0.0 with no golds).

    For one gold: with ``c`` the tokens the two share (a multiset intersection), precision is
    ``c / len(pred)``, recall ``c / len(gold)`` and F1 their harmonic mean ``2PR / (P + R)``
    (Rajpurkar et al. 2016, SQuAD evaluation script). When either side normalises to no tokens,
    F1 is 1.0 if both do and 0.0 otherwise (SQuAD v2.0 convention).
    """
    predicted = normalize_answer(prediction).split()
    return max((_f1(predicted, normalize_answer(gold).split()) for gold in golds), default=0.0)


def _f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)
    shared = sum((Counter(predicted) & Counter(gold)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(gold)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: Mapping[str, Any]) -> list[str]:
    """The accepted answers of ``example``: ``"answers"`` if present, else ``"answer"``; a string becomes a list."""
    golds = example["answers"] if "answers" in example else example["answer"]
    if isinstance(golds, str):
        return [golds]
    return [str(gold) for gold in golds]


# --- Search-R1 format ------------------------------------------------------------------------


def format_violation(text: str) -> str | None:
    """The first way ``text`` breaks Search-R1's tag grammar, or None when it follows it.

    The grammar (``qa_em_format.is_valid_sequence``, spec section 10.3), with only whitespace allowed
    between blocks::

        <think>…</think> ( <search>…</search> <information>…</information> <think>…</think> )* <answer>…</answer>

    Opening and closing counts of each tag must match, and nothing but whitespace may follow the
    answer. Unlike the original, ``text`` is the response alone, so no ``<|im_start|>assistant``
    marker is looked for. An invalid-action message (text outside any block) breaks the format.
    """
    for tag in PROTOCOL_TAGS:
        opened, closed = text.count(f"<{tag}>"), text.count(f"</{tag}>")
        if opened != closed:
            return f"{opened} <{tag}> but {closed} </{tag}>"
    state = "start"  # the transitions are _NEXT_STATE; "end" is the only accepting state
    for part in _TAG.split(text):
        if not part.strip():
            continue
        if _TAG.fullmatch(part):
            following = _NEXT_STATE.get((state, part))
            if following is None:
                return f"unexpected {part} in state {state}"
            state = following
        elif state not in _INSIDE_BLOCK:
            return f"text {part.strip()[:40]!r} outside any block (state {state})"
    if state != "end":
        return f"incomplete: ended in state {state}"
    return None


_NEXT_STATE = {
    ("start", "<think>"): "in_think",
    ("information", "<think>"): "in_think",
    ("in_think", "</think>"): "after_think",
    ("after_think", "<search>"): "in_search",
    ("in_search", "</search>"): "after_search",
    ("after_search", "<information>"): "in_information",
    ("in_information", "</information>"): "information",
    ("after_think", "<answer>"): "in_answer",
    ("in_answer", "</answer>"): "end",
}
_INSIDE_BLOCK = frozenset({"in_think", "in_search", "in_information", "in_answer"})


def is_valid_format(text: str) -> bool:
    """True when ``text`` follows Search-R1's tag grammar (see ``format_violation``)."""
    return format_violation(text) is None


def count_valid_searches(text: str) -> int:
    """How many ``<search>query</search>`` blocks in ``text`` hold a usable query.

    A block counts when its content, stripped, is non-empty and holds no protocol tag (so
    ``<search><search>q</search>`` does not count). This counts what the model asked for: a search in
    the final turn, which the rollout does not execute, counts too. Search-R1's own
    ``valid_search_stats`` (the rollout's count) also counts an empty query and only executed turns.
    """
    return sum(1 for query in tagged_contents(text, "search") if _usable_query(query))


def _usable_query(query: str) -> bool:
    return bool(query.strip()) and not any(f"<{t}>" in query or f"</{t}>" in query for t in PROTOCOL_TAGS)


def retrieval_hit(text: str, golds: Sequence[str]) -> bool:
    """True when a normalised gold answer is a substring of a normalised ``<information>`` block.

    As Search-R1's ``is_retrieval_correct``: did the retrieved text contain the answer at all.
    """
    blocks = [normalize_answer(block) for block in tagged_contents(text, "information")]
    return any(gold and gold in block for block in blocks for gold in map(normalize_answer, golds))


# --- verifiers -------------------------------------------------------------------------------


def qa_exact_match_verifier(*, substring: bool = False) -> Verifier:
    """1.0 when the last ``<answer>`` matches a gold answer after ``normalize_answer`` (Search-R1's EM reward).

    With ``substring`` the match is Search-R1's sub-EM (``substring_match``). No answer block scores
    0.0 with ``correct=False``.
    """
    match = substring_match if substring else exact_match

    def verify(text: str, example: Mapping[str, Any]) -> Score:
        answer = extract_answer(text)
        if answer is None:
            return Score(0.0, correct=False)
        correct = match(answer, gold_answers(example))
        return Score(float(correct), correct=correct)

    return verify


def qa_f1_verifier() -> Verifier:
    """The best token F1 of the last ``<answer>`` against the gold answers; ``correct`` is exact match."""

    def verify(text: str, example: Mapping[str, Any]) -> Score:
        answer = extract_answer(text)
        if answer is None:
            return Score(0.0, correct=False)
        golds = gold_answers(example)
        return Score(token_f1(answer, golds), correct=exact_match(answer, golds))

    return verify


def search_r1_format_verifier(
    *,
    structure_format_score: float = 0.2,
    final_format_score: float = 0.1,
    retrieval_score: float = 0.1,
    correct_score: float = 1.0,
) -> Verifier:
    """Search-R1 v0.3's format-aware EM reward (``qa_em_format.compute_score_em``, spec section 10.3).

    - correct answer (EM): ``correct_score`` (1.0) with a valid format, else
      ``correct_score - structure_format_score`` (0.8);
    - wrong answer: ``structure_format_score`` (0.2) with a valid format, plus ``retrieval_score``
      (0.1) when a gold answer appears in an ``<information>`` block; else ``final_format_score`` (0.1);
    - no answer block: 0.0 (a valid format always ends in an answer).

    The defaults are the original function's. ``correct`` is the EM verdict; ``parts`` keeps ``em``,
    ``valid_format`` and ``retrieval_hit`` (1.0 or 0.0) for the metrics.
    """

    def verify(text: str, example: Mapping[str, Any]) -> Score:
        golds = gold_answers(example)
        answer = extract_answer(text)
        valid = is_valid_format(text)
        hit = valid and retrieval_hit(text, golds)  # the original checks retrieval only for a valid format
        correct = answer is not None and exact_match(answer, golds)
        if correct:
            value = correct_score if valid else correct_score - structure_format_score
        elif valid:
            value = structure_format_score + (retrieval_score if hit else 0.0)
        else:
            value = final_format_score if answer is not None else 0.0
        parts = {"em": float(correct), "valid_format": float(valid), "retrieval_hit": float(hit)}
        return Score(value, correct=correct, parts=parts)

    return verify
