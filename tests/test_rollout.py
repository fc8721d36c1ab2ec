"""Tests of rlvr_lab.rollout: the batched engine on both backends and the sampling helpers, on a tiny model."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub

import pytest
import torch

from rlvr_lab.models import TinyModelConfig, build_char_tokenizer, build_tiny_model, render_prompt
from rlvr_lab.rollout.engine import RolloutEngine
from rlvr_lab.rollout import native as native_module
from rlvr_lab.rollout.native import NativeDecoder, weight_packing_supported
from rlvr_lab.rollout.sampling import SamplingParams, filtered_logprobs, sample_next
from rlvr_lab.train.logprobs import sequence_token_stats

torch.set_num_threads(1)

SMALL = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
# At the default init (std 0.02) the next-token distribution is nearly flat and greedy decoding emits the
# same token for every prompt, which would hide padding and position bugs; larger weights give varied argmaxes.
SHARP = SMALL.model_copy(update={"init_std": 0.2})

# Rendered prompt lengths differ (21 to 58 tokens), so every batch is left-padded.
QUESTIONS = ["What is 2+3?", "Compute 17 * 4 - 9, then add 120 to it.", "Hi", "Sort 9 4 7 1; give the median."]
BACKENDS = ("native", "hf")


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(SMALL, tokenizer, seed=0)


@pytest.fixture(scope="module")
def sharp_model(tokenizer):
    return build_tiny_model(SHARP, tokenizer, seed=0)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer.encode(render_prompt(tokenizer, q), add_special_tokens=False) for q in QUESTIONS]


def stats_of(model, gen, temperature: float) -> torch.Tensor:
    """(B, T) log-probs of the generated tokens recomputed by the trainer's forward."""
    input_ids = torch.cat([gen.prompt_ids, gen.response_ids], dim=1)
    attention_mask = torch.cat([gen.prompt_mask, gen.response_mask], dim=1)
    with torch.no_grad():
        return sequence_token_stats(
            model, input_ids, attention_mask, gen.prompt_ids.shape[1], temperature=temperature
        ).logprobs


# ---- (a) reproducibility ----------------------------------------------------------------------


def test_same_seed_same_tokens_different_seed_different_tokens(model, tokenizer, prompts):
    engine = RolloutEngine(model, tokenizer)
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    torch.manual_seed(1)
    first = engine.generate(prompts, params, seed=7)
    torch.manual_seed(2)  # the engine's own generator decides; the global RNG must not matter
    again = engine.generate(prompts, params, seed=7)
    other = engine.generate(prompts, params, seed=8)
    assert torch.equal(first.response_ids, again.response_ids)
    assert torch.equal(first.sampler_logprobs, again.sampler_logprobs)
    assert first.texts == again.texts
    assert not torch.equal(first.response_ids, other.response_ids)


# ---- (b) native and generic backends ----------------------------------------------------------


def test_auto_backend_picks_native_for_llama(model, tokenizer):
    assert RolloutEngine(model, tokenizer).backend == "native"
    assert RolloutEngine(model, tokenizer, backend="hf").backend == "hf"
    with pytest.raises(ValueError, match="backend"):
        RolloutEngine(model, tokenizer, backend="vllm")


def test_greedy_tokens_agree_across_backends_padding_and_generate(sharp_model, tokenizer, prompts):
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    native = RolloutEngine(sharp_model, tokenizer, backend="native").generate(prompts, params)
    generic = RolloutEngine(sharp_model, tokenizer, backend="hf").generate(prompts, params)
    assert native.prompt_mask.sum(-1).unique().numel() == len(prompts)  # every row padded differently
    assert torch.equal(native.response_ids, generic.response_ids)
    assert torch.allclose(native.sampler_logprobs, generic.sampler_logprobs, atol=1e-5)
    assert len({tuple(row.tolist()) for row in native.response_ids}) > 1  # the check above is not vacuous

    engine = RolloutEngine(sharp_model, tokenizer)
    for i, prompt in enumerate(prompts):
        alone = engine.generate([prompt], params)  # no padding at all
        assert torch.equal(alone.response_ids[0], native.response_ids[i])
        # transformers' own greedy search as an independent reference (EOS masked so lengths are equal)
        with torch.no_grad():
            ref = sharp_model.generate(
                torch.tensor([prompt]), do_sample=False, max_new_tokens=12, min_new_tokens=12
            )[0, len(prompt) :]
        assert torch.equal(ref, native.response_ids[i])


def test_sampled_tokens_agree_across_backends(model, tokenizer, prompts):
    # Both backends feed the same sample_next with the same generator, so equal logits give equal draws;
    # float noise between the two forwards is ~1e-7 and has not flipped a draw on these prompts.
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    native = RolloutEngine(model, tokenizer, backend="native").generate(prompts, params, seed=3)
    generic = RolloutEngine(model, tokenizer, backend="hf").generate(prompts, params, seed=3)
    assert torch.equal(native.response_ids, generic.response_ids)
    assert torch.allclose(native.sampler_logprobs, generic.sampler_logprobs, atol=1e-5)


# ---- (c) sampler log-probs match the trainer's recomputation ----------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_match_sequence_token_stats(model, tokenizer, prompts, backend, temperature):
    engine = RolloutEngine(model, tokenizer, backend=backend)
    # a share of the vocabulary stops a row, so rows end at different steps and the batch is compacted
    engine.eos_ids = list(range(40, 60))
    gen = engine.generate(prompts, SamplingParams(temperature=temperature, max_new_tokens=24), seed=5)
    assert gen.response_lengths.unique().numel() > 1
    recomputed = stats_of(model, gen, temperature)
    mask = gen.response_mask
    assert torch.allclose(recomputed[mask], gen.sampler_logprobs[mask], atol=1e-4)
    assert torch.all(gen.sampler_logprobs[~mask] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampler_entropy_matches_the_recomputed_entropy(model, tokenizer, prompts, backend):
    """report_entropy adds the tempered entropy at each sampled position (0 elsewhere), as the trainer's
    old pass would compute it, and draws the same tokens as without it."""
    engine = RolloutEngine(model, tokenizer, backend=backend)
    engine.eos_ids = list(range(40, 60))
    params = SamplingParams(temperature=0.7, max_new_tokens=24)
    plain = engine.generate(prompts, params, seed=5)
    gen = engine.generate(prompts, SamplingParams(temperature=0.7, max_new_tokens=24, report_entropy=True), seed=5)
    assert plain.sampler_entropy is None and torch.equal(plain.response_ids, gen.response_ids)
    assert gen.response_lengths.unique().numel() > 1  # compacted batch: entropies must follow their rows
    input_ids = torch.cat([gen.prompt_ids, gen.response_ids], dim=1)
    attention_mask = torch.cat([gen.prompt_mask, gen.response_mask], dim=1)
    with torch.no_grad():
        entropy = sequence_token_stats(model, input_ids, attention_mask, gen.prompt_ids.shape[1],
                                       temperature=0.7, with_entropy=True).entropy
    mask = gen.response_mask
    assert torch.allclose(gen.sampler_entropy[mask], entropy[mask], atol=1e-4)
    assert (gen.sampler_entropy[mask] > 0).all() and torch.all(gen.sampler_entropy[~mask] == 0)


def test_tempered_entropy_hand_computed():
    from rlvr_lab.rollout.sampling import tempered_entropy

    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, 5.0]])  # p = (1/4, 3/4) and (1/2, 1/2) at T=1
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert torch.allclose(tempered_entropy(logits, SamplingParams(temperature=1.0)), torch.tensor([h, math.log(2)]))
    # T=0.5 squares the odds: p = (1/10, 9/10); top-k does not change the reported entropy
    h2 = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    got = tempered_entropy(logits[:1], SamplingParams(temperature=0.5, top_k=1))
    assert torch.allclose(got, torch.tensor([h2]))


# ---- (d) masks, padding and truncation --------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_padding_and_truncation(model, tokenizer, backend):
    engine = RolloutEngine(model, tokenizer, backend=backend)
    stop_ids = set(range(40, 52))  # about one token in nine ends a row
    engine.eos_ids = sorted(stop_ids)
    batch = [tokenizer.encode(render_prompt(tokenizer, f"What is {i} + {i * i}?"), add_special_tokens=False)
             for i in range(8)]
    T = 6
    gen = engine.generate(batch, SamplingParams(temperature=1.0, max_new_tokens=T), seed=0)

    B = len(batch)
    assert gen.prompt_ids.shape == gen.prompt_mask.shape and gen.prompt_ids.shape[0] == B
    assert gen.response_ids.shape == gen.response_mask.shape == gen.sampled_mask.shape == gen.sampler_logprobs.shape
    assert gen.response_ids.shape == (B, T)  # some row ran to the end, so the width is max_new_tokens
    assert gen.truncated.shape == (B,) and len(gen.texts) == B
    assert gen.prompt_mask.dtype == gen.response_mask.dtype == gen.sampled_mask.dtype == torch.bool

    lengths = gen.response_lengths.tolist()
    assert gen.truncated.any() and not gen.truncated.all()  # the seed gives both kinds of row
    for i, n in enumerate(lengths):
        row = gen.response_ids[i].tolist()
        assert gen.response_mask[i].tolist() == [True] * n + [False] * (T - n)  # real tokens form a prefix
        assert row[n:] == [engine.pad_id] * (T - n)
        assert not stop_ids & set(row[: n - 1])  # nothing stopped the row before its last token
        stopped = row[n - 1] in stop_ids
        assert gen.truncated[i].item() == (not stopped)
        assert stopped or n == T
    assert torch.equal(gen.sampled_mask, gen.response_mask)  # single-turn: every real token was sampled
    assert torch.equal(gen.loss_mask, gen.response_mask)
    assert torch.all(gen.prompt_ids[~gen.prompt_mask] == engine.pad_id)  # left padding uses the pad id


def test_row_stopping_on_its_last_allowed_token_is_not_truncated(model, tokenizer, prompts):
    engine = RolloutEngine(model, tokenizer)
    params = SamplingParams(temperature=1.0, max_new_tokens=4)
    free = engine.generate(prompts[:1], params, seed=0)
    last = free.response_ids[0, -1].item()
    assert last not in free.response_ids[0, :-1].tolist()  # so it first appears at the last step
    engine.eos_ids = [last]
    gen = engine.generate(prompts[:1], params, seed=0)  # one row: the same draws as the free run
    assert gen.response_lengths.tolist() == [4]
    assert gen.truncated.tolist() == [False]
    assert free.truncated.tolist() == [True]


# ---- (e) stop strings -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_string_ends_generation_right_after_it(model, tokenizer, prompts, backend):
    engine = RolloutEngine(model, tokenizer, backend=backend)
    params = SamplingParams(temperature=1.0, max_new_tokens=20)
    free = engine.generate(prompts[:1], params, seed=11)
    ids = free.response_ids[0].tolist()
    stop = tokenizer.decode(ids[2:4])  # the 3rd and 4th tokens: a stop string spanning two tokens
    # the first prefix of the free run that contains the stop string is where generation must end
    k = next(n for n in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:n]))
    assert 2 <= k <= 4

    gen = engine.generate(prompts[:1], SamplingParams(temperature=1.0, max_new_tokens=20, stop_strings=(stop,)),
                          seed=11)
    assert gen.response_lengths.tolist() == [k]
    assert gen.response_ids[0, :k].tolist() == ids[:k]  # one row, so the same draws up to the stop
    assert gen.truncated.tolist() == [False]
    assert gen.texts[0].endswith(stop)
    assert gen.texts[0] == tokenizer.decode(ids[:k], skip_special_tokens=True)


def test_stop_strings_in_a_batch_stop_only_the_rows_that_emit_them(model, tokenizer, prompts):
    engine = RolloutEngine(model, tokenizer)
    stops = tuple("0123456789")  # no tag token contains a digit, so each stop is one whole token
    params = SamplingParams(temperature=1.0, max_new_tokens=16, stop_strings=stops)
    # the first seed whose batch mixes stopped and truncated rows (the check below needs both kinds)
    gen = next(g for g in (engine.generate(prompts, params, seed=s) for s in range(50))
               if g.truncated.any() and not g.truncated.all())
    for i, text in enumerate(gen.texts):
        n = int(gen.response_lengths[i])
        digits = [j for j, c in enumerate(text) if c in stops]
        if gen.truncated[i]:
            assert n == 16 and not digits
        elif gen.response_ids[i, n - 1].item() in engine.eos_ids:  # a sampled <eos> also ends a row
            assert not digits
        else:
            assert digits == [len(text) - 1]  # the first digit ends the row and the text


# ---- (f) filters ------------------------------------------------------------------------------


def test_top_k_one_and_tiny_top_p_equal_greedy(sharp_model, tokenizer, prompts):
    engine = RolloutEngine(sharp_model, tokenizer)
    greedy = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=10))
    top_k = engine.generate(prompts, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=10), seed=4)
    top_p = engine.generate(prompts, SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=10), seed=4)
    assert torch.equal(top_k.response_ids, greedy.response_ids)
    assert torch.equal(top_p.response_ids, greedy.response_ids)
    # one token left: it has probability 1 under the sampling distribution
    assert torch.all(top_k.sampler_logprobs == 0) and torch.all(top_p.sampler_logprobs == 0)


def test_filtered_logprobs_top_k_keeps_k_tokens():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    logp = filtered_logprobs(logits, SamplingParams(top_k=2))
    finite = torch.isfinite(logp)
    assert finite.sum(-1).tolist() == [2] * 5
    assert torch.equal(finite, torch.zeros_like(finite).scatter(-1, logits.topk(2).indices, True))
    assert torch.allclose(logp.exp().sum(-1), torch.ones(5))


def test_filtered_logprobs_top_p_hand_computed():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    # mass before each token: 0, 0.5, 0.8, 0.95; with top_p=0.8 the third is dropped (0.8 >= 0.8)
    logp = filtered_logprobs(probs.log(), SamplingParams(top_p=0.8))
    expected = torch.tensor([[math.log(0.5 / 0.8), math.log(0.3 / 0.8), -math.inf, -math.inf]])
    assert torch.allclose(logp, expected)
    assert torch.allclose(filtered_logprobs(probs.log(), SamplingParams(top_p=0.81)).exp(),
                          torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)


def test_filtered_logprobs_temperature_scales_logits():
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(1))
    for t in (0.5, 1.0, 2.0):
        assert torch.allclose(filtered_logprobs(logits, SamplingParams(temperature=t)),
                              torch.log_softmax(logits / t, dim=-1))


def test_sample_next_logprob_is_that_of_the_drawn_token():
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(2))
    params = SamplingParams(temperature=0.7, top_k=5)
    tokens, logp = sample_next(logits, params, torch.Generator().manual_seed(0))
    full = filtered_logprobs(logits, params)
    assert torch.equal(logp, full.gather(-1, tokens[:, None]).squeeze(-1))
    assert torch.isfinite(logp).all()  # never a filtered token


# ---- (g) parameter validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_sampling_params_reject_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


# ---- (h) prompt errors ------------------------------------------------------------------------


def test_prompt_longer_than_positions_is_rejected(model, tokenizer):
    engine = RolloutEngine(model, tokenizer)
    limit = SMALL.max_position_embeddings
    params = SamplingParams(max_new_tokens=12)
    fits = engine.generate([[5] * (limit - 12)], params)  # prompt + max_new_tokens == limit is allowed
    assert fits.response_lengths.item() <= 12
    with pytest.raises(ValueError, match="positions"):
        engine.generate([[5] * (limit - 11)], params)


def test_empty_prompts_are_rejected(model, tokenizer, prompts):
    engine = RolloutEngine(model, tokenizer)
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([prompts[0], []], SamplingParams())
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([], SamplingParams())


# ---- (i) greedy log-probs ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_logprobs_are_unscaled_log_softmax_of_the_argmax(sharp_model, tokenizer, prompts, backend):
    gen = RolloutEngine(sharp_model, tokenizer, backend=backend).generate(
        prompts, SamplingParams(temperature=0.0, max_new_tokens=8)
    )
    for i, prompt in enumerate(prompts):
        n = int(gen.response_lengths[i])
        response = gen.response_ids[i, :n]
        # a plain forward over the unpadded sequence, one row at a time
        with torch.no_grad():
            logits = sharp_model(torch.tensor([prompt + response.tolist()])).logits[0]
        step_logp = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + n].float(), dim=-1)  # (n, V)
        assert torch.equal(step_logp.argmax(-1), response)
        assert torch.allclose(gen.sampler_logprobs[i, :n], step_logp.gather(-1, response[:, None]).squeeze(-1),
                              atol=1e-5)


def test_sample_categorical_matches_the_distribution_and_skips_zero_mass():
    from rlvr_lab.rollout.sampling import sample_categorical

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2]]).expand(20000, 5).contiguous()
    draws = sample_categorical(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    assert freq[0] == 0 and freq[2] == 0
    assert torch.allclose(freq, probs[0], atol=0.015)
    again = sample_categorical(probs, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_prompts_are_prefilled_once_with_the_same_result(sharp_model, tokenizer, prompts, backend):
    engine = RolloutEngine(sharp_model, tokenizer, backend=backend)
    repeated = [prompts[i] for i in (0, 1, 0, 2, 1, 0)]
    calls = []
    prefill = engine.decoder.prefill
    engine.decoder.prefill = lambda ids, mask, cache: (calls.append(ids.shape[0]), prefill(ids, mask, cache))[1]
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    gen = engine.generate(repeated, params, seed=0)
    assert calls == [3]  # three distinct prompts
    # each row equals the same prompt generated on its own (greedy)
    for i, p in enumerate(repeated):
        alone = engine.generate([p], params, seed=0)
        width = int(alone.response_mask.sum())
        assert gen.response_ids[i, :width].tolist() == alone.response_ids[0, :width].tolist()
        assert torch.allclose(gen.sampler_logprobs[i, :width], alone.sampler_logprobs[0, :width], atol=1e-4)
    # sampled rows of one prompt still differ from each other
    sampled = engine.generate([prompts[0]] * 6, SamplingParams(temperature=1.0, max_new_tokens=12), seed=1)
    assert len({tuple(r) for r in sampled.response_ids.tolist()}) > 1


def test_length_groups_minimise_encoded_tokens_plus_a_cost_per_call():
    from rlvr_lab.rollout.engine import length_groups

    lengths = [10, 100, 12, 98, 11]
    # one group: 5 x 100 + 64 = 564; {100, 98} and {12, 11, 10}: 2 x 100 + 3 x 12 + 2 x 64 = 364
    groups = length_groups(lengths, 100, call_tokens=64)
    assert [(rows.tolist(), start) for rows, start in groups] == [([1, 3], 0), ([2, 4, 0], 88)]
    # a call that costs more than the padding it saves is not made
    assert len(length_groups(lengths, 100, call_tokens=400)) == 1
    # free calls: every distinct length is its own group
    assert [start for _, start in length_groups(lengths, 100, call_tokens=0)] == [0, 2, 88, 89, 90]


@pytest.mark.parametrize("call_tokens", [0, 10_000])
def test_prefill_in_length_groups_gives_the_same_tokens_and_logprobs(
        sharp_model, tokenizer, prompts, monkeypatch, call_tokens):
    """Prompts prefilled in groups of similar length (each cut to its own width, into cache rows out
    of order) decode exactly like one padded prefill and like the generic backend."""
    monkeypatch.setattr("rlvr_lab.rollout.engine.GROUP_CALL_TOKENS", call_tokens)
    engine = RolloutEngine(sharp_model, tokenizer, backend="native")
    calls = []
    prefill = engine.decoder.prefill
    engine.decoder.prefill = lambda ids, *a: (calls.append(ids.shape), prefill(ids, *a))[1]
    batch = [prompts[i] for i in (1, 2, 0, 1, 3, 2)]  # repeats too: distinct rows, then groups
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    native = engine.generate(batch, params)
    if call_tokens == 0:  # four distinct lengths, four calls, each no wider than its longest prompt
        assert sorted(shape[1] for shape in calls) == sorted(len(p) for p in prompts)
    else:
        assert calls == [(4, max(len(p) for p in prompts))]
    generic = RolloutEngine(sharp_model, tokenizer, backend="hf").generate(batch, params)
    assert torch.equal(native.response_ids, generic.response_ids)
    assert torch.allclose(native.sampler_logprobs, generic.sampler_logprobs, atol=1e-5)
    sampled = engine.generate(batch, SamplingParams(temperature=1.0, max_new_tokens=16), seed=2)
    assert torch.allclose(sampled.sampler_logprobs[sampled.response_mask],
                          stats_of(sharp_model, sampled, 1.0)[sampled.response_mask], atol=1e-4)


def qwen2_with_biases(tokenizer):
    """A small Qwen2 (q/k/v projections with biases, here random) on the character vocabulary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    qwen = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in qwen.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.5)
            layer.input_layernorm.weight.uniform_(0.5, 1.5)  # non-trivial norm weights to fold
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
        qwen.model.norm.weight.uniform_(0.5, 1.5)
    return qwen


def reference_and_native_logits(model, tokenizer, prompts, n_steps: int = 3, **layout):
    """Next-token logits (B, 1 + n_steps, V) after the prompts and after each of ``n_steps`` forced tokens:
    from the model's own forward over the whole sequence, and from the native decoder's prefill and steps."""
    ids, mask = RolloutEngine(model, tokenizer).left_pad(prompts)
    B, Lp = ids.shape
    forced = torch.randint(3, len(tokenizer), (B, n_steps), generator=torch.Generator().manual_seed(0))
    full_mask = torch.cat([mask, torch.ones_like(forced, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        ref = model(input_ids=torch.cat([ids, forced], dim=1), attention_mask=full_mask.long(),
                    position_ids=(full_mask.long().cumsum(-1) - 1).clamp_min(0)).logits[:, Lp - 1 :].float()
    dec = NativeDecoder(model, **layout)
    cache = dec.new_cache(B, Lp + n_steps)
    native = [dec.prefill(ids, mask, cache)]
    for s in range(n_steps):
        native.append(dec.step(forced[:, s], mask.sum(-1) + s, cache, Lp + s))
    return ref, torch.stack(native, dim=1), dec


PACKING = weight_packing_supported(torch.float32, torch.device("cpu"))
LAYOUTS = [
    {"fuse": False, "fold_norms": False, "pack_weights": False, "complex_rope": False},
    {"fuse": True, "fold_norms": False, "pack_weights": False, "complex_rope": False},
    {"fuse": True, "fold_norms": False, "pack_weights": False, "complex_rope": True},
    {"fuse": True, "fold_norms": True, "pack_weights": False, "complex_rope": True},
    pytest.param({"fuse": True, "fold_norms": True, "pack_weights": True, "complex_rope": True},
                 marks=pytest.mark.skipif(not PACKING, reason="no oneDNN on this CPU")),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(k for k, v in d.items() if v) or "plain")
@pytest.mark.parametrize("arch", ["llama", "qwen2-bias"])
def test_every_weight_layout_gives_the_models_own_logits(sharp_model, tokenizer, prompts, arch, layout,
                                                         monkeypatch):
    """Fused, norm-folded, oneDNN-packed and RoPE-interleaved weights change how the decoder computes,
    not what: its prefill and decode logits match the model's own forward, for GQA with and without
    q/k/v biases."""
    monkeypatch.setattr(native_module, "PACK_MIN_NUMEL", 0)  # pack even these small weights
    model = sharp_model if arch == "llama" else qwen2_with_biases(tokenizer)
    ref, native, dec = reference_and_native_logits(model, tokenizer, prompts, **layout)
    assert ref.abs().max() > 1.0  # logits varied enough that a wrong layout would show
    torch.testing.assert_close(native, ref, atol=1e-4, rtol=1e-4)
    first = dec.layers[0]
    assert (first.in_norm is None) == layout["fold_norms"] and first.fused == layout["fuse"]
    assert first.interleave == layout["complex_rope"] and dec.rope_table.is_complex() == layout["complex_rope"]
    if layout["fuse"]:
        assert (first.qkv.packed is not None) == layout["pack_weights"]


def test_bfloat16_decoder_tracks_the_models_own_bfloat16_logits(tokenizer, prompts):
    model = build_tiny_model(SHARP, tokenizer, seed=0).to(torch.bfloat16)
    ref, native, dec = reference_and_native_logits(model, tokenizer, prompts)
    assert dec.layers[0].in_norm is not None  # bf16 keeps the float32 norm with its weight
    assert not dec.rope_table.is_complex()  # no bfloat16 complex type: the real rotation
    assert (native - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("arch", ["llama", "qwen2-bias"])
def test_bfloat16_decode_of_a_float32_model_runs_on_cast_copies(sharp_model, tokenizer, prompts, arch):
    """dtype=bfloat16 on a float32 policy: the decode runs in bf16 (weights, KV cache) on copies, folded
    in float32 first; its logits stay within bf16 rounding of the model's own float32 forward, the
    model's parameters are untouched, and a float32 decoder of the same model is exact."""
    model = sharp_model if arch == "llama" else qwen2_with_biases(tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ref, native, dec = reference_and_native_logits(model, tokenizer, prompts, dtype=torch.bfloat16)
    first = dec.layers[0]
    assert first.in_norm is None and first.fused  # norms folded (in float32) into the fused copies
    assert dec.rope_table.dtype == torch.bfloat16 and dec.head is not None
    assert dec.new_cache(1, 4).kv[0].dtype == torch.float32  # on a CPU the attention stays in float32
    assert native.dtype == torch.float32
    error = (native - ref).abs().max() / ref.abs().max()
    assert 1e-4 < error < 0.05  # bf16 rounding: visible, small
    _, bf16_cache, dec = reference_and_native_logits(model, tokenizer, prompts, dtype=torch.bfloat16,
                                                     cache_dtype=torch.bfloat16)
    assert dec.new_cache(1, 4).kv[0].dtype == torch.bfloat16
    assert (bf16_cache - ref).abs().max() / ref.abs().max() < 0.05
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    _, exact, _ = reference_and_native_logits(model, tokenizer, prompts, dtype=torch.float32)
    torch.testing.assert_close(exact, ref, atol=1e-4, rtol=1e-4)


def test_a_cast_decode_needs_fused_weights_and_the_native_path(model, tokenizer):
    with pytest.raises(ValueError, match="needs fuse"):
        NativeDecoder(model, fuse=False, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="needs the native decoder"):
        RolloutEngine(model, tokenizer, backend="hf", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="floating-point"):
        NativeDecoder(model, dtype=torch.int8)


def test_bfloat16_engine_samples_near_the_float32_distribution(model, tokenizer, prompts, monkeypatch):
    """The engine's bf16 sampler reports log-probs that the float32 policy's own re-score of the same
    tokens matches to bf16 precision (the gap the trainer logs as rollout/sampler_logp_gap), with the
    prompts prefilled in length groups (the bf16 cache written row by row)."""
    from rlvr_lab.rollout import engine as engine_module

    monkeypatch.setattr(engine_module, "GROUP_CALL_TOKENS", 0)  # every distinct length its own prefill call
    params = SamplingParams(temperature=1.0, max_new_tokens=12)
    group = [p for p in prompts for _ in range(4)]
    gen = RolloutEngine(model, tokenizer, dtype=torch.bfloat16).generate(group, params, seed=3)
    full = torch.cat([gen.prompt_ids, gen.response_ids], dim=1)
    attention = torch.cat([gen.prompt_mask, gen.response_mask], dim=1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=attention.long(),
                       position_ids=(attention.long().cumsum(-1) - 1).clamp_min(0)).logits.float()
    Lp = gen.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, Lp - 1 : -1], -1).gather(-1, gen.response_ids.unsqueeze(-1)).squeeze(-1)
    gap = (gen.sampler_logprobs - logp).abs()[gen.response_mask]
    assert gen.response_mask.sum() > 20
    assert 0 < gap.mean() < 0.05 and gap.max() < 0.5


def test_fold_norms_and_complex_rope_need_fused_weights(model):
    with pytest.raises(ValueError, match="fold_norms needs fuse"):
        NativeDecoder(model, fuse=False, fold_norms=True)
    with pytest.raises(ValueError, match="complex_rope needs fuse"):
        NativeDecoder(model, fuse=False, complex_rope=True)


def test_native_decoder_keeps_no_weight_snapshot_between_generations(model, tokenizer, prompts):
    """The fused/folded weight copies live for one generate call only, also when it ends by an error."""
    engine = RolloutEngine(model, tokenizer, backend="native")
    params = SamplingParams(temperature=1.0, max_new_tokens=6)
    snapshots = []
    real_new_cache = engine.decoder.new_cache

    def recording_new_cache(batch, max_len):
        cache = real_new_cache(batch, max_len)
        snapshots.append(engine.decoder.layers)
        return cache

    engine.decoder.new_cache = recording_new_cache
    engine.generate(prompts, params, seed=0)
    assert snapshots[-1] and snapshots[-1][0].qkv is not None  # the call did build its snapshot
    assert engine.decoder.layers == [] and engine.decoder.head is None and engine.decoder.rope_table is None

    def failing(row, ids):
        raise RuntimeError("tool crashed")

    engine.eos_ids = list(range(len(tokenizer)))  # every row stops at once, so on_finish runs
    with pytest.raises(RuntimeError, match="tool crashed"):
        engine.generate(prompts, params, seed=0, on_finish=failing)
    assert len(snapshots) == 2 and engine.decoder.layers == [] and engine.decoder.head is None
