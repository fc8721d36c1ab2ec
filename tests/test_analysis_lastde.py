"""Lastde / Lastde++ (arXiv 2410.06072) scores, the detection runner and `rlvr detect`."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlvr_lab.analysis.detect import DetectSettings, auroc, auroc_interval, load_texts, midranks, run_detect
from rlvr_lab.analysis.lastde import (
    bin_counts,
    diversity_entropy,
    lastde,
    lastde_pp,
    lastde_pp_from_logprobs,
    log_likelihood,
    log_rank,
    mde,
    orbit_cosines,
    score_windows,
    seeded_generator,
    token_logprobs,
    token_ranks,
    token_statistics,
)

U = [1, 2, 13, 7, 9, 5, 4]
TPS = [-0.251, -0.264, -1.281, -0.21, -1.071, -0.723, -2.608, -1.894, -1.407, -2.531, -1.247, -0.083, -4.65,
       -0.438, -2.492, -1.465, -1.089, -0.633, -0.823, -2.085]
OFFLINE_SET = Path(__file__).resolve().parents[1] / "src/rlvr_lab/analysis/data/detect_offline.jsonl"


# ----------------------------------------------------------------------------- B7.6 numbers (spec, official code)


def test_mde_of_the_short_integer_sequence():
    std, de = mde(U, 3, 10, 3)
    # the 4 cosines at tau=1 fall 2/2 in two bins: DE = ln 2 / ln 10 = log10 2; one bin at tau = 2, 3
    assert de.tolist() == pytest.approx([math.log10(2), 0.0, 0.0], abs=1e-6)
    assert float(std) == pytest.approx(0.173800, abs=1e-5)
    std, de = mde(U, 2, 10, 3)
    assert de.tolist() == pytest.approx([0.217322, 0.0, 0.0], abs=1e-5)
    assert float(std) == pytest.approx(0.125471, abs=1e-5)
    assert float(diversity_entropy(U, 3, 10)) == pytest.approx(math.log10(2), abs=1e-6)


def test_lastde_of_the_twenty_token_sequence():
    assert float(mde(TPS, 3, 200, 5)[0]) == pytest.approx(0.117757, abs=1e-5)
    assert float(lastde(TPS, s=3, eps_mult=10, tau_max=5)) == pytest.approx(-11.56835, abs=1e-5)
    assert float(mde(TPS, 4, 160, 15)[0]) == pytest.approx(0.172814, abs=1e-5)
    assert float(lastde(TPS, s=4, eps_mult=8, tau_max=15)) == pytest.approx(-7.88276, abs=1e-5)
    assert float(lastde(TPS)) == float(lastde(TPS, s=3, eps_mult=10, tau_max=5))  # defaults: official white-box


# ----------------------------------------------------------------------------- orbits, cosines, histogram


def test_zero_orbits_have_cosine_zero():
    u = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0]).unsqueeze(1)  # orbits (0,0), (0,0), (0,1), (1,2)
    cos = orbit_cosines(u, 2)[:, 0]
    assert cos[0] == 0 and cos[1] == 0  # both zero / one zero: the norm floor gives 0, not NaN
    assert float(cos[2]) == pytest.approx(2 / math.sqrt(5), abs=1e-6)


def test_parallel_orbits_land_in_the_last_bin():
    # (1,2), (2,4), (4,8), (8,16), (16,32), (32,64) are parallel: cosine 1 up to rounding, which can overshoot
    cos = orbit_cosines(torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]).unsqueeze(1), 2)[:, 0]
    assert torch.all(cos <= 1.0) and cos.tolist() == pytest.approx([1.0] * 5, abs=1e-6)
    assert bin_counts(cos.unsqueeze(1), 10)[0].tolist() == [0] * 9 + [5]


def test_histogram_edges():
    values = torch.tensor([[-1.0], [1.0], [0.0], [-0.2], [0.2], [0.999999]])
    counts = bin_counts(values, 10)[0].tolist()
    assert counts[0] == 1  # -1 in the first bin
    assert counts[9] == 2  # exactly 1 in the last bin, with 0.999999
    assert counts[5] == 1 and counts[4] == 1 and counts[6] == 1  # 0 opens the upper half; the edges -0.2, 0.2 open theirs
    assert sum(counts) == 6
    outside = bin_counts(torch.tensor([[1.5], [-2.0], [0.5]]), 4)[0].tolist()
    assert outside == [0, 0, 0, 1]  # never counted (orbit_cosines clamps, so this cannot come from it)


def test_histogram_matches_torch_histc_per_column():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(300, 7, generator=g) * 2 - 1
    values[:20] = torch.linspace(-1, 1, 20).unsqueeze(1)  # values on and near the bin edges
    for eps in (2, 7, 10, 160, 1000):
        counts = bin_counts(values, eps)
        for j in range(values.shape[1]):
            assert torch.equal(counts[j], torch.histc(values[:, j], bins=eps, min=-1, max=1)), (eps, j)


def test_diversity_entropy_extremes():
    assert float(diversity_entropy([1.0, 2.0, 3.0, 4.0, 5.0], 2, 10)) == pytest.approx(0.0, abs=1e-7)  # one bin
    # s = 1: the cosine of two numbers is the product of their signs (0 with a zero); 1, -1, 0 fill all
    # three bins once, the maximum entropy 1
    assert orbit_cosines(torch.tensor([[1.0], [1.0], [-1.0], [0.0]]), 1)[:, 0].tolist() == [1.0, -1.0, 0.0]
    assert float(diversity_entropy([1.0, 1.0, -1.0, 0.0], 1, 3)) == pytest.approx(1.0, abs=1e-6)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="too short"):
        mde(TPS[:7], 3, 100, 5)  # 7 < tau_max + s = 8
    assert mde(TPS[:8], 3, 100, 5)[0].isfinite()  # exactly tau_max + s is enough
    with pytest.raises(ValueError, match="tau_max"):
        mde(TPS, 3, 100, 1)
    with pytest.raises(ValueError, match="eps"):
        diversity_entropy(TPS, 3, 1)
    with pytest.raises(ValueError, match="bins"):
        lastde(TPS, eps_mult=0.05)  # int(0.05 * 20) = 1 bin
    with pytest.raises(ValueError, match="shape"):
        lastde(torch.zeros(2, 3, 4))


def test_constant_tps_has_undefined_lastde():
    score = lastde([-1.0] * 30)  # every DE is 0, so MDE = 0: -inf, reported as undefined by the runner
    assert score == float("-inf")


# ----------------------------------------------------------------------------- vectorised MDE vs a plain loop


def _mde_loop(u, s, eps, tau_max):
    """One sequence at a time, straight from the definition, with torch.histc as the histogram."""
    des = []
    for tau in range(1, tau_max + 1):
        v = [sum(u[i:i + tau]) / tau for i in range(len(u) - tau + 1)]
        orbits = [torch.tensor(v[i:i + s], dtype=torch.float32) for i in range(len(v) - s + 1)]
        cos = torch.stack([torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-8)
                           for a, b in zip(orbits[:-1], orbits[1:])]).clamp(-1, 1)
        q = torch.histc(cos, bins=eps, min=-1, max=1)
        q = q / q.sum()
        des.append(-sum(float(p) * math.log(float(p)) for p in q if p > 0) / math.log(eps))
    mean = sum(des) / len(des)
    return math.sqrt(sum((d - mean) ** 2 for d in des) / (len(des) - 1))


def test_vectorised_mde_equals_a_per_sample_loop():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(40, 6, generator=g) * 4  # (n, S)
    std, de = mde(logp, 4, 320, 15)
    assert std.shape == (6,) and de.shape == (15, 6)
    for j in range(6):
        assert float(std[j]) == pytest.approx(_mde_loop(logp[:, j].tolist(), 4, 320, 15), abs=1e-5)
        assert torch.equal(mde(logp[:, j], 4, 320, 15)[0], std[j])  # the column alone: identical
    batch = lastde(logp, s=4, eps_mult=8, tau_max=15)
    assert batch.shape == (6,)
    assert all(float(batch[j]) == pytest.approx(float(lastde(logp[:, j], s=4, eps_mult=8, tau_max=15)), rel=1e-6)
               for j in range(6))


# ----------------------------------------------------------------------------- Lastde++


def test_lastde_pp_is_the_z_score_of_the_sampled_lastde():
    g = torch.Generator().manual_seed(2)
    logp = -torch.rand(25, generator=g) * 3
    samples = -torch.rand(25, 5, generator=g) * 3
    score, metrics = lastde_pp_from_logprobs(logp, samples, s=4, eps_mult=8, tau_max=15)
    sampled = [float(lastde(samples[:, j], s=4, eps_mult=8, tau_max=15)) for j in range(5)]
    mean = sum(sampled) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in sampled) / 4)
    observed = float(lastde(logp, s=4, eps_mult=8, tau_max=15))
    assert float(score) == pytest.approx((observed - mean) / std, rel=1e-5)
    assert float(metrics["lastde_pp/sample_std"]) == pytest.approx(std, rel=1e-5)


def test_lastde_pp_is_deterministic_with_a_generator():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(30, 50, generator=g)
    labels = torch.randint(0, 50, (30,), generator=g)
    a = lastde_pp(logits, logits, labels, n_samples=20, generator=torch.Generator().manual_seed(7))
    b = lastde_pp(logits, logits, labels, n_samples=20, generator=torch.Generator().manual_seed(7))
    c = lastde_pp(logits, logits, labels, n_samples=20, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and a.isfinite() and not torch.equal(a, c)
    wider = torch.cat([logits, torch.randn(30, 3, generator=g)], dim=1)  # vocabulary mismatch: first 50 kept
    assert torch.equal(lastde_pp(wider, logits, labels, n_samples=20, generator=torch.Generator().manual_seed(7)), a)
    with pytest.raises(ValueError, match="n_samples"):
        lastde_pp(logits, logits, labels, n_samples=1)


@pytest.fixture(scope="module")
def tiny():
    from rlvr_lab.models.loading import load_model_and_tokenizer

    torch.set_num_threads(1)
    return load_model_and_tokenizer("tiny")


def test_lastde_pp_on_the_tiny_model_with_ref_equal_to_score(tiny):
    ids = tiny.tokenizer("Machine text detection reads token probabilities of a sentence.").input_ids
    with torch.no_grad():
        logits = tiny.model(torch.tensor([ids])).logits[0, :-1]  # (n, V), position t predicts ids[t + 1]
    labels = torch.tensor(ids[1:])
    score = lastde_pp(logits, logits, labels, n_samples=30, generator=torch.Generator().manual_seed(0))
    again = lastde_pp(logits, logits, labels, n_samples=30, generator=torch.Generator().manual_seed(0))
    assert score.isfinite() and torch.equal(score, again)
    # token_logprobs is the same TPS as the logits above
    assert torch.allclose(token_logprobs(tiny.model, ids), torch.log_softmax(logits, -1)[range(len(labels)), labels],
                          atol=1e-5)


# ----------------------------------------------------------------------------- baselines and model reading


def test_ranks_and_baselines():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 1.0, 1.0]])
    ranks = token_ranks(logits, torch.tensor([0, 2, 1]))
    assert ranks.tolist() == [1, 1, 1]  # ties take the best rank of the tie
    assert token_ranks(logits, torch.tensor([1, 0, 0])).tolist() == [3, 3, 1]
    assert float(log_rank(torch.tensor([1, 4]))) == pytest.approx(-math.log(4) / 2)
    assert float(log_likelihood(torch.tensor([-1.0, -3.0]))) == -2.0


def test_windows_cover_every_target_once():
    for n_ids, width, carry in [(1, 8, 4), (2, 8, 4), (8, 8, 4), (9, 8, 4), (30, 8, 4), (30, 8, 1), (30, 8, 7)]:
        windows = score_windows(n_ids, width, carry)
        targets = [t for _, first, end in windows for t in range(first, end)]
        assert targets == list(range(1, n_ids))
        for k, (start, first, end) in enumerate(windows):
            assert end - start <= width and start < first
            assert k == 0 or first - start == carry  # later windows carry exactly `carry` tokens of context
    with pytest.raises(ValueError):
        score_windows(10, 8, 8)


def test_windowed_reading_and_batching(tiny):
    texts = ["A first sentence that is long enough to need three windows of twenty tokens.", "Short one here.",
             "Another text, of a middling length, for the batch."]
    ids = [tiny.tokenizer(t).input_ids for t in texts]
    one = token_statistics(tiny.model, ids, max_context=20, carry=8, batch_size=1)
    many = token_statistics(tiny.model, ids, max_context=20, carry=8, batch_size=3)  # right padding changes nothing
    for a, b, x in zip(one, many, ids):
        assert a.logp.shape == (len(x) - 1,) and torch.allclose(a.logp, b.logp, atol=1e-5)
        assert torch.equal(a.rank, b.rank)
    assert one[0].windows > 2 and one[1].windows == 1
    # every block equals a direct forward pass over its own window
    for start, first, end in score_windows(len(ids[0]), 20, 8):
        with torch.no_grad():
            direct = torch.log_softmax(tiny.model(torch.tensor([ids[0][start:end]])).logits[0], -1)
        expected = [direct[t - start - 1, ids[0][t]] for t in range(first, end)]
        assert torch.allclose(one[0].logp[first - 1:end - 1], torch.stack(expected), atol=1e-5)
    # one generator per window: sampling does not depend on the batch
    gens = lambda: [[seeded_generator(0, i, w) for w in range(10)] for i in range(3)]  # noqa: E731
    s1 = token_statistics(tiny.model, ids, n_samples=5, generators=gens(), max_context=20, carry=8, batch_size=1)
    s3 = token_statistics(tiny.model, ids, n_samples=5, generators=gens(), max_context=20, carry=8, batch_size=3)
    assert all(torch.allclose(a.sample_logp, b.sample_logp, atol=1e-5) for a, b in zip(s1, s3))


# ----------------------------------------------------------------------------- AUROC


def test_auroc_hand_computed_with_ties():
    scores = [0.9, 0.5, 0.5, 0.5, 0.1]
    labels = [1, 1, 1, 0, 0]
    # positive-negative pairs: 0.9 beats both (2), each 0.5 ties 0.5 (1/2) and beats 0.1 (1): (2 + 2 * 1.5) / 6
    assert auroc(scores, labels) == pytest.approx(5 / 6)
    assert midranks(scores) == [5.0, 3.0, 3.0, 3.0, 1.0]
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert auroc([3, 4, 1, 2], [1, 1, 0, 0]) == 1.0 and auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        auroc([1, 2], [1, 1])


def test_auroc_interval_is_reproducible_and_covers_the_estimate():
    g = torch.Generator().manual_seed(4)
    scores = (torch.randn(60, generator=g) + torch.tensor([0.0] * 30 + [1.0] * 30)).tolist()
    labels = [0] * 30 + [1] * 30
    low, high = auroc_interval(scores, labels, resamples=300)
    assert low < auroc(scores, labels) < high and 0 <= low and high <= 1
    assert (low, high) == auroc_interval(scores, labels, resamples=300)


# ----------------------------------------------------------------------------- the runner and the command


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"text": "The committee met on Tuesday to discuss the budget for the coming year, and agreed on most items.", "label": 0},
    {"text": "the the the the the the the the the the the the the the the the the the the the the", "label": 1},
    {"text": "Rivers carry sediment from the mountains to the sea, slowly building wide deltas over time.", "label": 0},
    {"text": "Here is a machine-like sentence that repeats a pattern and a pattern and a pattern again.", "label": 1},
    {"text": "", "label": 0},
    {"text": "too short", "label": 1},
]


def test_cli_end_to_end_on_the_tiny_model(tmp_path):
    from typer.testing import CliRunner

    from rlvr_lab.cli import app

    data = _write(tmp_path / "texts.jsonl", ROWS)
    out = tmp_path / "detect"
    result = CliRunner().invoke(app, ["detect", str(data), "--model", "tiny", "--samples", "10", "--out", str(out),
                                      "--threads", "1", "--batch-size", "3", "--max-context", "64"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "detect.json").read_text())
    assert summary["n_texts"] == 6 and summary["n_scored"] == 4
    assert summary["n_empty"] == 1 and summary["n_too_short"] == 1 and summary["n_multi_window"] == 4
    assert set(summary["methods"]) == {"lastde", "lastde_pp", "loglik", "logrank"}
    for row in summary["methods"].values():
        assert row["n_human"] + row["n_machine"] + row["n_nonfinite"] == 4
        assert row["auroc"] is None or 0 <= row["ci95"][0] <= row["auroc"] <= row["ci95"][1] <= 1
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok", "ok", "ok", "empty", "too_short"]
    assert all(v is None for v in records[4]["scores"].values())
    assert "| Lastde++ |" in (out / "detect.md").read_text() and "1 empty" in result.output


def test_runner_is_deterministic_and_method_selection(tmp_path, tiny):
    data = _write(tmp_path / "texts.jsonl", ROWS[:4])
    settings = DetectSettings(methods=("lastde_pp", "loglik"), n_samples=8, seed=3, batch_size=2)
    a = run_detect(data, tiny, settings=settings)
    b = run_detect(data, tiny, settings=DetectSettings(methods=("lastde_pp", "loglik"), n_samples=8, seed=3,
                                                       batch_size=4))
    for x, y in zip(a.records, b.records):  # the batch size changes a score by float rounding at most
        assert x.scores.keys() == y.scores.keys()
        assert all((x.scores[k] is None) == (y.scores[k] is None) for k in x.scores)
        assert all(x.scores[k] == pytest.approx(y.scores[k], rel=1e-5) for k in x.scores if x.scores[k] is not None)
    assert set(a.summary["methods"]) == {"lastde_pp", "loglik"}
    only_baselines = run_detect(data, tiny, settings=DetectSettings(methods=("loglik",)))
    assert only_baselines.summary["min_tokens"] == 1


def test_bad_input(tmp_path):
    from typer.testing import CliRunner

    from rlvr_lab.cli import app

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = CliRunner().invoke(app, ["detect", str(empty), "--model", "tiny", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "empty" in result.output
    bad = _write(tmp_path / "bad.jsonl", [{"text": "fine", "label": 0}, {"text": "x", "label": 2}])
    result = CliRunner().invoke(app, ["detect", str(bad), "--model", "tiny", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output and "label" in result.output
    with pytest.raises(ValueError, match="'text'"):
        load_texts(_write(tmp_path / "notext.jsonl", [{"label": 0}]))
    with pytest.raises(ValueError, match="unknown method"):
        DetectSettings(methods=("lastde", "perplexity"))
    # unlabelled texts: scored, no AUROC
    plain = _write(tmp_path / "plain.jsonl", [{"text": ROWS[0]["text"]}])
    result = run_detect(plain, "tiny", settings=DetectSettings(methods=("lastde",)))
    assert result.records[0].scores["lastde"] is not None and result.summary["methods"]["lastde"]["auroc"] is None


def test_importing_lastde_does_not_load_transformers():
    code = "import sys, rlvr_lab.analysis.lastde; print(sorted({'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(not OFFLINE_SET.is_file(), reason="the offline detection set is not built")
def test_offline_set_is_balanced_and_paired():
    texts = load_texts(OFFLINE_SET)
    assert sum(t.label == 0 for t in texts) == sum(t.label == 1 for t in texts) >= 50
    rows = [json.loads(line) for line in OFFLINE_SET.read_text().splitlines()]
    by_pair = {}
    for row in rows:
        by_pair.setdefault(row["pair"], []).append(row)
    assert all(sorted(r["label"] for r in pair) == [0, 1] and len({len(r["text"].split()) for r in pair}) == 1
               for pair in by_pair.values())
