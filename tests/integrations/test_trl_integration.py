"""rlvr-lab inside TRL's GRPOTrainer (rlvr_lab.integrations.trl).

* Without TRL: the loss composition equals the native micro_batch_loss for every preset (value and
  gradient); methods and GRPOConfig options that TRL cannot honour are refused; importing the
  module does not import TRL.
* With TRL (the scale venv): the trainer's loss path (TRL's fused forward, the input mapping, the
  optimiser-step counts) equals the native loss, also under gradient accumulation; a 3-step CPU run
  with LLDS changes the weights and logs rlvr-lab's metrics.
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
    composed_loss,
    method_config,
    rows_of,
)
from rlvr_lab.models.tiny import TinyModelConfig, build_tiny_model
from rlvr_lab.models.tokenizer import build_char_tokenizer
from rlvr_lab.objectives import denominators
from rlvr_lab.train.loop import loss_spec
from rlvr_lab.train.logprobs import sequence_token_stats
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


@pytest.mark.parametrize("method", METHODS)
def test_composed_loss_equals_native_micro_batch_loss(model, tok, method):
    """On identical tensors the adapter's composition gives the native loss, metrics and gradient."""
    cfg = config_for(method)
    spec = loss_spec(cfg)
    batch = rollout_batch(model, tok, cfg)
    den = denominators(batch.loss_mask, exclude_empty_sequences=spec.exclude_empty_sequences)

    native, native_metrics = micro_batch_loss(model, batch, spec, den, 1.0, Methods(cfg).context(STEP)(batch), STEP)
    native.backward()
    native_grads = grads(model)

    stats = sequence_token_stats(model, batch.input_ids, batch.attention_mask, batch.response_start,
                                 temperature=spec.temperature, with_entropy=True)
    ours, our_metrics = composed_loss(stats.logprobs, stats.entropy, batch, spec, den,
                                      extras=Methods(cfg).context(STEP)(batch), global_step=STEP)
    ours.backward()
    assert_same(ours, our_metrics, grads(model), native, native_metrics, native_grads, rtol=1e-6, atol=1e-7)
    for key in ("llds/loss", "lp_reg/num_regularized", "clip_cov/num_zeroed", "kl_cov/num_selected"):
        assert float(native_metrics.get(key, 1.0)) > 0, key  # the component did something on this batch
    if method == "grpo":
        assert float(native_metrics["grpo/pg_clipfrac"]) > 0  # old log-probs far enough for the clip to act


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
     ("llds_ma", "mask_answer"), (str(Path(__file__).resolve().parents[2] / "configs" / "search_tiny.yaml"),
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
     ({"importance_sampling_level": "sequence"}, "gspo"),
     ({"entropy_coef": 0.01}, "algorithm.entropy_coef"),
     ({"use_vllm": True, "vllm_importance_sampling_correction": True}, "vllm"),
     ({"steps_per_generation": 3, "gradient_accumulation_steps": 2}, "multiple")],
)
def test_trl_loss_options_that_would_be_ignored_are_refused(option, needle):
    with pytest.raises(ValueError, match=needle):
        check_trl_args(SimpleNamespace(**{**TRL_SHAPE, **option}))
    check_trl_args(SimpleNamespace(**TRL_SHAPE))  # the defaults pass


def test_importing_the_module_does_not_import_trl():
    code = "import sys, rlvr_lab.integrations.trl as m; assert 'trl' not in sys.modules; print(m.composed_loss.__name__)"
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


def make_trainer(model_dir, tok, tmp_path, method, *, max_steps=3, **config):
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
        per_device_train_batch_size=4, num_generations=G, steps_per_generation=2, max_completion_length=8,
        max_steps=max_steps, **config,
    )
    return RlvrGRPOTrainer(model=model_dir, reward_funcs=has_a, args=args, train_dataset=dataset,
                           processing_class=tok, method=method, overrides=overrides_for(method))


@needs_trl
@pytest.mark.parametrize("method", ["llds", "lp_reg", "hapo", "gspo", "dr_grpo", "clip_cov"])
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
