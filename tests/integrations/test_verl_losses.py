"""verl's policy-loss call path against rlvr-lab's native objective, for every method verl can run.

Both sides get the same tensors from one stand-in model whose final hidden states are free
parameters: the native side runs ``train.step.micro_batch_loss`` (with the preset's ``LossSpec``,
``Methods`` row inputs and mini-batch context, as the trainer does); the verl side calls the
registered function through ``get_policy_loss_fn(name)`` with verl's keyword arguments and a real
``FSDPActorConfig``, or verl's own worker-side ``ppo_loss``. Losses and gradients must agree.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("verl", reason="verl is installed only in the scale-out venv (make test-scale)")

from tensordict import TensorDict  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import FSDPActorConfig, PolicyLossConfig  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402

from rlvr_lab.config import load_config  # noqa: E402
from rlvr_lab.integrations.verl import RlvrPolicyLossConfig  # noqa: E402
from rlvr_lab.integrations.verl import resolve  # noqa: E402
from rlvr_lab.integrations.verl.presets import PRESETS  # noqa: E402
from rlvr_lab.integrations.verl.resolve import VERL_KL_TYPES, UnsupportedInVerl  # noqa: E402
from rlvr_lab.objectives import Denominators, denominators  # noqa: E402
from rlvr_lab.objectives.entropy_mech import GENERATOR_KEY  # noqa: E402
from rlvr_lab.train.loop import loss_spec  # noqa: E402
from rlvr_lab.train.methods import Methods  # noqa: E402
from rlvr_lab.train.step import micro_batch_loss  # noqa: E402
from rlvr_lab.types import Batch  # noqa: E402

torch.set_num_threads(1)
P, G, LP, T, D, V = 3, 4, 3, 7, 8, 11
B = P * G
LOSS_OK = [n for n in PRESETS if n not in {"llds_ma", "lp_reg", "hapo", "thr", "nthr", "spear"}]


class RowModel(torch.nn.Module):
    """Stands in for a causal LM: the final hidden states of row ``i`` (named by its first prompt token)
    are a free parameter, followed by a real LM head. Feeds ``train.logprobs.sequence_token_stats``."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.hidden = torch.nn.Parameter(torch.randn(B, LP + T, D, generator=g))
        self.head = torch.nn.Linear(D, V, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(V, D, generator=g))

    def get_decoder(self):
        def decoder(*, input_ids, attention_mask, position_ids, use_cache):
            return SimpleNamespace(last_hidden_state=self.hidden[input_ids[:, 0]])
        return decoder

    def get_output_embeddings(self):
        return self.head

    def logprobs(self, batch: Batch, temperature: float) -> torch.Tensor:
        """(b, T) sampled-token log-probs as verl's actor computes them (plain log-softmax, no chunking)."""
        h = self.hidden[batch.input_ids[:, 0], LP - 1 : -1]  # (b, T, D)
        logits = self.head(h).float() / temperature
        targets = batch.input_ids[:, LP:]
        return torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def grads(self) -> list[torch.Tensor]:
        return [p.grad.clone() for p in (self.hidden, self.head.weight)]


def make_batch(seed: int = 0) -> Batch:
    """B rows with ragged responses (one empty, two with a tool-output hole), binary rewards in mixed
    and uniform groups, GRPO token advantages and an old policy that has moved away."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, V, (B, LP + T), generator=g)
    input_ids[:, 0] = torch.arange(B)  # the row id RowModel reads
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    lengths[5] = 0
    loss_mask = torch.arange(T) < lengths.unsqueeze(-1)  # (B, T)
    loss_mask[1, 2:4] = False  # multi-turn: observation tokens between two actions
    loss_mask[8, 1] = False
    rewards = torch.tensor([1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0], dtype=torch.float32)
    r = rewards.view(P, G)
    seq_adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).reshape(-1)
    return Batch(
        input_ids=input_ids, attention_mask=torch.ones(B, LP + T, dtype=torch.bool), response_start=LP,
        loss_mask=loss_mask, rewards=rewards, group_ids=torch.arange(P).repeat_interleave(G),
        advantages=seq_adv.unsqueeze(-1) * loss_mask.float(), extras={"correct": rewards.bool()},
    )


def native_config(name: str):
    return load_config(None, presets=[PRESETS[name].name])


def actor_config(spec, loss_cfg) -> FSDPActorConfig:
    """verl's actor config with the preset's aggregation, KL and entropy settings (what the docs tell users)."""
    return FSDPActorConfig(
        strategy="fsdp", rollout_n=G, ppo_mini_batch_size=P, ppo_micro_batch_size_per_gpu=2,
        loss_agg_mode=spec.aggregation, loss_scale_factor=spec.t_norm,
        use_kl_loss=spec.kl_coef > 0, kl_loss_coef=spec.kl_coef, kl_loss_type=VERL_KL_TYPES[spec.kl_kind][0],
        entropy_coeff=spec.entropy_coef, policy_loss=loss_cfg,
    )


def set_old_logprobs(model: RowModel, batch: Batch, temperature: float, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logp = model.logprobs(batch, temperature)
    batch.old_logprobs = (logp + 0.3 * torch.randn(logp.shape, generator=g)) * batch.loss_mask


def native(name: str, layout: list[list[int]]):
    """Loss and gradients of one mini-batch through the native trainer's machinery."""
    cfg = native_config(name)
    spec = replace(loss_spec(cfg), kl_coef=0.0, entropy_coef=0.0)  # verl adds these outside the loss
    model, mini = RowModel(0), make_batch()
    set_old_logprobs(model, mini, spec.temperature)
    methods = Methods(cfg)
    methods.row_inputs(mini)
    extras = methods.context(0)(mini)
    extras.pop(GENERATOR_KEY)  # Clip-Cov draws from torch's global RNG on both sides (seeded below)
    den = denominators(mini.loss_mask)
    total = torch.zeros(())
    for k, rows in enumerate(layout):
        torch.manual_seed(100 + k)
        loss, _ = micro_batch_loss(model, mini.select(torch.tensor(rows)), spec, den, 1.0, extras, 0)
        loss.backward()
        total += loss.detach()
    return total, model.grads(), spec, den


def through_verl(name: str, layout: list[list[list[int]]], spec, den: Denominators, loss_cfg=None):
    """The same through verl's registered function: ``layout[rank][micro]`` row lists, dp = len(layout).

    Each rank's loss is its share times dp; DDP averages the gradients over ranks, so the mini-batch
    loss and gradient are the rank sums divided by dp.
    """
    model, mini = RowModel(0), make_batch()
    set_old_logprobs(model, mini, spec.temperature)
    config = actor_config(spec, loss_cfg or PolicyLossConfig(loss_mode=f"rlvr_{name}"))
    dp = len(layout)
    config.global_batch_info.update(dp_size=dp, batch_num_tokens=int(den.num_tokens),
                                    global_batch_size=int(den.num_sequences), loss_scale_factor=spec.t_norm)
    fn = get_policy_loss_fn(f"rlvr_{name}")
    total, k, metrics = torch.zeros(()), 0, []
    for rank in layout:
        for rows in rank:
            mb = mini.select(torch.tensor(rows))
            torch.manual_seed(100 + k)
            k += 1
            loss, m = fn(old_log_prob=mb.old_logprobs, log_prob=model.logprobs(mb, spec.temperature),
                         advantages=mb.advantages, response_mask=mb.loss_mask, loss_agg_mode=config.loss_agg_mode,
                         config=config, rollout_is_weights=None)
            (loss / dp).backward()
            total += loss.detach() / dp
            metrics.append(m)
    return total, model.grads(), metrics


ONE_RANK = [[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]]
TWO_RANKS = [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]


@pytest.mark.parametrize("layout", [ONE_RANK, TWO_RANKS], ids=["1gpu-3micro", "2gpu-2micro"])
@pytest.mark.parametrize("name", LOSS_OK)
def test_verl_loss_equals_native(name, layout):
    flat = [rows for rank in layout for rows in rank]
    want, want_grads, spec, den = native(name, flat)
    got, got_grads, metrics = through_verl(name, layout, spec, den)
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)
    assert all(k.startswith("actor/") and isinstance(v, float) for m in metrics for k, v in m.items())
    assert "actor/pg_clipfrac" in metrics[0]


def test_parameter_overrides_reach_the_loss():
    overrides = {"lam": 0.7, "gate": "response"}
    cfg = native_config("llds")
    cfg.algorithm.aux_losses[0].params.update(overrides)
    spec = replace(loss_spec(cfg), kl_coef=0.0, entropy_coef=0.0)
    model, mini = RowModel(0), make_batch()
    set_old_logprobs(model, mini, 1.0)
    Methods(cfg).row_inputs(mini)
    den = denominators(mini.loss_mask)
    want, _ = micro_batch_loss(model, mini, spec, den, 1.0, {}, 0)
    got, _, _ = through_verl("llds", [[list(range(B))]], spec, den,
                             RlvrPolicyLossConfig(loss_mode="rlvr_llds", llds=overrides))
    torch.testing.assert_close(got, want.detach())


def test_grpo_with_dual_clip_equals_verls_vanilla_with_rollout_weights():
    g = torch.Generator().manual_seed(3)
    lp = torch.randn(6, 9, generator=g).requires_grad_()
    old = lp.detach() + 0.4 * torch.randn(6, 9, generator=g)
    adv = torch.randn(6, 1, generator=g).expand(6, 9).contiguous()
    mask = torch.rand(6, 9, generator=g) > 0.2
    weights = torch.rand(6, 9, generator=g) * 2
    results = []
    for name, loss_cfg in (("vanilla", PolicyLossConfig(loss_mode="vanilla")),
                           ("rlvr_grpo", RlvrPolicyLossConfig(loss_mode="rlvr_grpo", ppo_clip={"clip_ratio_c": 3.0}))):
        config = FSDPActorConfig(strategy="fsdp", rollout_n=3, ppo_mini_batch_size=2, ppo_micro_batch_size_per_gpu=2,
                                 clip_ratio_c=3.0, policy_loss=loss_cfg)
        config.global_batch_info.update(dp_size=2, batch_num_tokens=int(mask.sum()) * 2, global_batch_size=12)
        lp.grad = None
        loss, metrics = get_policy_loss_fn(name)(
            old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode="token-mean",
            config=config, rollout_is_weights=weights)
        loss.backward()
        results.append((loss.detach(), lp.grad.clone(), metrics))
    (l_v, g_v, m_v), (l_r, g_r, m_r) = results
    torch.testing.assert_close(l_r, l_v)
    torch.testing.assert_close(g_r, g_v)
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        assert m_r[key] == pytest.approx(m_v[key], abs=1e-6)


def _padded_to_flat(logp: torch.Tensor, prompt_lens: torch.Tensor, response_lens: torch.Tensor) -> torch.Tensor:
    """Lay (b, T) response log-probs out as verl's unpadded model output: one row of prompt+response
    positions per sequence, the log-prob of response token t at position prompt_len - 1 + t."""
    parts = []
    for row, (p, r) in enumerate(zip(prompt_lens.tolist(), response_lens.tolist())):
        parts += [logp.new_zeros(p - 1), logp[row, :r], logp.new_zeros(1)]
    return torch.cat(parts)


def test_verls_worker_ppo_loss_with_kl_equals_native():
    """verl's own worker-side ppo_loss (the real caller) adds its KL term to rlvr_llds; the native
    micro_batch_loss adds the preset's k3 KL: same loss and gradient."""
    cfg = native_config("llds")
    spec = replace(loss_spec(cfg), entropy_coef=0.0)  # no entropy in the stand-in model output
    rows = list(range(B))
    # native, with the KL term
    model, mini = RowModel(0), make_batch()
    set_old_logprobs(model, mini, 1.0)
    g = torch.Generator().manual_seed(7)
    mini.ref_logprobs = (mini.old_logprobs + 0.2 * torch.randn(B, T, generator=g)) * mini.loss_mask
    methods = Methods(cfg)
    methods.row_inputs(mini)
    den = denominators(mini.loss_mask)
    want, _ = micro_batch_loss(model, mini, spec, den, 1.0, methods.context(0)(mini), 0)
    want.backward()
    want_grads = model.grads()
    # verl: TensorDict as the engine hands it to ppo_loss (padded prompts/responses, flat log-probs)
    model = RowModel(0)
    response_lens = torch.full((B,), T)
    data = TensorDict({
        "prompts": mini.input_ids[:, :LP], "responses": mini.input_ids[:, LP:], "attention_mask": mini.attention_mask,
        "response_mask": mini.loss_mask.long(), "old_log_probs": mini.old_logprobs, "advantages": mini.advantages,
        "ref_log_prob": mini.ref_logprobs,
    }, batch_size=[B])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(den.num_tokens), global_batch_size=B)
    config = actor_config(replace(spec, entropy_coef=0.0), PolicyLossConfig(loss_mode="rlvr_llds"))
    flat = _padded_to_flat(model.logprobs(mini.select(torch.tensor(rows)), 1.0), torch.full((B,), LP), response_lens)
    got, metrics = ppo_loss(config, {"log_probs": flat}, data)
    got.backward()
    torch.testing.assert_close(got.detach(), want.detach())
    for g_, w in zip(model.grads(), want_grads):
        torch.testing.assert_close(g_, w)
    assert {"actor/pg_loss", "kl_loss", "actor/llds/frac_gated"} <= set(metrics)


@pytest.mark.parametrize("name, words", [("lp_reg", "proxy log-prob"), ("hapo", "entropy"), ("thr", "hidden"),
                                         ("nthr", "hidden"), ("llds_ma", "answer span"), ("spear", "replay")])
def test_methods_verl_cannot_feed_fail_at_startup_and_at_first_call(name, words):
    with pytest.raises(UnsupportedInVerl, match=words):  # verl builds this in validate_config, before Ray starts
        RlvrPolicyLossConfig(loss_mode=f"rlvr_{name}")
    config = FSDPActorConfig(strategy="fsdp", rollout_n=G, ppo_mini_batch_size=P, ppo_micro_batch_size_per_gpu=2,
                             policy_loss=PolicyLossConfig(loss_mode=f"rlvr_{name}"))
    x = torch.zeros(2, 3)
    with pytest.raises(UnsupportedInVerl, match=words):  # without the _target_: the first actor update
        get_policy_loss_fn(f"rlvr_{name}")(old_log_prob=x, log_prob=x, advantages=x, response_mask=x.bool(),
                                           loss_agg_mode="token-mean", config=config, rollout_is_weights=None)


def test_bypass_mode_replacing_the_loss_is_loud():
    with pytest.raises(ValueError, match="bypass_mode"):
        RlvrPolicyLossConfig(loss_mode="bypass_mode")


def _call(name: str, **actor):
    config = FSDPActorConfig(strategy="fsdp", rollout_n=G, ppo_mini_batch_size=P, ppo_micro_batch_size_per_gpu=2,
                             policy_loss=PolicyLossConfig(loss_mode=name), **actor)
    x = torch.zeros(2, 3)
    return get_policy_loss_fn(name)(old_log_prob=x, log_prob=x, advantages=x, response_mask=x.bool(),
                                    loss_agg_mode=config.loss_agg_mode, config=config, rollout_is_weights=None)


def test_wrong_aggregation_fails_with_the_key_to_set():
    with pytest.raises(ValueError, match="actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm"):
        _call("rlvr_dr_grpo")
    with pytest.raises(ValueError, match="actor_rollout_ref.actor.loss_scale_factor"):
        _call("rlvr_dr_grpo", loss_agg_mode="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="loss_agg_mode=seq-mean-token-mean"):
        _call("rlvr_gspo")


def test_kl_and_entropy_mismatch_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(resolve, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="rlvr_lab.integrations.verl"):
        _call("rlvr_llds")
        _call("rlvr_llds")
    kl = [r for r in caplog.records if "kl_loss_coef=0.001" in r.getMessage()]
    assert len(kl) == 1 and kl[0].levelno == logging.WARNING
    assert "actor_rollout_ref.actor.use_kl_loss=true" in kl[0].getMessage()
