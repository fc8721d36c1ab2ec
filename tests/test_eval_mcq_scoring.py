"""Scoring answer strings with a causal LM, and the attentiveness report end to end (arXiv 2305.14596)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from rlvr_lab.eval.mcq import MCQuestion, attentiveness_report, format_table, run_mcq, score_continuations
from rlvr_lab.eval.mcq.scoring import split_continuation
from rlvr_lab.models.tiny import TinyModelConfig, build_tiny_model
from rlvr_lab.models.tokenizer import DEFAULT_TAGS, build_char_tokenizer

SMALL = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_char_tokenizer()
    return build_tiny_model(SMALL, tokenizer, seed=0), tokenizer


def manual_scores(model, tokenizer, prompt: str, continuation: str) -> tuple[float, float]:
    """One forward of the whole sequence; log-softmax summed at the continuation's positions."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    continuation_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + continuation_ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    per_token = [logprobs[len(prompt_ids) - 1 + k, tok].item() for k, tok in enumerate(continuation_ids)]
    return sum(per_token), per_token[0]


PROMPTS = ["Q: 2+2=?\nA:", "What is the capital of France? Answer:", "?"]
OPTIONS = [[" 4", " five", " 22"], [" Paris", " Rome"], [" x", " yes please"]]


@pytest.fixture(scope="module")
def tiny_gpt2():
    """Absolute position embeddings: left padding without the right position ids would shift every logit
    (RoPE models like the tiny Llama only see position differences, so they cannot catch that)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_char_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                        initializer_range=0.3, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config).eval()
    return model, tokenizer


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("which", ["tiny", "tiny_gpt2"])
def test_scores_equal_a_manual_forward(request, which, batch_size):
    model, tokenizer = request.getfixturevalue(which)
    scores = score_continuations(model, tokenizer, PROMPTS, OPTIONS, batch_size=batch_size)
    for prompt, options, row in zip(PROMPTS, OPTIONS, scores):
        assert len(row) == len(options)
        for continuation, score in zip(options, row):
            total, first = manual_scores(model, tokenizer, prompt, continuation)
            assert score.logprob == pytest.approx(total, abs=1e-4)
            assert score.first_logprob == pytest.approx(first, abs=1e-5)
            assert score.n_tokens == len(continuation) and score.prefix_split  # one token per character
            assert score.logprob < score.first_logprob < 0


def test_cache_is_filled_and_reused(tiny):
    model, tokenizer = tiny
    cache = {}
    first = score_continuations(model, tokenizer, PROMPTS[:1], OPTIONS[:1], cache=cache)
    assert set(cache) == {(PROMPTS[0], c) for c in OPTIONS[0]}
    cache[(PROMPTS[0], " 4")] = sentinel = first[0][1]  # a cached value is returned as stored
    assert score_continuations(model, tokenizer, PROMPTS[:1], [[" 4"]], cache=cache)[0][0] is sentinel


def test_boundary_merge_falls_back_to_tokenising_the_continuation_alone():
    tokenizer = build_char_tokenizer((*DEFAULT_TAGS, "ab"))  # "ab" is one token, so "x" + "a" + "b" merges
    prompt_ids, continuation_ids, prefix_split = split_continuation(tokenizer, "xa", "b")
    assert not prefix_split
    assert prompt_ids == tokenizer("xa")["input_ids"]
    assert continuation_ids == tokenizer("b", add_special_tokens=False)["input_ids"]
    assert split_continuation(tokenizer, "x", "ab")[1:] == (tokenizer("ab")["input_ids"], True)
    with pytest.raises(ValueError, match="no tokens"):
        split_continuation(tokenizer, "x", "")


def test_single_token_options_read_the_next_token_distribution():
    letters = (" A", " B", " C", " D")
    tokenizer = build_char_tokenizer((*DEFAULT_TAGS, *letters))  # each letter one token, as under BPE
    model = build_tiny_model(SMALL, tokenizer, seed=1)
    prompts = ["Question: 1+1?\nChoices:\n A: 2\n B: 3\n C: 4\n D: 5\nAnswer:", "Choices:\n A: 2\nAnswer:"]
    scores = score_continuations(model, tokenizer, prompts, [list(letters)] * 2, batch_size=2)
    for prompt, row in zip(prompts, scores):
        with torch.no_grad():
            logits = model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1]
        next_token = torch.log_softmax(logits.float(), dim=-1)
        expected = [next_token[tokenizer.convert_tokens_to_ids(letter)].item() for letter in letters]
        assert [s.logprob for s in row] == pytest.approx(expected, abs=1e-5)
        assert all(s.n_tokens == 1 and s.first_logprob == s.logprob for s in row)
        assert sum(math.exp(s.logprob) for s in row) < 1
    # a two-token option sends the question down the one-sequence-per-option path: same numbers
    mixed = score_continuations(model, tokenizer, prompts[:1], [[*letters, " AB"]])[0]
    assert [s.logprob for s in mixed[:4]] == pytest.approx([s.logprob for s in scores[0]], abs=1e-5)


# --- the report on a model whose probabilities are known by construction -------------------------------


class RuleModel(torch.nn.Module):
    """A causal LM on the character tokenizer whose next-token distribution is set by hand.

    After any token but a space, the next token is a space with probability 1. After a space, the
    distribution over "a".."d" (the rest on "z") depends on the token before the space: "1" and "2" give
    the B8.3 examples, "?" (the PMI_DC premise) gives the denominators (0.5, 0.1, 0.2, 0.2).
    """

    TABLES = {"1": (0.30, 0.20, 0.05, 0.05), "2": (0.70, 0.15, 0.05, 0.05), "?": (0.5, 0.1, 0.2, 0.2)}

    def __init__(self, tokenizer):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        self.vocab = len(tokenizer)
        self.ids = {ch: tokenizer.convert_tokens_to_ids(ch) for ch in " abcdz12?"}

    def forward(self, input_ids, attention_mask=None, use_cache=None):  # no position_ids / logits_to_keep
        batch, width = input_ids.shape
        logits = torch.full((batch, width, self.vocab), -1e9)
        for b in range(batch):
            for t in range(width):
                if input_ids[b, t] != self.ids[" "]:
                    logits[b, t, self.ids[" "]] = 0.0
                    continue
                before = input_ids[b, t - 1] if t else None
                key = next((ch for ch in "12?" if before == self.ids[ch]), None)
                probs = self.TABLES.get(key, (0.25, 0.25, 0.25, 0.25))
                for ch, p in zip("abcd", probs):
                    logits[b, t, self.ids[ch]] = math.log(p)
                if sum(probs) < 1:
                    logits[b, t, self.ids["z"]] = math.log(1 - sum(probs))
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("n_demos", [0, 1])
def test_report_hand_computed(n_demos):
    tokenizer = build_char_tokenizer()
    model = RuleModel(tokenizer)
    questions = [MCQuestion("first 1", ("a", "b", "c", "d"), 0), MCQuestion("second 2", ("a", "b", "c", "d"), 1)]
    result = attentiveness_report(model, tokenizer, questions, "no_choices", n_demos=n_demos, seed=0, batch_size=3)
    first, second = result.records
    assert first.demo_indices == ([1] if n_demos else []) and second.demo_indices == ([0] if n_demos else [])
    assert first.p_all == pytest.approx([0.30, 0.20, 0.05, 0.05], abs=1e-6)
    assert first.p_uncond == pytest.approx([0.5, 0.1, 0.2, 0.2], abs=1e-6)
    assert first.prob_mass == pytest.approx(0.60, abs=1e-6) and not first.resolved
    assert (first.predicted, first.correct) == (0, True)
    assert (first.pmi_predicted, first.pmi_correct) == (1, False)  # B8.3: PMI_DC flips A to B
    assert second.prob_mass == pytest.approx(0.95, abs=1e-6) and second.resolved
    assert (second.predicted, second.correct) == (0, False)
    assert (second.pmi_predicted, second.pmi_correct) == (1, True)  # scores 1.4, 1.5, 0.25, 0.25
    assert result.n_questions == 2
    assert result.accuracy == 0.5 and result.pmi_accuracy == 0.5
    assert result.pmi_label_conditional_accuracy == 0.5  # no-choices premise is "?" as well
    assert result.prob_mass == pytest.approx(0.775, abs=1e-6)
    assert result.pct_resolved == 50.0
    assert (result.accuracy_lower, result.accuracy_upper) == (0.0, 0.5)  # q1 right but open; q2 wrong for sure
    assert result.resolved_accuracy == 0.0
    assert result.accuracy_ci[0] < 0.5 < result.accuracy_ci[1]


def test_run_mcq_end_to_end_on_the_tiny_model(tmp_path):
    data = tmp_path / "mcq.jsonl"
    rows = [
        {"question": "2+2?", "choices": ["4", "5", "6"], "answer": 0},
        {"question": "Capital of France?", "choices": ["Rome", "Paris"], "answer": "Paris"},
        {"question": "Spell dog backward.", "choices": ["god", "dog", "gdo", "odg"], "answer": "A"},
        {"question": "3*3?", "choices": ["6", "9", "12", "8"], "answer": 1},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "runs" / "records.jsonl"
    results = run_mcq("tiny", str(data), formats=("no_choices", "string_choices", "enumerated"), shots=(0, 1),
                      seed=0, batch_size=4, out_jsonl=out, max_questions=3)
    assert [(r.format, r.n_demos) for r in results] == [
        ("no_choices", 0), ("no_choices", 1), ("string_choices", 0), ("string_choices", 1),
        ("enumerated", 0), ("enumerated", 1),
    ]
    for r in results:
        assert r.n_questions == 3
        assert 0.0 <= r.prob_mass <= 1.0 and 0.0 <= r.pct_resolved <= 100.0
        for value in (r.accuracy, r.first_token_accuracy, r.pmi_accuracy, r.pmi_label_conditional_accuracy):
            assert 0.0 <= value <= 1.0
        assert r.accuracy_lower <= r.accuracy <= r.accuracy_upper
        assert r.accuracy_ci[0] <= r.accuracy <= r.accuracy_ci[1]
        for record in r.records:
            assert len(record.p_all) == len(record.choices) and all(0 <= p <= 1 for p in record.p_all)
            assert record.index not in record.demo_indices
    lines = out.read_text().splitlines()
    assert len(lines) == 6 * 3
    assert {"format", "n_demos", "p_all", "prob_mass", "resolved", "pmi_correct"} <= set(json.loads(lines[0]))
    table = format_table(results)
    assert table.count("\n") == 1 + len(results) and "| enumerated | 1 | 3 |" in table
