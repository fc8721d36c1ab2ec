"""For-Value (arXiv 2508.10180): hand-computed values, autograd equivalence, the restrictions, the runner,
`rlvr value` and the warm-start's sft.select, on CPU with the tiny model."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlvr_lab.analysis.forvalue import (
    ForValueFactors,
    MeanRepresentation,
    batch_vocabulary,
    double_sum_is_cheaper,
    forvalue_approx,
    forvalue_factors,
    forvalue_rank,
    forvalue_repr,
    forvalue_score,
    forvalue_score_double_sum,
    forvalue_score_factors,
    score_against_mean,
)

# ---- B6.3 hand example -------------------------------------------------------------------------------------------

H_TRAIN = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
A_TRAIN = torch.tensor([[0.5, -0.5, 0.0], [0.0, 0.2, -0.2]], dtype=torch.float64)
H_VAL = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
A_VAL = torch.tensor([[0.4, -0.4, 0.0]], dtype=torch.float64)
IDS3 = torch.arange(3)


def test_hand_example_exact_and_approximate():
    train, val = ForValueFactors(H_TRAIN, A_TRAIN, IDS3), ForValueFactors(H_VAL, A_VAL, IDS3)
    assert torch.equal(train.matrix(), torch.tensor([[0.5, 0.0], [-0.5, 0.2], [0.0, -0.2]], dtype=torch.float64))
    assert torch.equal(val.matrix(), torch.tensor([[0.4, 0.4], [-0.4, -0.4], [0.0, 0.0]], dtype=torch.float64))
    assert forvalue_score(*train.representation(), *val.representation()).item() == pytest.approx(0.32, abs=1e-12)
    assert forvalue_score_double_sum(train, val).item() == pytest.approx(0.32, abs=1e-12)
    assert forvalue_approx(H_TRAIN, A_TRAIN, H_VAL, A_VAL).item() == pytest.approx(0.64, abs=1e-12)


def test_hand_example_from_logits_with_the_shift():
    # α = e_y − p: the training errors come from p = (.5, .5, 0) with y = 0 and p = (0, .8, .2) with y = 1,
    # the validation error from p = (.6, .4, 0) with y = 0; log 0 = −inf is a valid logit.
    logp_train = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.8, 0.2], [1 / 3] * 3], dtype=torch.float64).log()
    hidden = torch.cat([H_TRAIN, torch.full((1, 2), 99.0, dtype=torch.float64)])  # last row predicts nothing
    labels = torch.tensor([2, 0, 1])  # labels[0] is never predicted
    mask = torch.tensor([True, True, True])  # mask[0] is ignored
    G, ids = forvalue_repr(hidden, logp_train, labels, mask)
    assert torch.allclose(G, torch.tensor([[0.5, 0.0], [-0.5, 0.2], [0.0, -0.2]], dtype=torch.float64), atol=1e-12)
    assert torch.equal(ids, IDS3)
    G_val, ids_val = forvalue_repr(torch.cat([H_VAL, H_VAL]), torch.tensor([[0.6, 0.4, 0.0]] * 2, dtype=torch.float64).log(),
                                   torch.tensor([1, 0]), torch.tensor([False, True]))
    assert forvalue_score(G, ids, G_val, ids_val).item() == pytest.approx(0.32, abs=1e-12)


# ---- the score is the inner product of last-layer gradients -------------------------------------------------------


def _ce_head_gradient(W, hidden, labels, mask):
    """∂/∂W of the summed next-token CE over the masked labels (position t − 1 predicts label t)."""
    W = W.clone().requires_grad_(True)
    logits = hidden[:-1] @ W.T
    losses = torch.nn.functional.cross_entropy(logits, labels[1:], reduction="none")
    (losses * mask[1:]).sum().backward()
    return W.grad


def test_score_equals_inner_product_of_autograd_head_gradients():
    gen = torch.Generator().manual_seed(0)
    V, d = 11, 5
    W = torch.randn(V, d, generator=gen, dtype=torch.float64)
    reprs, grads = [], []
    for T in (7, 4):
        hidden = torch.randn(T, d, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, V, (T,), generator=gen)
        mask = torch.tensor([False] + [True] * (T - 1))
        mask[2] = False  # a prompt-like hole
        reprs.append(forvalue_repr(hidden, hidden @ W.T, labels, mask))
        grads.append(_ce_head_gradient(W, hidden, labels, mask))
    # both gradients are −G, so the product of gradients equals the product of representations
    assert torch.allclose(reprs[0][0], -grads[0], atol=1e-12)
    expected = (grads[0] * grads[1]).sum().item()
    assert forvalue_score(*reprs[0], *reprs[1]).item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def _random_factors(gen, n, ids, d=6):
    return ForValueFactors(torch.randn(n, d, generator=gen, dtype=torch.float64),
                           torch.randn(n, len(ids), generator=gen, dtype=torch.float64), torch.tensor(ids))


def test_double_sum_equals_frobenius_over_the_shared_ids():
    gen = torch.Generator().manual_seed(1)
    a = _random_factors(gen, 5, [0, 2, 3, 7, 9])
    b = _random_factors(gen, 3, [1, 2, 7, 8, 9, 12])
    frob = forvalue_score(*a.representation(), *b.representation())
    # only rows 2, 7 and 9 are shared
    manual = sum((a.matrix()[[1, 3, 4]] * b.matrix()[[1, 2, 4]]).sum(1))
    assert frob.item() == pytest.approx(manual.item(), rel=1e-12)
    assert forvalue_score_double_sum(a, b).item() == pytest.approx(frob.item(), rel=1e-10)
    for method in ("auto", "frobenius", "double_sum"):
        assert forvalue_score_factors(a, b, method=method).item() == pytest.approx(frob.item(), rel=1e-10)
    mean_G, mean_ids = b.representation()
    assert score_against_mean(a, mean_G, mean_ids).item() == pytest.approx(frob.item(), rel=1e-10)


def test_cost_rule_prefers_double_sum_for_short_sequences_over_a_large_vocabulary():
    assert double_sum_is_cheaper(20, 20, 49152, 576)
    assert not double_sum_is_cheaper(2000, 2000, 8, 4)


def test_rank_mean_is_the_row_mean_of_pairwise_and_the_mean_handles_different_ids():
    gen = torch.Generator().manual_seed(2)
    train = [_random_factors(gen, n, ids) for n, ids in ((3, [0, 1, 4]), (2, [1, 2, 3]), (4, [5]))]
    val = [_random_factors(gen, n, ids) for n, ids in ((2, [0, 1, 2]), (3, [1, 4, 5]))]
    pairwise = forvalue_rank(train, val, reduce="pairwise")
    assert pairwise.shape == (3, 2)
    assert pairwise[0, 0].item() == pytest.approx(forvalue_score_double_sum(train[0], val[0]).item(), rel=1e-12)
    mean = forvalue_rank(train, val, reduce="mean")
    assert torch.allclose(mean, pairwise.mean(1), rtol=1e-10)
    as_pairs = forvalue_rank([t.representation() for t in train], [v.representation() for v in val], reduce="mean")
    assert torch.allclose(as_pairs, mean, rtol=1e-10)
    acc = MeanRepresentation()
    for v in val:
        acc.add_factors(v)
    G, ids = acc.mean()
    assert ids.tolist() == [0, 1, 2, 4, 5]
    with pytest.raises(ValueError, match="reduce"):
        forvalue_rank(train, val, reduce="max")
    with pytest.raises(ValueError, match="at least one"):
        forvalue_rank(train, [])


# ---- vocabulary restrictions, keep_ratio, empty responses -------------------------------------------------------------


def _batch(gen, B=2, N=4, V=9, d=3):
    hidden = torch.randn(B, N, d, generator=gen, dtype=torch.float64)
    logits = 3 * torch.randn(B, N, V, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, V, (B, N), generator=gen)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[B - 1, N - 1] = B == 1  # the last row ends one token early (a lone row keeps all)
    return hidden, logits, targets, mask


def test_fixed_ids_keep_the_rows_of_the_full_representation_normalised_over_the_full_vocabulary():
    gen = torch.Generator().manual_seed(3)
    hidden, logits, targets, mask = _batch(gen)
    full = forvalue_factors(hidden, logits, targets, mask)
    ids = torch.tensor([7, 1, 4])
    part = forvalue_factors(hidden, logits, targets, mask, vocab_ids=ids)
    for f, p in zip(full, part):
        assert p.vocab_ids.tolist() == [1, 4, 7]
        assert torch.allclose(p.matrix(), f.matrix()[[1, 4, 7]], atol=1e-12)
    with pytest.raises(ValueError, match="vocab_ids must lie"):
        forvalue_factors(hidden, logits, targets, mask, vocab_ids=torch.tensor([9]))


def test_topk_vocabulary_is_the_batch_union_of_top_predictions():
    gen = torch.Generator().manual_seed(4)
    hidden, logits, targets, mask = _batch(gen)
    expected = sorted({int(i) for b in range(2) for t in range(4) if mask[b, t]
                       for i in torch.topk(logits[b, t], 2).indices})
    factors = forvalue_factors(hidden, logits, targets, mask, vocab_ids="topk", prediction_topk=2)
    assert factors[0].vocab_ids.tolist() == expected == factors[1].vocab_ids.tolist()
    assert batch_vocabulary(logits, mask, 2).tolist() == expected
    full = forvalue_factors(hidden, logits, targets, mask)[0].matrix()
    assert torch.allclose(factors[0].matrix(), full[expected], atol=1e-12)


def test_topk_abs_keeps_the_union_of_the_largest_prediction_errors():
    gen = torch.Generator().manual_seed(5)
    hidden, logits, targets, mask = _batch(gen)
    full = forvalue_factors(hidden, logits, targets, mask)
    expected = sorted({int(i) for f in full for row in f.alpha for i in torch.topk(row.abs(), 1).indices})
    factors = forvalue_factors(hidden, logits, targets, mask, topk_abs=1)
    assert factors[0].vocab_ids.tolist() == expected
    assert torch.allclose(factors[1].matrix(), full[1].matrix()[expected], atol=1e-12)


def test_keep_ratio_keeps_the_least_likely_positions():
    gen = torch.Generator().manual_seed(6)
    hidden, logits, targets, mask = _batch(gen, B=1)
    logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)[0]  # (4,)
    lowest = torch.argsort(logp)[:2]
    kept = forvalue_factors(hidden, logits, targets, mask, keep_ratio=0.5)[0]
    assert kept.n_positions == 2
    full = forvalue_factors(hidden, logits, targets, mask)[0]
    assert torch.allclose(kept.matrix(), full.alpha[lowest].T @ full.hidden[lowest], atol=1e-12)
    assert forvalue_factors(hidden, logits, targets, mask, keep_ratio=0.01)[0].n_positions == 1  # at least one
    with pytest.raises(ValueError, match="keep_ratio"):
        forvalue_factors(hidden, logits, targets, mask, keep_ratio=0.0)


def test_empty_response_scores_zero():
    gen = torch.Generator().manual_seed(7)
    hidden, logits, targets, _ = _batch(gen, B=1)
    none = torch.zeros(1, 4, dtype=torch.bool)
    for vocab in (None, "topk", torch.tensor([0, 3])):
        empty = forvalue_factors(hidden, logits, targets, none, vocab_ids=vocab)[0]
        other = forvalue_factors(hidden, logits, targets, torch.ones(1, 4, dtype=torch.bool), vocab_ids=vocab)[0]
        assert empty.n_positions == 0
        assert forvalue_score_factors(empty, other).item() == 0.0
        assert forvalue_rank([empty], [other]).tolist() == [0.0]
    G, ids = forvalue_repr(hidden[0], logits[0], targets[0], torch.tensor([True, False, False, False]))
    assert float(G.abs().sum()) == 0.0


def test_importing_forvalue_does_not_load_transformers():
    code = "import sys, rlvr_lab.analysis.forvalue; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- the runner on the tiny model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from rlvr_lab.models.loading import load_model_and_tokenizer

    torch.set_num_threads(1)
    return load_model_and_tokenizer("tiny", seed=0)


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


TRAIN_ROWS = [
    {"prompt": "Q: 1 + 2 =", "response": " 3"},
    {"question": "What is 4 + 4?", "answer": 8, "id": "b"},
    {"prompt": "Q: 5 - 1 =", "response": " 4 because five minus one"},
    {"prompt": "nothing to say", "response": ""},
    {"prompt": "Q: 9 - 9 =", "response": " 1"},
]
VAL_ROWS = [{"prompt": "Q: 2 + 2 =", "response": " 4"}, {"question": "What is 3 + 3?", "answer": "6"}]


def test_response_states_are_the_lm_head_inputs_and_padding_changes_nothing(tiny):
    from rlvr_lab.analysis.value import Sample, response_states

    tok, model = tiny.tokenizer, tiny.model
    samples = [Sample(tok.encode("hello there"), tok.encode(" world")), Sample(tok.encode("hi"), tok.encode(" abc de"))]
    hidden, logits, targets, mask = response_states(model, samples)
    for b, s in enumerate(samples):
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        lp, n = len(s.prompt_ids), len(s.response_ids)
        assert torch.allclose(out.logits[0, lp - 1: -1], logits[b, :n], atol=1e-4)  # logits = lm_head(h)
        assert torch.allclose(out.hidden_states[-1][0, lp - 1: -1], hidden[b, :n], atol=1e-4)  # post-norm state
        assert targets[b, :n].tolist() == s.response_ids and mask[b].sum() == n


def _manual_scores(tiny, train_rows, val_rows, settings):
    """Each sample scored on its own (batch of one) and ranked with forvalue_rank."""
    from rlvr_lab.analysis.value import Sample, encode_sample, sample_factors, sample_texts

    def factors(rows):
        out = []
        for row in rows:
            shape, a, b = sample_texts(row, "test")
            p, r, _ = encode_sample(tiny.tokenizer, shape, a, b, settings)
            out.append(sample_factors(tiny.model, [Sample(p, r)])[0][0])
        return out

    val = [f for f in factors(val_rows) if f.n_positions]
    return forvalue_rank(factors(train_rows), val, reduce="pairwise")


def test_run_value_matches_single_sample_scores_and_writes_outputs(tiny, tmp_path):
    from rlvr_lab.analysis.value import ValueSettings, run_value

    train = _write(tmp_path / "train.jsonl", TRAIN_ROWS[:2] + [""] + TRAIN_ROWS[2:])  # a blank line is skipped
    val = _write(tmp_path / "val.jsonl", VAL_ROWS)
    expected = _manual_scores(tiny, TRAIN_ROWS, VAL_ROWS, ValueSettings())
    for reduce in ("mean", "pairwise"):
        out = tmp_path / reduce
        summary = run_value(train, val, "tiny", ValueSettings(reduce=reduce, batch_size=2, top_k=2), out_dir=out, loaded=tiny)
        rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
        assert [r["index"] for r in rows] == [0, 1, 2, 3, 4] and [r["line"] for r in rows] == [1, 2, 4, 5, 6]
        got = torch.tensor([r["score"] for r in rows])
        assert torch.allclose(got, expected.mean(1).float(), rtol=1e-4, atol=1e-4)
        assert rows[3]["score"] == 0.0 and rows[3]["n_tokens"] == 0 and rows[3]["logprob_mean"] is None
        if reduce == "pairwise":
            assert torch.allclose(torch.tensor([r["pairwise"] for r in rows]), expected.float(), rtol=1e-4, atol=1e-4)
        top = [json.loads(line) for line in (out / "top.jsonl").read_text().splitlines()]
        bottom = [json.loads(line) for line in (out / "bottom.jsonl").read_text().splitlines()]
        assert [t["index"] for t in top] == got.argsort(descending=True)[:2].tolist()
        assert [b["index"] for b in bottom] == got.argsort()[:2].tolist()
        assert top[0]["sample"] == TRAIN_ROWS[top[0]["index"]]
        assert summary["n_train"] == 5 and summary["n_val"] == 2 and summary["n_train_empty_response"] == 1
        assert json.loads((out / "value.json").read_text())["n_train"] == 5


def test_run_value_restricted_vocabularies_and_keep_ratio(tiny, tmp_path):
    from rlvr_lab.analysis.value import ValueSettings, run_value

    train = _write(tmp_path / "train.jsonl", TRAIN_ROWS)
    val = _write(tmp_path / "val.jsonl", VAL_ROWS)
    full = run_value(train, val, "tiny", ValueSettings(), out_dir=tmp_path / "all", loaded=tiny)
    # every id of the inputs: the responses' targets and everything in the prompts; close to the full vocabulary
    inputs = run_value(train, val, "tiny", ValueSettings(vocab="inputs"), out_dir=tmp_path / "inputs", loaded=tiny)
    assert 0 < inputs["reference_vocab_ids"] < full["reference_vocab_ids"] == full["vocab_size"]
    for settings in (ValueSettings(vocab="topk", prediction_topk=4), ValueSettings(topk_abs=2), ValueSettings(keep_ratio=0.5),
                     ValueSettings(vocab="topk", reduce="pairwise")):
        summary = run_value(train, val, "tiny", settings, out_dir=tmp_path / "x", loaded=tiny)
        assert summary["n_train"] == 5 and math.isfinite(summary["score_mean"])


@pytest.mark.parametrize("rows, message", [
    (["{not json"], "train.jsonl:1: not valid JSON"),
    (['[1, 2]'], "train.jsonl:1: expected a JSON object"),
    ([{"prompt": "a"}], "train.jsonl:1: missing field 'response'"),
    ([{"prompt": "a", "response": "b"}, {"question": "q"}], "train.jsonl:2: missing field 'answer'"),
    ([{"prompt": "a", "response": 3}], "train.jsonl:1: field 'response' must be a string"),
    ([{"question": "q", "answer": True}], "field 'answer' must be a string or a number"),
    ([{"text": "a"}], "needs fields 'prompt' and 'response'"),
])
def test_bad_training_files_name_the_line(tiny, tmp_path, rows, message):
    from rlvr_lab.analysis.value import ValueInputError, run_value

    train = _write(tmp_path / "train.jsonl", rows)
    val = _write(tmp_path / "val.jsonl", VAL_ROWS)
    with pytest.raises(ValueInputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_value(train, val, "tiny", out_dir=tmp_path / "out", loaded=tiny)


def test_validation_without_a_scorable_sample_and_missing_files_are_errors(tiny, tmp_path):
    from rlvr_lab.analysis.value import ValueInputError, ValueSettings, run_value

    train = _write(tmp_path / "train.jsonl", TRAIN_ROWS)
    for name, rows in (("empty.jsonl", []), ("blank.jsonl", [{"prompt": "x", "response": ""}])):
        val = _write(tmp_path / name, rows)
        with pytest.raises(ValueInputError, match=f"{name}: no sample with a non-empty response"):
            run_value(train, val, "tiny", loaded=tiny)
    with pytest.raises(ValueInputError, match="no such file"):
        run_value(tmp_path / "missing.jsonl", train, "tiny", loaded=tiny)
    with pytest.raises(ValueInputError, match="reduce must be"):
        run_value(train, train, "tiny", ValueSettings(reduce="max"), loaded=tiny)  # type: ignore[arg-type]
    with pytest.raises(ValueInputError, match="more than 1e-09 GiB"):
        run_value(train, train, "tiny", ValueSettings(reduce="pairwise", max_reference_gib=1e-9), loaded=tiny)


def test_token_ids_outside_the_model_vocabulary_truncation_and_empty_prompts(tiny):
    from rlvr_lab.analysis.value import Sample, ValueInputError, ValueSettings, _check_ids, encode_sample

    with pytest.raises(ValueInputError, match="train.jsonl:3: token id 500 is outside the model's vocabulary of 108"):
        _check_ids(Sample([1, 2], [500], line=3), 108, "train.jsonl")
    settings = ValueSettings(max_prompt_tokens=3, max_response_tokens=2)
    prompt, response, truncated = encode_sample(tiny.tokenizer, "prompt", "abcdef", "xyz", settings)
    full = tiny.tokenizer("abcdef", add_special_tokens=True)["input_ids"]
    assert prompt == full[-3:] and len(response) == 2 and truncated
    prompt, _, _ = encode_sample(tiny.tokenizer, "prompt", "", "xyz", ValueSettings())
    assert len(prompt) == 1  # an empty prompt conditions on BOS (or EOS)


def test_cli_value_end_to_end(tmp_path):
    from rlvr_lab.cli import app

    train = _write(tmp_path / "train.jsonl", TRAIN_ROWS)
    val = _write(tmp_path / "val.jsonl", VAL_ROWS)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["value", str(train), "--val", str(val), "--model", "tiny", "--reduce", "pairwise",
                                      "--top-k", "2", "--batch-size", "2", "--out", str(out), "--threads", "1",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "5 training samples (1 with an empty response, score 0) valued against 2 validation samples" in result.output
    assert len((out / "scores.jsonl").read_text().splitlines()) == 5
    assert len((out / "top.jsonl").read_text().splitlines()) == 2
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "a"}])
    result = CliRunner().invoke(app, ["value", str(bad), "--val", str(val), "--model", "tiny", "--out", str(out)])
    assert result.exit_code == 2
    assert "value error" in result.output and "bad.jsonl:1: missing field 'response'" in result.output.replace("\n", "")


# ---- sft.select ---------------------------------------------------------------------------------------------------


def test_forvalue_select_scores_the_warmstart_samples_like_rlvr_value(tiny, tmp_path):
    from rlvr_lab.analysis.value import run_value
    from rlvr_lab.models.chat import render_prompt
    from rlvr_lab.train.sft import forvalue_select

    pool = [{"question": f"What is {a} + {b}?", "answer": str(a + b + (3 if a == 2 else 0))} for a, b in
            ((1, 2), (2, 5), (3, 3), (4, 1), (2, 2), (6, 1))]
    val = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in ((1, 1), (5, 2), (3, 4))]
    kept, scores = forvalue_select(tiny.model, tiny.tokenizer, lambda ex: render_prompt(tiny.tokenizer, ex["question"]),
                                   pool, val, fraction=0.5, target_template="<answer>{answer}</answer>", batch_size=4)
    assert len(kept) == 3 and kept == sorted(kept)
    assert set(kept) == set(sorted(range(6), key=lambda i: -scores[i])[:3])
    summary = run_value(_write(tmp_path / "pool.jsonl", pool), _write(tmp_path / "val.jsonl", val), "tiny",
                        out_dir=tmp_path / "out", loaded=tiny)
    written = [json.loads(line)["score"] for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert summary["n_train"] == 6
    assert written == pytest.approx(scores, rel=1e-4, abs=1e-4)


def test_sft_select_config_is_validated():
    from rlvr_lab.config import ConfigError, build_config

    cfg = build_config({"sft": {"steps": 2, "select": {"fraction": 0.25, "val_size": 4}}})
    assert cfg.sft.select.fraction == 0.25 and cfg.sft.select.vocab == "all"
    assert build_config({}).sft.select is None
    for bad, field in (({"fraction": 0}, "sft.select.fraction"), ({"fraction": 1.5}, "sft.select.fraction"),
                       ({"val_size": 0}, "sft.select.val_size"), ({"vocab": "inputs"}, "sft.select.vocab"),
                       ({"ratio": 0.5}, "ratio")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            build_config({"sft": {"select": bad}})


def test_trainer_warm_starts_on_the_selected_examples_only(tmp_path, monkeypatch):
    import yaml

    import rlvr_lab.train.loop as loop
    from rlvr_lab.config import load_config

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_run import TINY

    data = json.loads(json.dumps(TINY))
    data["run"] = {"output_dir": str(tmp_path), "name": "select", "threads": 1}
    data["sft"] = {"steps": 3, "batch_size": 4, "select": {"fraction": 0.5, "val_size": 6, "batch_size": 4}}
    data["train"]["steps"] = 0
    seen = []
    original = loop.supervised_warmstart

    def recording(model, tokenizer, render, next_examples, **kw):
        def wrapped(step, n):
            examples = next_examples(step, n)
            seen.extend(ex["question"] for ex in examples)
            return examples
        return original(model, tokenizer, render, wrapped, **kw)

    monkeypatch.setattr(loop, "supervised_warmstart", recording)
    (tmp_path / "select.yaml").write_text(yaml.safe_dump(data))
    trainer = loop.Trainer(load_config(tmp_path / "select.yaml"))
    summary = trainer.run()
    select = summary["sft"]["select"]
    assert select["pool"] == 12 and select["kept"] == 6 and select["val"] == 6
    rows = [json.loads(line) for line in (tmp_path / "select" / "sft_select.jsonl").read_text().splitlines()]
    assert [r["position"] for r in rows] == list(range(12))
    kept = [r for r in rows if r["kept"]]
    assert len(kept) == 6 and min(r["score"] for r in kept) >= max(r["score"] for r in rows if not r["kept"])
    kept_questions = [trainer.train_task[r["train_index"]]["question"] for r in kept]
    assert seen == kept_questions * 2  # 3 steps x 4 examples cycle over the 6 kept ones in training order
    assert all(r["train_index"] not in trainer.train_indices[-6:] for r in rows)  # validation examples are not selected


# ---- scripts/forvalue_mislabel.py: the sentiment mislabel set --------------------------------------------------------


def _mislabel_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "forvalue_mislabel", Path(__file__).resolve().parents[1] / "scripts" / "forvalue_mislabel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sentiment_sets_are_deterministic_balanced_disjoint_and_flip_exactly_the_fraction():
    script = _mislabel_script()
    train, val = script.sentiment_sets(3, 25, 7, 0.2)
    assert (train, val) == script.sentiment_sets(3, 25, 7, 0.2)  # the seed fixes everything
    assert train != script.sentiment_sets(4, 25, 7, 0.2)[0]
    assert len(train) == 25 and len(val) == 7
    assert sum(r["corrupted"] for r in train) == 5 and not any(r["corrupted"] for r in val)
    for row in train + val:
        assert row["true_label"] in script.LABELS and row["text"] in script.sentiment_sentences(row["true_label"])
        assert (row["label"] != row["true_label"]) == row["corrupted"]
    for rows in (train, val):  # balanced by true label (an odd count differs by one)
        positives = sum(r["true_label"] == "positive" for r in rows)
        assert abs(2 * positives - len(rows)) <= 1
    texts = [r["text"] for r in train + val]
    assert len(set(texts)) == len(texts)  # distinct sentences, train and val disjoint
    assert sum(r["corrupted"] for r in script.sentiment_sets(0, 10, 2, 0.0)[0]) == 0
    assert all(r["corrupted"] for r in script.sentiment_sets(0, 10, 2, 1.0)[0])
    with pytest.raises(ValueError, match="fraction"):
        script.sentiment_sets(0, 10, 2, 1.5)
    with pytest.raises(ValueError, match="distinct"):
        script.sentiment_sets(0, 2 * len(script.sentiment_sentences("positive")), 2, 0.2)


def test_sentiment_rows_score_only_the_label_with_the_runner(tiny, tmp_path):
    from rlvr_lab.analysis.value import ValueSettings, encode_sample, run_value

    script = _mislabel_script()
    labels, clean = script.write_sentiment_sets(tmp_path, tiny.tokenizer, 1, 6, 2, 0.5)
    assert labels == [int(json.loads(line)["corrupted"]) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert sum(labels) == 3 and len(clean) == 8 and not any(r["corrupted"] for r in clean)
    row = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert row["prompt"].endswith(script.SENTIMENT_LEAD) and row["text"] in row["prompt"]
    assert row["response"] == " " + row["label"]
    _, response_ids, _ = encode_sample(tiny.tokenizer, "prompt", row["prompt"], row["response"], ValueSettings())
    assert response_ids == tiny.tokenizer(" " + row["label"], add_special_tokens=False)["input_ids"]  # no EOS, no wrapper
    summary = run_value(tmp_path / "train.jsonl", tmp_path / "val.jsonl", "tiny", ValueSettings(reduce="pairwise", top_k=0),
                        out_dir=tmp_path / "out", loaded=tiny)
    rows = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert summary["n_train"] == 6 and summary["n_val"] == 2
    train_rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [r["n_tokens"] for r in rows] == [len(tiny.tokenizer(r["response"], add_special_tokens=False)["input_ids"])
                                             for r in train_rows]
    assert all(len(r["pairwise"]) == 2 and r["score"] == pytest.approx(sum(r["pairwise"]) / 2, rel=1e-5, abs=1e-6)
               for r in rows)
    with pytest.raises(ValueError, match="tokens; the accuracy check needs one"):  # it reads one position per label
        script.label_accuracy(tiny, clean)
    h = torch.randn(4, 3)
    sim = script.class_similarity(h[:2], h[2:], ["positive", "negative"], ["positive", "positive"])
    assert sim["dot_same_class"] == pytest.approx(float(h[0] @ (h[2] + h[3])) / 2, rel=1e-5)
    assert sim["dot_other_class"] == pytest.approx(float(h[1] @ (h[2] + h[3])) / 2, rel=1e-5)
