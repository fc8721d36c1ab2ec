"""Trainer pieces: batching, exact gradient accumulation, chunked log-probs, checkpoints."""

import json

import pytest
import torch
from batches import toy_batch as shared_toy_batch

from rlvr_lab.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from rlvr_lab.train.batching import concat_batches, supervised_batch
from rlvr_lab.train.checkpoint import make_run_dir, prune_checkpoints, save_checkpoint
from rlvr_lab.train.logprobs import sequence_token_stats, token_stats_from_hidden
from rlvr_lab.train.optim import build_optimizer, build_scheduler, lr_factor
from rlvr_lab.train.step import LossSpec, minibatch_update

SMALL = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        max_position_embeddings=128)


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def toy_batch(tok, n=6, seed=0):
    return shared_toy_batch(tok, n, seed, unit="a", max_repeats=4)


def test_supervised_batch_layout(tok):
    b = supervised_batch([[5, 6], [7]], [[8], [9, 10, 11]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 8, 0, 0], [0, 7, 9, 10, 11]]
    assert b.response_start == 2
    assert b.loss_mask.tolist() == [[True, False, False], [True, True, True]]


def test_concat_batches_repads_prompts_and_responses(tok):
    a = supervised_batch([[5, 6, 7]], [[8]], pad_id=0)
    b = supervised_batch([[5]], [[9, 10]], pad_id=0)
    c = concat_batches([a, b], pad_id=0)
    assert c.response_start == 3
    assert c.input_ids.tolist() == [[5, 6, 7, 8, 0], [0, 0, 5, 9, 10]]
    assert c.attention_mask.tolist() == [[True] * 4 + [False], [False, False, True, True, True]]
    assert c.loss_mask.tolist() == [[True, False], [True, True]]


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gradient_accumulation_is_exact_with_global_normalization(tok, mode):
    batch = toy_batch(tok)
    grads = []
    for micro in (6, 2, 1):
        model = build_tiny_model(SMALL, tok, seed=0)
        opt = build_optimizer(model.parameters(), lr=0.0, weight_decay=0.0, betas=(0.9, 0.99))
        sched = build_scheduler(opt, warmup_steps=0, total_steps=1, schedule="constant")
        captured = {}
        # read the accumulated gradient just before the optimiser clears it
        orig_step = opt.step
        opt.step = lambda *a, **k: (captured.update({n: p.grad.clone() for n, p in model.named_parameters()}), orig_step(*a, **k))[1]
        minibatch_update(model, opt, sched, batch, LossSpec(aggregation=mode, t_norm=4.0), micro_batch_size=micro,
                         max_grad_norm=None)
        grads.append(captured)
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
        assert torch.allclose(grads[0][name], grads[2][name], atol=1e-6), name


def test_chunked_logprobs_match_full_log_softmax_and_gradients(tok):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7))
    stats = token_stats_from_hidden(hidden, head, targets, chunk_tokens=4, with_entropy=True, temperature=0.7)
    logits = head(hidden) / 0.7
    full = torch.log_softmax(logits, -1)
    ref = full.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(stats.logprobs, ref, atol=1e-5)
    ent = -(full.exp() * full).sum(-1)
    assert torch.allclose(stats.entropy, ent, atol=1e-5)
    (g1,) = torch.autograd.grad(stats.logprobs.sum(), hidden)
    (g2,) = torch.autograd.grad(ref.sum(), hidden)
    assert torch.allclose(g1, g2, atol=1e-5)


def test_only_valid_positions_are_scored_and_padding_gets_zero(tok, monkeypatch):
    """``valid``: the output layer runs on the marked positions only (here 9 of 21, across chunk
    edges); their log-probs, entropies and gradients equal the full computation's, the rest are 0."""
    torch.manual_seed(1)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7))
    valid = torch.arange(7).expand(3, 7) < torch.tensor([[5], [1], [3]])  # right padding of three lengths
    calls, linear = [], torch.nn.functional.linear

    def counted(x, weight, bias=None):  # the output layer's rows, chunk by chunk
        calls.append(x.shape[0])
        return linear(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", counted)
    part = token_stats_from_hidden(hidden, head, targets, chunk_tokens=4, with_entropy=True, valid=valid)
    assert calls == [4, 4, 1] and int(valid.sum()) == 9
    monkeypatch.undo()
    full = token_stats_from_hidden(hidden, head, targets, chunk_tokens=4, with_entropy=True)
    for got, ref in ((part.logprobs, full.logprobs), (part.entropy, full.entropy)):
        assert torch.allclose(got[valid], ref[valid], atol=1e-6)
        assert torch.all(got[~valid] == 0) and torch.all(ref[~valid] != 0)
    (g_part,) = torch.autograd.grad(part.logprobs[valid].sum(), hidden)
    (g_full,) = torch.autograd.grad(full.logprobs[valid].sum(), hidden)
    assert torch.allclose(g_part, g_full, atol=1e-6) and g_part[~valid].abs().sum() == 0


def test_sequence_logprobs_ignore_left_padding(tok):
    model = build_tiny_model(SMALL, tok, seed=1)
    p, y = tok.encode("abc", add_special_tokens=False), tok.encode("xy", add_special_tokens=False)
    alone = supervised_batch([p], [y], tok.pad_token_id)
    padded = supervised_batch([p, p + p], [y, y], tok.pad_token_id)  # row 0 gets 3 pad tokens on the left
    a = sequence_token_stats(model, alone.input_ids, alone.attention_mask, alone.response_start).logprobs
    b = sequence_token_stats(model, padded.input_ids, padded.attention_mask, padded.response_start).logprobs
    assert torch.allclose(a[0], b[0], atol=1e-5)


def test_lr_schedule():
    assert lr_factor(0, warmup_steps=4, total_steps=10, schedule="cosine") == 0.25
    assert lr_factor(4, warmup_steps=4, total_steps=10, schedule="cosine") == 1.0
    assert abs(lr_factor(10, warmup_steps=4, total_steps=10, schedule="cosine")) < 1e-9
    assert lr_factor(7, warmup_steps=4, total_steps=10, schedule="constant") == 1.0
    assert lr_factor(7, warmup_steps=4, total_steps=10, schedule="linear") == pytest.approx(0.5)


def test_nonfinite_gradient_skips_the_step(tok):
    from rlvr_lab.train.optim import clip_and_step

    model = build_tiny_model(SMALL, tok, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model.parameters(), lr=1.0, weight_decay=0.0, betas=(0.9, 0.99))
    sched = build_scheduler(opt, warmup_steps=0, total_steps=1, schedule="constant")
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    norm, stepped = clip_and_step(model, opt, sched, 1.0)
    assert not stepped
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_checkpoint_is_loadable_by_transformers_and_pruned(tok, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = build_tiny_model(SMALL, tok, seed=2)
    run = make_run_dir(tmp_path, "r", overwrite=False)
    assert make_run_dir(tmp_path, "r", overwrite=False).name == "r-2"
    for step in (1, 2, 3):
        save_checkpoint(model, tok, run / "checkpoints" / f"step-{step}", meta={"rl_step": step})
    prune_checkpoints(run / "checkpoints", keep=2)
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step-2", "step-3"]
    loaded = AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "step-3", local_files_only=True)
    ids = torch.tensor([tok.encode("hello", add_special_tokens=False)])
    assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)
    assert AutoTokenizer.from_pretrained(run / "checkpoints" / "step-3").decode(ids[0]) == "hello"
    assert json.loads((run / "checkpoints" / "step-3" / "rlvr_state.json").read_text())["rl_step"] == 3


def shared_prompt_batch(tok, seed=0):
    """Rows that repeat 3 prompts of different lengths (left-padded), with ragged responses."""
    g = torch.Generator().manual_seed(seed)
    prompts = ["abc", "hello there", "q"]
    which = [0, 0, 1, 2, 1, 1, 0, 2]
    targets = []
    for _ in which:
        n = int(torch.randint(1, 6, (1,), generator=g))
        targets.append(tok.encode("xyzw!"[:n], add_special_tokens=False))
    return supervised_batch([tok.encode(prompts[w], add_special_tokens=False) for w in which], targets, tok.pad_token_id)


@pytest.mark.parametrize("with_entropy", [False, True])
def test_shared_prompt_pass_equals_full_pass_with_gradients(tok, with_entropy):
    model = build_tiny_model(SMALL.model_copy(update={"init_std": 0.2}), tok, seed=3)
    batch = shared_prompt_batch(tok)
    weights = torch.randn(batch.loss_mask.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for share in (False, True):
        model.zero_grad()
        stats = sequence_token_stats(model, batch.input_ids, batch.attention_mask, batch.response_start,
                                     with_entropy=with_entropy, share_prompts=share)
        (stats.logprobs * weights * batch.loss_mask).sum().backward()
        results.append((stats, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, g_plain), (shared, g_shared) = results
    m = batch.loss_mask
    assert torch.allclose(plain.logprobs[m], shared.logprobs[m], atol=1e-5)
    if with_entropy:
        assert torch.allclose(plain.entropy[m], shared.entropy[m], atol=1e-5)
    for name in g_plain:
        assert torch.allclose(g_plain[name], g_shared[name], atol=1e-5, rtol=1e-4), name
    # the gradient reaches the prompt-side weights through the gathered keys and values
    assert g_shared["model.layers.0.self_attn.k_proj.weight"].abs().sum() > 0


def test_distinct_rows_finds_first_rows_and_inverse(tok):
    from rlvr_lab.rollout.engine import distinct_rows

    batch = shared_prompt_batch(tok)
    first, inverse = distinct_rows(batch.input_ids[:, : batch.response_start])
    assert len(first) == 3
    lp = batch.response_start
    assert torch.equal(batch.input_ids[first[inverse], :lp], batch.input_ids[:, :lp])
    assert sorted(first.tolist()) == [0, 2, 3]  # the first row of each distinct prompt
    distinct = supervised_batch([[5], [6]], [[7], [8]], pad_id=0)
    assert distinct_rows(distinct.input_ids[:, : distinct.response_start]) is None


def test_group_shuffle_keeps_groups_together_and_covers_every_row():
    from rlvr_lab.train.step import shuffled_rows

    group_ids = torch.arange(6).repeat_interleave(4)[torch.tensor([0, 1, 2, 3, 5, 6, 7] + list(range(8, 24)))]
    g = torch.Generator().manual_seed(0)
    order = shuffled_rows(group_ids, g, by_group=True)
    assert sorted(order.tolist()) == list(range(len(group_ids)))
    seen = group_ids[order].tolist()
    runs = [gid for i, gid in enumerate(seen) if i == 0 or gid != seen[i - 1]]
    assert len(runs) == len(set(seen)) == 6  # each group appears as one contiguous run
    orders = {tuple(runs)}
    for _ in range(5):
        o = group_ids[shuffled_rows(group_ids, g, by_group=True)].tolist()
        orders.add(tuple(gid for i, gid in enumerate(o) if i == 0 or gid != o[i - 1]))
    assert len(orders) > 1  # the group order is random
    rows = shuffled_rows(group_ids, torch.Generator().manual_seed(0), by_group=False)
    assert sorted(rows.tolist()) == list(range(len(group_ids)))
