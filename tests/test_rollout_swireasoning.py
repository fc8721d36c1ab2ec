"""SwiReasoning decoding (arXiv 2510.05069; spec B9.3): the switching rule on scripted entropies, the soft
embedding, switch-count control, and the generation loop on a tiny model against plain decoding and a
manual forward."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub

import pytest
import torch

from rlvr_lab.config import ConfigError, load_config
from rlvr_lab.models import TinyModelConfig, render_prompt
from rlvr_lab.models.loading import load_model_and_tokenizer
from rlvr_lab.rollout.engine import RolloutEngine
from rlvr_lab.rollout.sampling import SamplingParams
from rlvr_lab.rollout.swireasoning import (
    SwirConfig,
    SwirController,
    SwirGeneration,
    SwirTokenIds,
    is_math_text,
    soft_embedding,
    token_ids,
)

torch.set_num_threads(1)

# Larger init weights than the default give varied, peaked next-token distributions (and so switches).
SHARP = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                        init_std=0.2)
QUESTIONS = ["What is 2+3?", "Compute 17 * 4 - 9, then add 120 to it.", "Hi", "Sort 9 4 7 1; give the median."]
BACKENDS = ("native", "hf")
# A tiny-model setting that switches often: every character is a letter or digit, so math forcing would
# keep it explicit almost always.
SWITCHY = SwirConfig(window=2, force_math_tokens=False)


@pytest.fixture(scope="module")
def loaded():
    return load_model_and_tokenizer("tiny", tiny=SHARP, seed=0)


@pytest.fixture(scope="module")
def prompts(loaded):
    tok = loaded.tokenizer
    return [tok.encode(render_prompt(tok, q), add_special_tokens=False) for q in QUESTIONS]


def run_updates(ctrl: SwirController, entropies, sampled=None):
    """Feed ``entropies`` (T steps of (B,) values) to the controller; returns the steps."""
    steps = []
    for t, h in enumerate(entropies):
        h = torch.as_tensor(h, dtype=torch.float32).reshape(-1)
        tok = torch.full(h.shape, 7, dtype=torch.long) if sampled is None else torch.as_tensor(sampled[t]).reshape(-1)
        steps.append(ctrl.update(t, h, tok))
    return steps


# ---- (a) the switching rule on a scripted entropy sequence ----------------------------------------------


def test_scripted_entropy_gives_the_spec_mode_trace():
    ctrl = SwirController(SwirConfig(window=2, force_math_tokens=False), SwirTokenIds(), 1, max_new_tokens=16)
    refs = []
    steps = []
    for t, h in enumerate([2.0, 2.5, 1.5, 1.6, 1.7]):
        steps.append(ctrl.update(t, torch.tensor([h]), torch.tensor([7])))
        refs.append(round(float(ctrl.h_ref), 4))
    modes = ["latent" if bool(s.feed_latent) else "explicit" for s in steps]
    # t=0 latent (H_ref 2.0); t=1 stays (2.5 > 2.0); t=2 explicit (1.5 < 2.0); t=3 stays (dwell 1 < W);
    # t=4 back to latent (1.7 > 1.5, dwell 2 >= W)
    assert modes == ["latent", "latent", "explicit", "explicit", "latent"]
    assert refs == [2.0, 2.0, 1.5, 1.5, 1.7]
    assert [bool(s.to_explicit) for s in steps] == [False, False, True, False, False]
    assert [bool(s.to_latent) for s in steps] == [False, False, False, False, True]
    assert int(ctrl.switches) == 1


def test_batched_controller_equals_one_controller_per_row():
    seqs = [[2.0, 2.5, 1.5, 1.6, 1.7, 1.2, 3.0, 3.1], [1.0, 0.5, 0.9, 0.4, 0.8, 0.9, 0.3, 2.0],
            [3.0, 3.0, 3.0, 2.9, 3.5, 3.6, 3.7, 1.0]]
    cfg = SwirConfig(window=2, force_math_tokens=False)
    batched = run_updates(SwirController(cfg, SwirTokenIds(), 3, max_new_tokens=8), list(zip(*seqs)))
    for i, seq in enumerate(seqs):
        alone = run_updates(SwirController(cfg, SwirTokenIds(), 1, max_new_tokens=8), seq)
        assert [bool(s.feed_latent[i]) for s in batched] == [bool(s.feed_latent) for s in alone]


def test_sampled_end_think_locks_explicit_and_math_tokens_are_fed_explicit():
    ids = SwirTokenIds(end_think=9, math=(5,))
    ctrl = SwirController(SwirConfig(window=1), ids, 1, max_new_tokens=16)
    # t=1 writes </think> while explicit; later entropy rises again, yet the row never returns to latent
    steps = run_updates(ctrl, [2.0, 1.0, 3.0, 4.0, 5.0], sampled=[7, 9, 7, 7, 7])
    assert [bool(s.feed_latent) for s in steps] == [True, False, False, False, False]
    # a math token is fed as itself inside a latent block, without leaving the block
    ctrl = SwirController(SwirConfig(window=1), ids, 1, max_new_tokens=16)
    steps = run_updates(ctrl, [2.0, 2.5, 2.6], sampled=[7, 5, 7])
    assert [bool(s.feed_latent) for s in steps] == [True, False, True]
    assert bool(ctrl.latent)


def test_math_texts():
    assert all(is_math_text(s) for s in ("7", " 42", "x", "+", "=", ")", "\\frac", " ^"))
    assert not any(is_math_text(s) for s in ("the", " ", "", "ab", "é", "Hello"))


# ---- (b) the soft embedding ----------------------------------------------------------------------------


def test_soft_embedding_is_p_transpose_e():
    g = torch.Generator().manual_seed(0)
    E = torch.randn(11, 5, generator=g)
    p = torch.softmax(torch.randn(3, 11, generator=g), dim=-1)
    by_hand = torch.stack([sum(p[n, v].double() * E[v].double() for v in range(11)) for n in range(3)])
    assert torch.allclose(soft_embedding(p, E).double(), by_hand, atol=1e-6)
    onehot = torch.zeros(2, 11)
    onehot[0, 4] = onehot[1, 10] = 1.0
    assert torch.equal(soft_embedding(onehot, E), E[[4, 10]])
    # a padded embedding table (more rows than scored tokens): only the first V rows mix
    q = torch.softmax(torch.randn(3, 8, generator=g), dim=-1)
    assert torch.equal(soft_embedding(q, E), q @ E[:8])


def test_controller_entropy_is_the_raw_distributions():
    x = torch.randn(4, 30, generator=torch.Generator().manual_seed(3)) * 3
    p = torch.softmax(x, dim=-1)
    ctrl = SwirController(SwirConfig(), SwirTokenIds(), 4, max_new_tokens=8)
    step = ctrl.step(0, p, torch.zeros(4, dtype=torch.long))
    by_hand = torch.tensor([-sum(float(q) * math.log(float(q)) for q in row) for row in p])
    assert torch.allclose(step.entropy, by_hand, atol=1e-5)
    assert torch.allclose(torch.logsumexp(x, -1) - (p * x).sum(-1), by_hand, atol=1e-5)  # the loop's form


def test_inputs_follow_the_blends_of_the_paper():
    E = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))
    ids = SwirTokenIds(think=1, end_think=2, first_step=3)
    cfg = SwirConfig(alpha0=0.5, beta0=0.7, window=1)
    T = 10
    ctrl = SwirController(cfg, ids, 1, max_new_tokens=T)
    p = torch.softmax(torch.randn(1, 12, generator=torch.Generator().manual_seed(2)), dim=-1)
    s0 = ctrl.update(0, torch.tensor([2.0]), torch.tensor([5]))
    assert torch.allclose(ctrl.next_inputs(0, p, s0, E), 0.9 * (p @ E) + 0.1 * E[3])
    s1 = ctrl.update(1, torch.tensor([1.0]), torch.tensor([6]))  # latent -> explicit: the β blend
    b1 = 0.7 + 0.3 * 1 / T
    assert bool(s1.to_explicit) and torch.allclose(ctrl.next_inputs(1, p, s1, E), b1 * (p @ E) + (1 - b1) * E[2])
    s2 = ctrl.update(2, torch.tensor([2.0]), torch.tensor([6]))  # explicit -> latent: the α blend
    a2 = 0.5 + 0.5 * 2 / T
    assert bool(s2.to_latent) and torch.allclose(ctrl.next_inputs(2, p, s2, E), a2 * (p @ E) + (1 - a2) * E[1])
    s3 = ctrl.update(3, torch.tensor([3.0]), torch.tensor([6]))  # staying latent: the plain mixture
    assert torch.allclose(ctrl.next_inputs(3, p, s3, E), p @ E)


# ---- (c) switch-count control ----------------------------------------------------------------------------


def test_switch_cap_forces_convergence_then_termination_and_answer_budget():
    ids = SwirTokenIds(convergence=(101, 102), termination=(201, 202, 203))
    ctrl = SwirController(SwirConfig(window=1, max_switch_count=1, answer_budget=2, force_math_tokens=False),
                          ids, 1, max_new_tokens=32)
    #        t: 0    1    2    3    4    5    6    7    8    9   10
    H = [2.0, 1.0, 1.5, 1.0, 2.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    steps = run_updates(ctrl, H)
    tokens = [int(s.tokens) for s in steps]
    # switch 1 at t=1 (C_sw = C_max): the convergence text is forced from the very next step
    assert [bool(s.to_explicit) for s in steps][:2] == [False, True]
    assert tokens[2:4] == [101, 102]
    # switch 2 at t=3 (C_sw = 2·C_max): the convergence text again; switch 3 at t=5 (> 2·C_max): termination
    assert tokens[4:6] == [101, 102]
    assert tokens[6:9] == [201, 202, 203]
    assert [bool(s.forced) for s in steps] == [False, False] + [True] * 7 + [False, False]
    # then answer_budget = 2 free tokens, the second of which ends the response
    assert [bool(s.finished) for s in steps] == [False] * 10 + [True]
    assert tokens[9:] == [7, 7]


def test_engine_stops_answer_budget_tokens_after_the_termination_text(loaded, prompts):
    cfg = SwirConfig(window=1, max_switch_count=1, answer_budget=3, force_math_tokens=False, end_think_text="",
                     convergence_text="<search>", termination_text="<answer>")
    engine = RolloutEngine(loaded.model, loaded.tokenizer, swireasoning=cfg)
    gen = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=60))
    answer_id = loaded.tokenizer.convert_tokens_to_ids("<answer>")
    terminated = 0
    for i in range(len(prompts)):
        ids = gen.response_ids[i][gen.response_mask[i]].tolist()
        forced = (~gen.sampled_mask[i] & gen.response_mask[i]).tolist()
        if answer_id in ids and forced[ids.index(answer_id)]:
            at = ids.index(answer_id)
            assert len(ids) == at + 1 + 3 and not gen.truncated[i]
            terminated += 1
        assert not any(f and gen.loss_mask[i, j] for j, f in enumerate(forced))
    assert terminated >= 1


# ---- (d) the generation loop on a tiny model --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_and_unbatched_greedy_agree(loaded, prompts, backend):
    """Same tokens, modes and log-probs, in float64. (In float32 a run of latent steps feeds the rounding
    differences that padding makes back as continuous inputs and grows them, to ~1e-2 in the log-probs over
    9 consecutive latent steps of this random model, which can flip a near-tie; a token fed as an id resets
    them.)"""
    model = copy.deepcopy(loaded.model).to(torch.float64)
    engine = RolloutEngine(model, loaded.tokenizer, backend=backend, swireasoning=SWITCHY)
    params = SamplingParams(temperature=0.0, max_new_tokens=24)
    batched = engine.generate(prompts, params)
    assert isinstance(batched, SwirGeneration)
    assert 0 < int(batched.latent_mask.sum()) < int(batched.response_mask.sum())  # both kinds of steps
    for i, p in enumerate(prompts):
        alone = engine.generate([p], params)
        n = int(alone.response_mask.sum())
        assert batched.response_ids[i, :n].tolist() == alone.response_ids[0, :n].tolist()
        assert int(batched.response_mask[i].sum()) == n
        assert batched.latent_mask[i, :n].tolist() == alone.latent_mask[0, :n].tolist()
        assert torch.allclose(batched.sampler_logprobs[i, :n], alone.sampler_logprobs[0, :n], atol=1e-6)


def test_backends_agree(loaded, prompts):
    """Same tokens and modes (in float64). Both decoders hand float32 logits to the loop, so their log-probs
    start one float32 ulp apart; latent runs grow that (about 3x per latent step on this random model; in a
    float32 model far enough to flip a near-tie), so the log-probs are compared loosely here and exactly, one
    step at a time, in the manual-forward test below."""
    model = copy.deepcopy(loaded.model).to(torch.float64)
    params = SamplingParams(temperature=0.0, max_new_tokens=24)
    native, hf = (RolloutEngine(model, loaded.tokenizer, backend=b, swireasoning=SWITCHY).generate(prompts, params)
                  for b in BACKENDS)
    assert torch.equal(native.response_ids, hf.response_ids) and torch.equal(native.latent_mask, hf.latent_mask)
    assert torch.allclose(native.sampler_logprobs, hf.sampler_logprobs, atol=3e-2)
    assert torch.allclose(native.sampler_logprobs[:, :2], hf.sampler_logprobs[:, :2], atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_never_latent_equals_plain_greedy_decoding(loaded, prompts, backend):
    T = 24
    params = SamplingParams(temperature=0.0, max_new_tokens=T, stop_strings=("</answer>",))
    plain = RolloutEngine(loaded.model, loaded.tokenizer, backend=backend).generate(prompts, params)
    explicit = SwirConfig(start_latent=False, window=T + 1)  # starts explicit and can never go latent
    swir = RolloutEngine(loaded.model, loaded.tokenizer, backend=backend, swireasoning=explicit).generate(prompts, params)
    assert torch.equal(swir.response_ids, plain.response_ids)
    assert torch.equal(swir.loss_mask, plain.loss_mask) and not swir.latent_mask.any()
    assert swir.texts == plain.texts
    assert torch.allclose(swir.sampler_logprobs, plain.sampler_logprobs, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("first_step_text", ["", "\n"])
def test_a_latent_step_equals_a_forward_of_the_soft_embedding(loaded, prompts, backend, first_step_text):
    model, tok = loaded.model, loaded.tokenizer
    cfg = SwirConfig(force_math_tokens=False, first_step_text=first_step_text)
    engine = RolloutEngine(model, tok, backend=backend, swireasoning=cfg)
    prompt = prompts[0]
    gen = engine.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=2))
    assert gen.latent_mask[0].tolist() == [True, False]
    E = model.get_input_embeddings().weight
    ids = torch.tensor([prompt])
    with torch.no_grad():
        p0 = torch.softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
        soft = p0 @ E
        if first_step_text:
            soft = 0.9 * soft + 0.1 * E[tok.encode(first_step_text, add_special_tokens=False)[0]]
        embeds = torch.cat([E[ids[0]], soft[None]])[None]  # (1, Lp + 1, d)
        logp1 = torch.log_softmax(model(inputs_embeds=embeds).logits[0, -1].float(), dim=-1)
    assert gen.response_ids[0, 0] == p0.argmax()
    y1 = int(gen.response_ids[0, 1])
    assert y1 == int(logp1.argmax())
    assert math.isclose(float(gen.sampler_logprobs[0, 1]), float(logp1[y1]), abs_tol=1e-4)


def test_latent_tokens_are_masked_out_of_the_loss(loaded, prompts):
    engine = RolloutEngine(loaded.model, loaded.tokenizer, swireasoning=SWITCHY)
    gen = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=16), seed=3)
    assert torch.equal(gen.loss_mask, gen.sampled_mask & gen.response_mask & ~gen.latent_mask)
    assert gen.latent_mask.any() and gen.loss_mask.any()
    assert not (gen.latent_mask & ~gen.response_mask).any()
    metrics = gen.rollout_metrics()
    assert 0 < metrics["swir/latent_frac"] < 1
    # reproducible with a seed
    again = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=16), seed=3)
    assert torch.equal(gen.response_ids, again.response_ids)


def test_engine_refuses_an_adaptive_temperature(loaded, prompts):
    engine = RolloutEngine(loaded.model, loaded.tokenizer, swireasoning=SWITCHY)
    with pytest.raises(ValueError, match="SwiReasoning"):
        engine.generate(prompts, SamplingParams(temperature=1.0), temperature_fn=lambda x: torch.ones(len(x)))


def test_token_ids_of_a_model_without_think_tokens(loaded):
    ids = token_ids(loaded.tokenizer, SwirConfig(think_text="", end_think_text="ab", first_step_text="\n"))
    tok = loaded.tokenizer
    assert ids.think is None and ids.end_think == tok.convert_tokens_to_ids("a")  # the text's first token
    assert ids.first_step == tok.convert_tokens_to_ids("\n")
    assert tok.convert_tokens_to_ids("7") in ids.math and tok.convert_tokens_to_ids("<eos>") not in ids.math


# ---- config and trainer ------------------------------------------------------------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("overrides, keys", [
    (["rollout.adaptive_temperature={}"], ["rollout.mode=swireasoning", "rollout.adaptive_temperature"]),
    (["train.old_logprobs=sampler"], ["rollout.mode=swireasoning", "train.old_logprobs"]),
])
def test_config_refuses_invalid_combinations(overrides, keys):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides=["rollout.mode=swireasoning", *overrides])
    for key in keys:
        assert key in str(err.value)


def test_config_refuses_swireasoning_with_search():
    with pytest.raises(ConfigError, match="search.enabled"):
        load_config(CONFIGS / "search_tiny.yaml", overrides=["rollout.mode=swireasoning"])


def test_config_fields_reach_the_engine(loaded):
    from rlvr_lab.train.loop import make_engine

    cfg = load_config(None, overrides=["rollout.mode=swireasoning", "rollout.swireasoning.alpha0=0.5",
                                       "rollout.swireasoning.max_switch_count=2"])
    engine = make_engine(loaded.model, loaded.tokenizer, cfg.rollout)
    assert engine.swir.cfg.alpha0 == 0.5 and engine.swir.cfg.max_switch_count == 2
    assert make_engine(loaded.model, loaded.tokenizer, load_config(None).rollout).swir is None
    with pytest.raises(ConfigError, match="alpha0"):
        load_config(None, overrides=["rollout.swireasoning.alpha0=1.5"])


def test_trainer_runs_with_swireasoning_rollouts(tmp_path):
    from tiny_run import TINY

    import yaml

    from rlvr_lab.train.loop import Trainer

    data = {**TINY, "run": {"output_dir": str(tmp_path), "name": "swir", "threads": 1},
            "rollout": {"max_new_tokens": 8, "mode": "swireasoning",
                        "swireasoning": {"window": 2, "force_math_tokens": False}}}
    (tmp_path / "swir.yaml").write_text(yaml.safe_dump(data))
    summary = Trainer(load_config(tmp_path / "swir.yaml")).run()
    rows = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["stage"] == "rl"]
    assert len(rl) == 2
    for r in rl:
        assert 0 <= r["swir/latent_frac"] <= 1 and math.isfinite(r["policy/grad_norm"])
