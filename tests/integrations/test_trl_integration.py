"""rlvr-lab inside TRL's GRPOTrainer (rlvr_lab.integrations.trl).

* Without TRL: methods and GRPOConfig options that TRL cannot honour are refused; the batch and
  reward mappings; importing the package does not import TRL.
* With TRL (the scale venv): the adapter's advantages and loss on a hand-made batch equal numbers
  computed by hand (GRPO, Dr.GRPO, GSPO); the trainer's loss path (TRL's fused forward, the input
  mapping, the optimiser-step counts) equals the native trainer's on identical tensors, also under
  gradient accumulation; a 3-step CPU run with LLDS changes the weights and logs rlvr-lab's metrics.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlvr_lab.integrations.trl import (
    CORRECT_KEY,
    EXTRA_PREFIX,
    GROUP_KEY,
    KEEP_KEY,
    REWARDS_KEY,
    available_methods,
    batch_from_trl,
    check_trl_args,
    combined_rewards,
    method_config,
    rows_of,
    trl_columns,
)
from rlvr_lab.config import AlgorithmConfig
from rlvr_lab.models.tiny import TinyModelConfig, build_tiny_model
from rlvr_lab.models.tokenizer import build_char_tokenizer
from rlvr_lab.objectives import denominators
from rlvr_lab.train.loop import loss_spec
from rlvr_lab.train.methods import Methods
from rlvr_lab.train.step import micro_batch_loss, score_tokens
from rlvr_lab.types import Batch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

HAS_TRL = importlib.util.find_spec("trl") is not None
needs_trl = pytest.mark.skipif(not HAS_TRL, reason="TRL is not installed (it lives in .venv-scale: make test-scale)")

# init_std 0.3: next-token distributions peaked enough that Lp-Reg's min-p proxy filters some tokens
TINY = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                       max_position_embeddings=64, init_std=0.3)
G = 4
STEP = 3  # RL step given to the objectives (Clip-Cov's generator seed, schedules)

# Method -> overrides that switch off what only rlvr-lab's own rollout can do.
ROLLOUT_ONLY = {
    "dapo": ["algorithm.dynamic_sampling.enabled=false"],
    "thr": ["algorithm.dynamic_sampling.enabled=false"],
    "nthr": ["algorithm.dynamic_sampling.enabled=false"],
    "hapo": ["algorithm.dynamic_sampling.enabled=false", "rollout.adaptive_temperature=null"],
    "spear": ["algorithm.spear=null"],
}
# Parity only: parameters at which the token overrides act on the small test batch (at the presets' values
# Lp-Reg selects max(1, floor(0.01 * 11)) tokens, i.e. none, and Clip-Cov finds no token in its band).
ACTIVE = {
    "lp_reg": ["algorithm.token_overrides=[{name: lp_reg, params: {rho_neg: 0.5, rounding: ceil, kappa: 0.001}}]"],
    "clip_cov": ["algorithm.token_overrides=[{name: clip_cov, params: {ratio: 0.3, lb: -5.0, ub: 5.0}}]"],
}
# Presets that are not a single-turn RL method (SFT losses, run recipes, tool use).
NOT_METHODS = {"demo", "div_prec_precision", "div_prec_tail", "llds_ma"}
METHODS = [m for m in available_methods() if m not in NOT_METHODS and not m.startswith("search_")]

# The GRPOConfig fields method_config reads, with the values the TRL run below uses.
TRL_SHAPE = dict(gradient_accumulation_steps=1, steps_per_generation=2, per_device_train_batch_size=4,
                 num_generations=G, num_iterations=1, temperature=1.0, max_completion_length=8, seed=0)


def overrides_for(method: str) -> list[str]:
    return [*ROLLOUT_ONLY.get(method, ()), *ACTIVE.get(method, ())]


def config_for(method: str):
    return method_config(method, overrides=overrides_for(method), trl_args=SimpleNamespace(**TRL_SHAPE))


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_tiny_model(TINY, tok, seed=0).train()


def rollout_batch(model, tok, cfg, *, seed: int = 0, prompts: int = 2) -> Batch:
    """``prompts`` groups of G responses of different lengths, scored by ``model``, with everything
    the native trainer's old-policy pass gives the objectives: old log-probs that differ from the
    current ones (the policy has moved), reference log-probs, entropy, the Lp-Reg proxy, action ids,
    0/1 rewards with both outcomes in every group, and token advantages."""
    g = torch.Generator().manual_seed(seed)
    n, alphabet = prompts * G, "abcdefgh"
    rows = []
    for _ in range(n):
        p_len, r_len = int(torch.randint(2, 6, (1,), generator=g)), int(torch.randint(2, 8, (1,), generator=g))
        text = "".join(alphabet[int(j)] for j in torch.randint(0, len(alphabet), (p_len + r_len,), generator=g))
        rows.append((tok.encode(text[:p_len], add_special_tokens=False), tok.encode(text[p_len:], add_special_tokens=False)))
    lp, T = max(len(p) for p, _ in rows), max(len(r) for _, r in rows)
    pad = tok.pad_token_id
    input_ids = torch.full((n, lp + T), pad)
    attention = torch.zeros(n, lp + T, dtype=torch.bool)
    for i, (p, r) in enumerate(rows):
        input_ids[i, lp - len(p) : lp] = torch.tensor(p)
        input_ids[i, lp : lp + len(r)] = torch.tensor(r)
        attention[i, lp - len(p) : lp + len(r)] = True
    mask = attention[:, lp:].clone()
    rewards = (torch.rand(n, generator=g) < 0.5).float().view(prompts, G)
    rewards[:, 0], rewards[:, 1] = 1.0, 0.0
    batch = Batch(input_ids=input_ids, attention_mask=attention, response_start=lp, loss_mask=mask,
                  rewards=rewards.view(-1), group_ids=torch.arange(prompts).repeat_interleave(G))
    batch.extras["correct"] = batch.rewards.bool()
    methods = Methods(cfg)
    methods.row_inputs(batch)
    temperature = loss_spec(cfg).temperature
    old = score_tokens(model, batch, temperature=temperature, micro_batch_size=n, with_entropy=True,
                       chunk_fns=methods.chunk_fns(temperature))
    batch.old_logprobs = (old.logprobs + 0.3 * torch.randn(n, T, generator=g)).clamp(max=0.0) * mask
    batch.ref_logprobs = (old.logprobs + 0.2 * torch.randn(n, T, generator=g)).clamp(max=0.0) * mask
    batch.extras["old_entropy"] = old.entropy
    batch.extras.update(old.extras)
    batch.advantages = torch.randn(n, 1, generator=g).expand(n, T) * mask
    return batch


def trl_inputs(batch: Batch) -> dict:
    """The batch as TRL's micro-batch dict plus this trainer's columns (what _prepare_inputs returns)."""
    rs = batch.response_start
    mask = batch.attention_mask.long()
    out = {
        "prompt_ids": batch.input_ids[:, :rs], "prompt_mask": mask[:, :rs],
        "completion_ids": batch.input_ids[:, rs:], "completion_mask": mask[:, rs:],
        "advantages": batch.advantages, "old_per_token_logps": batch.old_logprobs,
        "ref_per_token_logps": batch.ref_logprobs, "num_items_in_batch": batch.loss_mask.sum(),
        REWARDS_KEY: batch.rewards, CORRECT_KEY: batch.extras["correct"], GROUP_KEY: batch.group_ids,
        KEEP_KEY: torch.ones(len(batch), dtype=torch.bool),
    }
    out.update({EXTRA_PREFIX + k: v for k, v in batch.extras.items() if k != "correct"})
    return out


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def assert_same(loss_a, metrics_a, grads_a, loss_b, metrics_b, grads_b, *, rtol, atol):
    assert torch.isfinite(loss_a)
    torch.testing.assert_close(loss_a.detach(), loss_b.detach(), rtol=rtol, atol=atol)
    assert metrics_a.keys() == metrics_b.keys()
    for key in metrics_a:
        torch.testing.assert_close(metrics_a[key].float(), metrics_b[key].float(), rtol=rtol, atol=atol, msg=key)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=atol, msg=name)


# ---- without TRL ------------------------------------------------------------------------------------------


def test_methods_cover_the_presets():
    assert {"grpo", "dapo", "dr_grpo", "gspo", "llds", "lp_reg", "hapo", "thr", "clip_cov"} <= set(METHODS)


def test_batch_from_trl_maps_masks_and_columns(tok, model):
    cfg = config_for("llds")
    batch = rollout_batch(model, tok, cfg)
    inputs = trl_inputs(batch)
    inputs["tool_mask"] = torch.ones_like(inputs["completion_mask"])
    inputs["tool_mask"][:, 1] = 0  # a forced (tool output) token never trains
    inputs[KEEP_KEY][2] = False  # a row a sample filter dropped
    back = batch_from_trl(inputs)
    expected = batch.loss_mask.clone()
    expected[:, 1] = False
    expected[2] = False
    assert torch.equal(back.loss_mask, expected)
    assert torch.equal(back.input_ids, batch.input_ids) and back.response_start == batch.response_start
    assert torch.equal(back.extras["action_ids"], batch.extras["action_ids"])
    assert torch.equal(back.extras["correct"], batch.extras["correct"])
    # TRL's own (B,) advantages broadcast to the tokens that train
    inputs["advantages"] = torch.arange(len(batch), dtype=torch.float32)
    assert torch.equal(batch_from_trl(inputs).advantages, inputs["advantages"].unsqueeze(-1) * expected)


def test_combined_rewards_weights_functions_and_drops_unscored_rows():
    per_func = torch.tensor([[1.0, 0.5], [0.0, 0.5], [float("nan"), float("nan")], [1.0, float("nan")]])
    rewards, correct, scorable = combined_rewards(per_func, torch.tensor([1.0, 2.0]), correct_column=0,
                                                  correct_threshold=0.0, group_size=4)
    # weighted nansum; the unscored row takes the mean of its group's scored rows: (2 + 1 + 1) / 3
    torch.testing.assert_close(rewards, torch.tensor([2.0, 1.0, 4.0 / 3.0, 1.0]))
    assert correct.tolist() == [True, False, False, True]
    assert scorable.tolist() == [True, True, False, True]


@pytest.mark.parametrize(
    ("method", "needle"),
    [("dapo", "dynamic_sampling"), ("hapo", "adaptive_temperature"), ("spear", "algorithm.spear"),
     ("llds_ma", "answer_mask"), (str(Path(__file__).resolve().parents[2] / "configs" / "search_tiny.yaml"),
                                  "search.enabled")],
)
def test_rollout_only_methods_are_refused_with_the_key_to_change(method, needle):
    with pytest.raises(ValueError, match=needle):
        method_config(method, trl_args=SimpleNamespace(**TRL_SHAPE))


def test_unknown_method_lists_the_presets():
    with pytest.raises(ValueError, match="llds"):
        method_config("lldss")


def test_batch_layout_comes_from_trl():
    cfg = method_config("llds", trl_args=SimpleNamespace(**{**TRL_SHAPE, "steps_per_generation": 4,
                                                            "gradient_accumulation_steps": 2, "num_iterations": 3}))
    assert (cfg.train.group_size, cfg.train.minibatches, cfg.train.epochs, cfg.train.micro_batch_size) == (G, 2, 3, 4)
    assert cfg.train.prompts_per_step * cfg.train.group_size == 4 * 4  # rows of one generation batch
    assert loss_spec(cfg).t_norm == TRL_SHAPE["max_completion_length"]
    assert cfg.algorithm.aux_losses[0].name == "llds" and cfg.algorithm.kl.coef == 0.001


def test_without_a_method_the_default_algorithm_runs():
    # no preset name is built in: the config's own default algorithm, the same maths as the grpo preset
    cfg, grpo = method_config(), method_config("grpo")
    assert cfg.algorithm == AlgorithmConfig()
    pairs = zip(cfg.algorithm.components(), grpo.algorithm.components(), strict=True)
    for (_, registry, ours), (_, _, preset) in pairs:
        entry = registry.entry(ours.name)
        assert ours.name == preset.name and entry.with_defaults(ours.params) == entry.with_defaults(preset.params)
    assert loss_spec(cfg).aggregation == loss_spec(grpo).aggregation and cfg.algorithm.kl == grpo.algorithm.kl


def test_algorithm_block_and_overrides():
    block = {"advantage": {"name": "dr_grpo"}, "policy_loss": {"name": "ppo_clip", "params": {"clip_high": 0.28}},
             "aggregation": "seq-mean-token-sum-norm"}
    with pytest.raises(ValueError, match="'ppo_clip' needs an off-policy step"):  # clip-higher alone does nothing
        method_config(algorithm=block)
    cfg = method_config(algorithm=block, overrides=["algorithm.entropy_coef=0.01", "train.minibatches=2"])
    assert cfg.algorithm.advantage.name == "dr_grpo" and cfg.algorithm.entropy_coef == 0.01
    with pytest.raises(ValueError, match="not both"):
        method_config("grpo", algorithm=block)


@pytest.mark.parametrize(
    ("option", "needle"),
    [({"top_entropy_quantile": 0.2}, "top_entropy_quantile"),
     ({"importance_sampling_level": "sequence"}, "sequence-level ratio"),
     ({"entropy_coef": 0.01}, "algorithm.entropy_coef"),
     ({"use_vllm": True, "vllm_importance_sampling_correction": True}, "vllm"),
     ({"steps_per_generation": 3, "gradient_accumulation_steps": 2}, "multiple")],
)
def test_trl_loss_options_that_would_be_ignored_are_refused(option, needle):
    with pytest.raises(ValueError, match=needle):
        check_trl_args(SimpleNamespace(**{**TRL_SHAPE, **option}))
    check_trl_args(SimpleNamespace(**TRL_SHAPE))  # the defaults pass


def test_importing_the_module_does_not_import_trl():
    code = "import sys, rlvr_lab.integrations.trl as m; assert 'trl' not in sys.modules; print(m.batch_from_trl.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(HAS_TRL, reason="TRL is installed here")
def test_without_trl_the_trainer_says_how_to_install_it():
    import rlvr_lab.integrations.trl as integration

    with pytest.raises(ImportError, match=r"rlvr-lab\[trl\]"):
        integration.RlvrGRPOTrainer  # noqa: B018


# ---- with TRL --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok):
    """The tiny model saved to disk: with beta > 0 TRL re-loads the reference from the model's path."""
    path = tmp_path_factory.mktemp("tiny")
    model = build_tiny_model(TINY, tok, seed=0)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def make_trainer(model_dir, tok, tmp_path, method, *, max_steps=3, num_generations=G, overrides=(), **config):
    from datasets import Dataset
    from trl import GRPOConfig

    from rlvr_lab.integrations.trl import RlvrGRPOTrainer

    words = ["cat", "dog", "sun", "map", "pen", "cup", "hat", "box"]
    dataset = Dataset.from_dict({"prompt": [f"<bos>spell {w} backwards: " for w in words]})

    def has_a(completions, **_):  # a reward with both outcomes in most groups of a random model
        return [float("a" in c) for c in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1, seed=0, gradient_checkpointing=False, learning_rate=1e-2,
        per_device_train_batch_size=4, num_generations=num_generations, steps_per_generation=2,
        max_completion_length=8, max_steps=max_steps, **config,
    )
    return RlvrGRPOTrainer(model=model_dir, reward_funcs=has_a, args=args, train_dataset=dataset,
                           processing_class=tok, method=method, overrides=[*overrides_for(method), *overrides])


# ---- the adapter against numbers computed by hand --------------------------------------------------------
#
# 2 groups x 2 responses, a 1-token prompt and 3 response tokens of which the first 3, 2, 3 and 1 train.
# Rewards [1, 0 | 0.5, 0] (one reward function, weight 1). The current log-probs are the old ones plus
# log(r), so each token's ratio r = exp(logp - old) is one of these (1.0 past a response's end):
HAND_RATIOS = [[1.5, 1.0, 0.9],
               [0.5, 1.1, 1.0],
               [1.0, 1.3, 0.7],
               [1.25, 1.0, 1.0]]
HAND_LENGTHS = [3, 2, 3, 1]
HAND_REWARDS = [1.0, 0.0, 0.5, 0.0]
# GRPO's z-score of two different rewards (eps 0): (r - mean) / std_unbiased. Group 1: (1 - 0.5) / sqrt(0.5^2
# + 0.5^2) = 1/sqrt(2); group 2: (0.5 - 0.25) / sqrt(0.25^2 + 0.25^2) = 1/sqrt(2). So A = [+a, -a, +a, -a].
a = 1 / math.sqrt(2)


def hand_made_step(trainer, monkeypatch) -> SimpleNamespace:
    """The adapter's rollout stage on the hand-made batch (rewards -> advantages), then its loss with
    TRL's forward replaced by the chosen log-probs: token advantages ``adv``, ``loss``, loss ``metrics``,
    ``grad`` (d loss / d logp), the rollout's ``batch``, ``rollout_metrics`` and the TRL ``inputs``."""
    n, T = len(HAND_LENGTHS), 3
    mask = torch.arange(T) < torch.tensor(HAND_LENGTHS).unsqueeze(-1)  # (4, 3)
    old = torch.full((n, T), -1.0)
    logp = (old + torch.tensor(HAND_RATIOS).log()).requires_grad_()  # (4, 3), a leaf
    out = {
        "prompt_ids": torch.full((n, 1), 5), "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.full((n, T), 6), "completion_mask": mask.long(),
        "old_per_token_logps": old, "advantages": torch.zeros(n),  # TRL's advantages, replaced
    }
    trainer._rlvr_rewards_per_func = torch.tensor(HAND_REWARDS).unsqueeze(-1)  # (N, F=1)
    batch, rollout_metrics = trainer.rlvr_rollout(out, group_size=2, step=0)
    out.update(trl_columns(batch))
    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies",
                        lambda *args, **kwargs: (logp, torch.zeros_like(logp), None))
    loss, metrics, _ = trainer.rlvr_loss(trainer.model, out)
    loss.backward()
    return SimpleNamespace(adv=batch.advantages, loss=float(loss.detach()), metrics=metrics, grad=logp.grad,
                           batch=batch, rollout_metrics=rollout_metrics, inputs=out)


@needs_trl
def test_grpo_token_mean_ppo_clip_by_hand(model_dir, tok, tmp_path, monkeypatch):
    trainer = make_trainer(model_dir, tok, tmp_path, "grpo", num_generations=2,
                           overrides=["algorithm.advantage.params.eps=0.0"])
    got = hand_made_step(trainer, monkeypatch)
    torch.testing.assert_close(got.adv, torch.tensor([[a, a, a], [-a, -a, 0], [a, a, a], [-a, 0, 0]]))
    # PPO clip 0.2: per token max(-A r, -A clip(r, 0.8, 1.2)).
    #   A > 0 takes -A min(r, clip(r)):  row 1: -(1.2 + 1.0 + 0.9) a = -3.1 a;  row 3: -(1.0 + 1.2 + 0.7) a = -2.9 a
    #   A < 0 takes  a max(r, clip(r)):  row 2:  (0.8 + 1.1) a = 1.9 a;         row 4:  1.25 a
    # token-mean over the 9 tokens: (-3.1 + 1.9 - 2.9 + 1.25) a / 9 = -2.85 a / 9 = -0.2239171474
    assert abs(got.loss - (-0.2239171474)) < 1e-6
    # clipped: r = 1.5 (A > 0), r = 0.5 (A < 0), r = 1.3 (A > 0): 3 of 9 tokens
    assert abs(float(got.metrics["grpo/pg_clipfrac"]) - 3 / 9) < 1e-6
    # d/dlogp of -A r is -A r on unclipped tokens (dr/dlogp = r), 0 on clipped ones, then / 9
    want = torch.tensor([[0, -a, -0.9 * a], [0, 1.1 * a, 0], [-a, 0, -0.7 * a], [1.25 * a, 0, 0]]) / 9
    torch.testing.assert_close(got.grad, want, rtol=0, atol=1e-6)


@needs_trl
def test_dr_grpo_seq_mean_token_sum_norm_by_hand(model_dir, tok, tmp_path, monkeypatch):
    trainer = make_trainer(model_dir, tok, tmp_path, "dr_grpo", num_generations=2)
    assert trainer.rlvr_spec.t_norm == 8  # T_norm = max_completion_length
    got = hand_made_step(trainer, monkeypatch)
    # group-centred, no std: [1 - 0.5, 0 - 0.5 | 0.5 - 0.25, 0 - 0.25]
    want_adv = torch.tensor([[0.5, 0.5, 0.5], [-0.5, -0.5, 0], [0.25, 0.25, 0.25], [-0.25, 0, 0]])
    torch.testing.assert_close(got.adv, want_adv)
    # the same clipped token losses with these A:
    #   row 1: -0.5 (1.2 + 1.0 + 0.9) = -1.55     row 2: 0.5 (0.8 + 1.1) = 0.95
    #   row 3: -0.25 (1.0 + 1.2 + 0.7) = -0.725   row 4: 0.25 * 1.25 = 0.3125
    # sum / T_norm / B = (-1.55 + 0.95 - 0.725 + 0.3125) / 8 / 4 = -1.0125 / 32 = -0.031640625
    assert abs(got.loss - (-0.031640625)) < 1e-6
    want = torch.tensor([[0, -0.5, -0.45], [0, 0.55, 0], [-0.25, 0, -0.175], [0.3125, 0, 0]]) / 32
    torch.testing.assert_close(got.grad, want, rtol=0, atol=1e-6)


@needs_trl
def test_gspo_sequence_ratio_by_hand(model_dir, tok, tmp_path, monkeypatch):
    trainer = make_trainer(model_dir, tok, tmp_path, "gspo", num_generations=2,
                           overrides=["algorithm.advantage.params.eps=0.0"])
    got = hand_made_step(trainer, monkeypatch)
    torch.testing.assert_close(got.adv, torch.tensor([[a, a, a], [-a, -a, 0], [a, a, a], [-a, 0, 0]]))
    # one ratio per response, the geometric mean of its tokens' ratios, clipped to [1 - 3e-4, 1 + 4e-4]:
    #   s1 = (1.5 * 1.0 * 0.9)^(1/3) = 1.1052  (A > 0: min(s, 1.0004) = 1.0004, clipped)
    #   s2 = (0.5 * 1.1)^(1/2)       = 0.7416  (A < 0: max(s, 0.9997) = 0.9997, clipped)
    #   s3 = (1.0 * 1.3 * 0.7)^(1/3) = 0.91^(1/3) = 0.9690521083  (A > 0: min(s, 1.0004) = s)
    #   s4 = 1.25                               (A < 0: max(s, 0.9997) = s)
    # every token of a response has the same loss, so seq-mean-token-mean is the mean over the 4 responses:
    # a/4 * (-1.0004 + 0.9997 - 0.9690521083 + 1.25) = a/4 * 0.2802478917 = 0.0495412962
    assert abs(got.loss - 0.0495412962) < 1e-6
    assert abs(float(got.metrics["grpo/pg_clipfrac"]) - 5 / 9) < 1e-6  # the 3 + 2 tokens of responses 1 and 2
    # token t of response i has value s_i and gradient s_i dlogp_t (sg[s_i] pi/sg[pi]); clipped responses
    # give none; each response's tokens are averaged (/ its length), then / 4 responses
    s3 = 0.9690521083
    want = torch.tensor([[0, 0, 0], [0, 0, 0], [-a * s3 / 12] * 3, [a * 1.25 / 4, 0, 0]])
    torch.testing.assert_close(got.grad, want, rtol=0, atol=1e-6)


@needs_trl
def test_a_sample_filter_masks_the_rows_it_drops_by_hand(model_dir, tok, tmp_path, monkeypatch):
    trainer = make_trainer(model_dir, tok, tmp_path, "psr", num_generations=2)
    got = hand_made_step(trainer, monkeypatch)
    # PSR (subset): A = 1 on the correct responses (reward > 0: rows 1 and 3), which alone stay in the batch
    assert got.inputs[KEEP_KEY].tolist() == [True, False, True, False]
    assert (got.rollout_metrics["filter/kept_rows"], got.rollout_metrics["filter/dropped_rows"]) == (2.0, 2.0)
    torch.testing.assert_close(got.adv, torch.tensor([[1.0, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]]))
    # token-mean over the 6 kept tokens, as if rows 2 and 4 were removed:
    # (-(1.2 + 1.0 + 0.9) - (1.0 + 1.2 + 0.7)) / 6 = -6 / 6 = -1
    assert abs(got.loss - (-1.0)) < 1e-6
    # the dropped rows are out of every token mean: r = 1.5 and r = 1.3 clip, 2 of the 6 kept tokens
    assert abs(float(got.metrics["grpo/pg_clipfrac"]) - 2 / 6) < 1e-6
    want = torch.tensor([[0, -1.0, -0.9], [0, 0, 0], [-1.0, 0, -0.7], [0, 0, 0]]) / 6
    torch.testing.assert_close(got.grad, want, rtol=0, atol=1e-6)


@needs_trl
def test_the_extra_old_policy_pass_keeps_trls_old_logprobs(model_dir, tok, tmp_path, monkeypatch):
    # Lp-Reg's proxy needs the full logits: the native old-policy pass adds it (and the entropy) and leaves
    # TRL's old log-probs as they are
    trainer = make_trainer(model_dir, tok, tmp_path, "lp_reg", num_generations=2)
    assert trainer.rlvr_needs_old_pass
    got = hand_made_step(trainer, monkeypatch)
    assert got.batch.old_logprobs is got.inputs["old_per_token_logps"]
    for key in ("proxy_logprobs", "old_entropy"):
        assert got.batch.extras[key].shape == (4, 3) and torch.isfinite(got.batch.extras[key]).all(), key
        assert torch.equal(got.inputs[EXTRA_PREFIX + key], got.batch.extras[key])
    assert math.isfinite(got.loss)


@needs_trl
@pytest.mark.parametrize("method", ["llds", "lp_reg", "hapo", "gspo", "dr_grpo", "clip_cov", "kl_cov"])
def test_trainer_loss_equals_native_micro_batch_loss(model_dir, tok, tmp_path, method):
    """The subclass's path (TRL's fused forward, batch_from_trl, rlvr_window) gives the native value
    and gradient on identical tensors."""
    trainer = make_trainer(model_dir, tok, tmp_path, method)
    model, cfg, spec = trainer.model, trainer.rlvr_config, trainer.rlvr_spec
    assert trainer.rlvr_config.algorithm == config_for(method).algorithm
    batch = rollout_batch(model, tok, cfg, seed=1)
    den = denominators(batch.loss_mask, exclude_empty_sequences=spec.exclude_empty_sequences)

    native, native_metrics = micro_batch_loss(model, batch, spec, den, 1.0, Methods(cfg).context(STEP)(batch), STEP)
    native.backward()
    native_grads = grads(model)

    inputs = trl_inputs(batch)
    trainer._step = STEP * trainer._generate_every  # the objectives' RL step: generation STEP
    window = trainer.rlvr_window(inputs, 1, context=Methods(cfg).context(STEP))
    ours, our_metrics, _ = trainer.rlvr_loss(model, inputs, window)
    ours.backward()
    # TRL's forward (fused head, positions from 0 under left padding) agrees with rlvr-lab's to float error
    assert_same(ours, our_metrics, grads(model), native, native_metrics, native_grads, rtol=1e-4, atol=1e-6)
    for key in ("llds/loss", "lp_reg/num_regularized", "clip_cov/num_zeroed", "kl_cov/num_selected"):
        assert float(native_metrics.get(key, 1.0)) > 0, key  # the component did something on this batch


@needs_trl
def test_gradient_accumulation_over_an_optimiser_step_equals_one_native_mini_batch(model_dir, tok, tmp_path):
    """Two micro-batches of one optimiser step, each normalised by the whole step's counts, add up
    to the native loss of the whole mini-batch: TRL's split does not change the gradient."""
    trainer = make_trainer(model_dir, tok, tmp_path, "llds")
    model, cfg, spec = trainer.model, trainer.rlvr_config, trainer.rlvr_spec
    batch = rollout_batch(model, tok, cfg, seed=2)
    den = denominators(batch.loss_mask)
    native, _ = micro_batch_loss(model, batch, spec, den, 1.0, Methods(cfg).context(STEP)(batch), STEP)
    native.backward()
    native_grads = grads(model)

    inputs = trl_inputs(batch)
    half = len(batch) // 2
    chunks = [{k: v[:half] if v.dim() else v for k, v in inputs.items()},
              {k: v[half:] if v.dim() else v for k, v in inputs.items()}]
    trainer._step = STEP * trainer._generate_every
    window = trainer.rlvr_window(rows_of(chunks), 2, context=Methods(cfg).context(STEP))
    total = sum(trainer.rlvr_loss(model, chunk, window)[0] for chunk in chunks)
    total.backward()
    ours = grads(model)
    torch.testing.assert_close(total.detach(), native.detach(), rtol=1e-4, atol=1e-6)
    for name in native_grads:
        torch.testing.assert_close(ours[name], native_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@needs_trl
def test_three_step_cpu_run_with_llds_trains_and_logs_the_observatory(model_dir, tok, tmp_path):
    trainer = make_trainer(model_dir, tok, tmp_path, "llds", max_steps=3)
    assert trainer.args.beta == 0.001  # llds's KL switched TRL's reference model on
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    history = [r for r in trainer.state.log_history if "loss" in r]
    assert len(history) == 3
    assert all(math.isfinite(r["loss"]) for r in history)
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    logged = set().union(*history)
    assert {"grpo/pg_loss", "grpo/pg_clipfrac", "grpo/ppo_kl", "grpo/kl_loss", "llds/loss", "policy/entropy",
            "policy/entropy_p50", "tokens/low_prob_frac", "lld/num_correct", "lld/num_incorrect", "kl/ref",
            "logp/pos_mean", "adv/abs_mean"} <= logged
    assert logged & {"lld/correct_logp_before", "lld/incorrect_logp_before"}
    # steps_per_generation=2: the second optimiser step of a generation sees TRL's old log-probs of a policy
    # that has moved, so the ratio differs from 1 (LLDS would otherwise be identically zero)
    assert any(r.get("grpo/ppo_kl", 0.0) != 0.0 for r in history)
