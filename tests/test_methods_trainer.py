"""The token-level methods wired into the native trainer: every preset runs end to end, and each
piece of glue (metric aggregation, sample filters, LLDS context, Lp-Reg proxy pass, HAPO sampler,
SPEAR replay, Diversity-or-Precision warm-start) does what the objective modules ask for."""

import gc
import json
import math
from pathlib import Path

import pytest
from batches import toy_batch as shared_toy_batch
import torch

from rlvr_lab.presets import preset_names
from rlvr_lab.config import ConfigError, load_config
from rlvr_lab.models import TinyModelConfig, build_char_tokenizer, build_tiny_model, render_prompt
from rlvr_lab.objectives.hapo import entropy_stats, hapo_temperature, logits_entropy
from rlvr_lab.objectives.llds import NUM_PRESERVING_KEY, llds_num_preserving
from rlvr_lab.objectives.thr import SCORE_KEY
from rlvr_lab.rollout.engine import RolloutEngine
from rlvr_lab.rollout.sampling import SamplingParams
from rlvr_lab.train import methods as methods_mod
from rlvr_lab.train.logprobs import response_hidden
from rlvr_lab.train.loop import Trainer
from rlvr_lab.train.methods import AdaptiveTemperature, Methods, Spear
from rlvr_lab.train.optim import build_optimizer, build_scheduler
from rlvr_lab.train.sft import cross_entropy_loss, div_prec_loss
from rlvr_lab.train.step import LossSpec, is_summed_metric, minibatch_update, policy_update
from rlvr_lab.types import Score

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ("model.tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, intermediate_size: 64, "
        "max_position_embeddings: 160}")
FAST = [
    "run.threads=1", TINY,
    "task.name=chain_sum",
    "task.config={min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}",
    "task.train_size=200", "task.eval_size=8",
    "sft.steps=2", "sft.batch_size=8",
    "train.steps=2", "train.prompts_per_step=4", "train.group_size=4", "train.micro_batch_size=8",
    "eval.enabled=false",
]
SMALL = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        max_position_embeddings=128)

# Where each preset's own metrics live (a new preset must be added here).
NAMESPACES = {
    "clip_cov": "clip_cov/", "kl_cov": "kl_cov/", "dapo": "dapo/", "dr_grpo": "grpo/", "grpo": "grpo/",
    "grpo_n": "grpo_n/", "gspo": "grpo/", "hapo": "hapo/", "llds": "llds/", "lp_reg": "lp_reg/",
    "nsr": "psr_nsr/", "psr": "psr_nsr/", "w_reinforce": "psr_nsr/", "nthr": "nthr/", "thr": "thr/",
    "passk": "passk/", "pkpo": "passk/", "passk_surrogate": "passk/", "hapo_tlga": "grpo/", "spear": "spear/",
    "div_prec_precision": "div_prec/", "div_prec_tail": "div_prec/",
}
PRESETS = preset_names()


def parity_reward(text: str, example) -> Score:
    """A reward that splits most groups (a tiny model is never right), so every method gets a signal."""
    ok = len(text) % 2 == 1
    return Score(value=float(ok), correct=ok)


@pytest.fixture
def mixed_rewards(monkeypatch):
    monkeypatch.setattr("rlvr_lab.train.environment.task_rubric", lambda verifier, format_weight: parity_reward)


def preset_config(tmp_path, preset, *extra):
    return load_config(CONFIGS / "demo.yaml", presets=[preset],
                       overrides=FAST + [f"run.output_dir={tmp_path}", *extra])


def read_metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# ---- every preset, end to end ---------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_and_logs_its_namespace(tmp_path, mixed_rewards, preset):
    cfg = preset_config(tmp_path, preset)
    if preset == "llds_ma":  # needs an answer span and search counts: tool-use rollouts only
        with pytest.raises(ValueError, match="'llds'.*answer_mask.*single-turn"):
            Trainer(cfg).run()
        return
    assert preset in NAMESPACES, f"add the metric namespace of the new preset {preset!r} to NAMESPACES"
    summary = Trainer(cfg).run()
    assert summary["status"] == "completed"
    rows = read_metrics(summary["run_dir"])
    rl = [r for r in rows if r["stage"] == "rl"]
    sft = [r for r in rows if r["stage"] == "sft"]
    assert len(rl) == 2 and len(sft) == 2
    assert all(math.isfinite(r["sft/loss"]) for r in sft)
    updated = [r for r in rl if "grpo/pg_loss" in r]
    assert updated, "no step updated the policy"
    for r in updated:
        assert math.isfinite(r["grpo/pg_loss"]) and math.isfinite(r["policy/grad_norm"])
    logged = {k for r in rows for k in r}
    assert any(k.startswith(NAMESPACES[preset]) for k in logged), sorted(logged)
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))


def test_method_specific_inputs_reach_the_objectives(tmp_path, mixed_rewards):
    """HAPO's temperature adapts from step 2 on; LLDS sees a moved policy; THR scores are (B, T)."""
    hapo = read_metrics(Trainer(preset_config(tmp_path / "h", "hapo", "algorithm.dynamic_sampling.enabled=false")).run()["run_dir"])
    hapo = [r for r in hapo if r["stage"] == "rl"]
    assert hapo[0]["hapo/temperature_adapted"] == 0.0 and hapo[0]["hapo/temperature_mean"] == 1.0
    assert hapo[1]["hapo/temperature_adapted"] == 1.0
    assert 0.95 - 1e-6 <= hapo[1]["hapo/temperature_min"] <= hapo[1]["hapo/temperature_max"] <= 1.05 + 1e-6
    llds = [r for r in read_metrics(Trainer(preset_config(tmp_path / "l", "llds")).run()["run_dir"]) if r["stage"] == "rl"]
    assert all(r["llds/mean_pos_displacement"] > 0 for r in llds)  # 2 mini-batches: the second sees a moved policy

    trainer = Trainer(preset_config(tmp_path / "t", "nthr", "algorithm.dynamic_sampling.enabled=false"))
    trainer.setup()
    batch = trainer.prepare(trainer.collect(1).batch)
    assert batch.extras[SCORE_KEY].shape == batch.loss_mask.shape
    assert all(v.dim() <= 2 for v in batch.extras.values())  # the (B, T, d) hidden states are not kept
    assert bool((batch.extras[SCORE_KEY] != 0).any())


# ---- LLDS ---------------------------------------------------------------------------------------


def test_llds_identically_zero_is_refused_or_warned_at_startup(tmp_path):
    with pytest.raises(ConfigError, match="(?s)'llds' needs an off-policy step.*identically 0.*minibatches >= 2"):
        preset_config(tmp_path, "llds", "train.minibatches=1")
    cfg = preset_config(tmp_path, "llds", "train.minibatches=1", "train.allow_inert_methods=true")
    events = []
    trainer = Trainer(cfg, reporter=lambda kind, **kw: events.append((kind, kw)))
    with pytest.warns(UserWarning, match="'llds' needs an off-policy step"):
        trainer.setup()
    assert [kw["message"] for kind, kw in events if kind == "warning"] == trainer.summary["warnings"]
    assert "runs anyway" in trainer.summary["warnings"][0]
    assert Trainer(preset_config(tmp_path / "ok", "llds")).run()["warnings"] == []  # the preset's 2 mini-batches


def test_console_reporter_prints_warnings(capsys):
    from rich.console import Console

    from rlvr_lab.cli import ConsoleReporter

    ConsoleReporter(Console(force_terminal=False, width=200))("warning", message="llds is identically zero")
    assert "warning: llds is identically zero" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def toy_batch(tok, n=8, seed=0):
    return shared_toy_batch(tok, n, seed, unit="ab", max_repeats=3, logp_scale=6.0)


def accumulate(tok, batch, spec, micro, context=None):
    """Gradient and metrics of one minibatch_update at micro-batch size ``micro`` (lr 0: weights unchanged)."""
    model = build_tiny_model(SMALL, tok, seed=0)
    opt = build_optimizer(model.parameters(), lr=0.0, weight_decay=0.0, betas=(0.9, 0.99))
    sched = build_scheduler(opt, warmup_steps=0, total_steps=1, schedule="constant")
    grads = {}
    orig = opt.step
    opt.step = lambda *a, **k: (grads.update({n: p.grad.clone() for n, p in model.named_parameters()}), orig(*a, **k))[1]
    metrics = minibatch_update(model, opt, sched, batch, spec, micro_batch_size=micro, max_grad_norm=None, context=context)
    return grads, metrics


def test_llds_paper_norm_is_exact_under_micro_batching(tmp_path, tok):
    cfg = preset_config(tmp_path, "llds", "algorithm.aux_losses=[{name: llds, params: {norm: paper, gate: token}}]")
    methods = Methods(cfg)
    batch = toy_batch(tok)
    methods.row_inputs(batch)
    context = methods.context(0)
    assert context(batch)[NUM_PRESERVING_KEY] == llds_num_preserving(batch.advantages, batch.loss_mask)
    spec = LossSpec(aux_losses=(("llds", {"norm": "paper", "gate": "token"}),))
    g_full, m_full = accumulate(tok, batch, spec, micro=8, context=context)
    g_micro, m_micro = accumulate(tok, batch, spec, micro=2, context=context)
    assert m_full["llds/loss"] > 0
    assert m_micro["llds/loss"] == pytest.approx(m_full["llds/loss"], rel=1e-5)
    for name in g_full:
        assert torch.allclose(g_full[name], g_micro[name], atol=1e-6), name


# ---- metric aggregation ------------------------------------------------------------------------


def test_metric_rule_sums_loss_shares_and_counts_and_averages_rates():
    for key in ("llds/loss", "grpo/pg_loss", "grpo/kl_loss", "policy/entropy_bonus", "lp_reg/num_selected",
                "clip_cov/num_zeroed", "hapo/pg_clipfrac_count"):
        assert is_summed_metric(key), key
    for key in ("grpo/pg_clipfrac", "grpo/ppo_kl", "lp_reg/kl_mean", "llds/frac_gated", "clip_cov/zeroed_frac"):
        assert not is_summed_metric(key), key


def test_minibatch_metrics_do_not_depend_on_the_micro_batch_size(tok):
    batch = toy_batch(tok)
    batch.extras["proxy_logprobs"] = batch.old_logprobs + 0.5
    spec = LossSpec(kl_coef=0.1, token_overrides=(("lp_reg", {}),))
    batch.ref_logprobs = batch.old_logprobs - 0.1
    _, full = accumulate(tok, batch, spec, micro=8)
    _, micro = accumulate(tok, batch, spec, micro=3)
    negatives = float(((batch.advantages < 0) & batch.loss_mask).sum())
    assert full["lp_reg/num_negative"] == micro["lp_reg/num_negative"] == negatives  # a count: summed
    for key in ("grpo/pg_loss", "grpo/kl_loss"):  # loss shares: summed
        assert micro[key] == pytest.approx(full[key], rel=1e-5), key


# ---- sample filters ------------------------------------------------------------------------------


def test_filtered_batch_drops_the_remainder_rows_and_an_empty_one_skips(tok):
    model = build_tiny_model(SMALL, tok, seed=0)
    opt = build_optimizer(model.parameters(), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99))
    sched = build_scheduler(opt, warmup_steps=0, total_steps=4, schedule="constant")
    batch = toy_batch(tok)
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0], dtype=torch.bool)
    kept, metrics = Methods.drop_rows(batch, keep)
    assert len(kept) == 5 and metrics == {"filter/kept_rows": 5.0, "filter/dropped_rows": 3.0}
    args = dict(epochs=1, micro_batch_size=4, max_grad_norm=1.0, generator=torch.Generator().manual_seed(0))
    out = policy_update(model, opt, sched, kept, LossSpec(), minibatches=2, **args)
    assert out["policy/optimizer_steps"] == 2 and out["policy/dropped_rows"] == 1
    empty, _ = Methods.drop_rows(batch, torch.zeros(8, dtype=torch.bool))
    assert policy_update(model, opt, sched, empty, LossSpec(), minibatches=2, **args)["policy/skipped_updates"] == 1


def test_psr_subset_trains_only_on_correct_rows(tmp_path, mixed_rewards, monkeypatch):
    seen = []
    real = methods_mod.Methods.drop_rows

    def spy(batch, keep):
        out = real(batch, keep)
        seen.append((batch.extras["correct"].clone(), out[0].extras["correct"].clone()))
        return out

    monkeypatch.setattr(methods_mod.Methods, "drop_rows", staticmethod(spy))
    rows = read_metrics(Trainer(preset_config(tmp_path, "psr")).run()["run_dir"])
    for before, after in seen:
        assert bool(after.all()) and len(after) == int(before.sum())
    rl = [r for r in rows if r["stage"] == "rl"]
    assert all(r["psr_nsr/effective_examples"] == r["psr_nsr/correct_count"] for r in rl)


# ---- Lp-Reg: the proxy pass keeps only (B, T) ---------------------------------------------------------


def test_lp_reg_proxy_pass_keeps_no_full_vocabulary_tensor(tmp_path, monkeypatch):
    cfg = preset_config(tmp_path, "lp_reg", "train.micro_batch_size=4")
    trainer = Trainer(cfg)
    trainer.setup()
    shapes: list[tuple[int, ...]] = []
    real = Methods.chunk_fns

    def spying_chunk_fns(self, temperature):
        def wrap(fn):
            def spy(logits, targets):
                shapes.append(tuple(logits.shape))
                return fn(logits, targets)
            return spy
        return {name: wrap(fn) for name, fn in real(self, temperature).items()}

    monkeypatch.setattr(Methods, "chunk_fns", spying_chunk_fns)
    batch = trainer.prepare(trainer.collect(1).batch)
    B, T = batch.loss_mask.shape
    V = trainer.model.get_output_embeddings().weight.shape[0]
    assert shapes and all(n <= 4 * T and v == V for n, v in shapes)  # one micro-batch's chunk at a time
    proxy = batch.extras["proxy_logprobs"]
    assert proxy.shape == (B, T) and not proxy.requires_grad
    assert all(v.numel() <= B * T for v in batch.extras.values())
    gc.collect()
    # no logits (any tensor whose last dimension is the vocabulary) survive the pass
    vocab_sized = [o for o in gc.get_objects() if type(o) is torch.Tensor and o.dim() >= 2 and o.shape[-1] == V]
    assert vocab_sized == [], [tuple(o.shape) for o in vocab_sized]
    # the proxy is what lp_reg_proxy_logprobs gives on the full logits of the same rows
    from rlvr_lab.objectives.lp_reg import lp_reg_proxy_logprobs

    with torch.no_grad():
        h = response_hidden(trainer.model, batch.input_ids[:2], batch.attention_mask[:2], batch.response_start)
        logits = trainer.model.get_output_embeddings()(h).reshape(-1, V)
        want = lp_reg_proxy_logprobs(logits, batch.input_ids[:2, batch.response_start:].reshape(-1)).view(2, T)
    m = batch.loss_mask[:2]
    assert torch.allclose(proxy[:2][m], want[m], atol=1e-4)


# ---- Clip-Cov generator --------------------------------------------------------------------------


def test_context_generator_is_seeded_by_run_seed_and_step(tmp_path, tok):
    cfg = preset_config(tmp_path, "clip_cov")
    batch = toy_batch(tok)
    draw = lambda methods, step: torch.rand(4, generator=methods.context(step)(batch)["generator"])  # noqa: E731
    a, b = Methods(cfg), Methods(cfg)
    assert torch.equal(draw(a, 3), draw(b, 3))
    assert not torch.equal(draw(a, 3), draw(a, 4))


# ---- HAPO adaptive temperature ------------------------------------------------------------------------


def test_sampler_logprobs_follow_a_per_row_temperature(tok):
    model = build_tiny_model(SMALL.model_copy(update={"init_std": 0.2}), tok, seed=0)
    prompts = [tok.encode(render_prompt(tok, q), add_special_tokens=False) for q in ("2+3?", "Hi there", "7*8")]

    def temperature_fn(logits):  # varies by row and position
        return 0.5 + torch.sigmoid(logits[:, 0] - logits[:, 1])

    params = SamplingParams(temperature=1.0, max_new_tokens=6)
    gen = RolloutEngine(model, tok, backend="native").generate(prompts, params, seed=3, temperature_fn=temperature_fn)
    ids = torch.cat([gen.prompt_ids, gen.response_ids], 1)
    mask = torch.cat([gen.prompt_mask, gen.response_mask], 1)
    with torch.no_grad():
        logits = model.get_output_embeddings()(response_hidden(model, ids, mask, gen.prompt_ids.shape[1])).float()
        temps = temperature_fn(logits.reshape(-1, logits.shape[-1])).view(logits.shape[:2])  # (B, T)
        want = torch.log_softmax(logits / temps.unsqueeze(-1), -1).gather(-1, gen.response_ids.unsqueeze(-1)).squeeze(-1)
    m = gen.response_mask
    assert torch.allclose(gen.sampler_logprobs[m], want[m], atol=1e-4)
    assert temps[m].std() > 0  # the rows really were sampled at different temperatures


def test_adaptive_temperature_uses_the_previous_steps_entropy_statistics(tmp_path):
    cfg = preset_config(tmp_path, "hapo")
    adaptive = Methods(cfg).temperature_fn()
    assert isinstance(adaptive, AdaptiveTemperature)
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(adaptive(logits), torch.ones(5))  # step 1: T0 everywhere
    old_entropy = torch.tensor([[0.05, 0.2, 0.5, 1.0, 2.0]])  # spec 8.5 example
    adaptive.update(old_entropy, torch.ones_like(old_entropy, dtype=torch.bool))
    stats = entropy_stats(old_entropy, torch.ones(1, 5, dtype=torch.bool), entropy_pivot=0.8)
    want = hapo_temperature(logits_entropy(logits), stats, base_temperature=1.0, tau=0.05)
    assert torch.allclose(adaptive(logits), want)
    assert adaptive.metrics()["hapo/temperature_adapted"] == 1.0


def test_adaptive_temperature_needs_sampling():
    with pytest.raises(ConfigError, match="adaptive_temperature needs sampling"):
        load_config(CONFIGS / "demo.yaml", presets=["hapo"], overrides=["rollout.temperature=0"])


# ---- SPEAR --------------------------------------------------------------------------------------------


def test_spear_tool_call_bonus_follows_the_schedule(tmp_path):
    spear = Methods(preset_config(tmp_path, "spear")).spear
    rewards, metrics = spear.bonus(torch.tensor([0.0, 1.0]), torch.tensor([3, 0]), step=50)
    assert torch.allclose(rewards, torch.tensor([0.256066, 1.0]), atol=1e-6)  # spec 7.2: 3 calls at step 50
    assert metrics["spear/toolcall_weight"] == pytest.approx(0.853553, abs=1e-6)
    assert torch.equal(spear.bonus(torch.tensor([1.0]), None, step=0)[0], torch.tensor([1.0]))  # no tool calls


def test_spear_rollout_filter_keeps_the_highest_std_groups(tmp_path):
    spear = Spear(preset_config(tmp_path, "spear").algorithm.spear, pad_token_id=0)
    rewards = torch.tensor([[0.0, 0, 0, 0], [0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert spear.group_keep(rewards)[:, 0].tolist() == [True, True, False, True]  # int(0.75 * 4) = 3 groups


def test_spear_replays_with_its_own_loss_after_the_update(tmp_path, mixed_rewards):
    cfg = preset_config(tmp_path, "spear", "algorithm.spear.replay.buffer_size=2",
                        "algorithm.spear.replay.warmup_steps=0", "train.steps=3")
    rl = [r for r in read_metrics(Trainer(cfg).run()["run_dir"]) if r["stage"] == "rl"]
    replayed = [r for r in rl if "spear/replay_grpo_pg_loss" in r]
    assert replayed, [sorted(k for k in r if k.startswith("spear/")) for r in rl]
    r = replayed[0]
    assert r["spear/replay_size"] in (1, 2) and r["spear/replay_coef"] == 1.0
    assert math.isfinite(r["spear/replay_grpo_pg_loss"]) and "spear/replay_clip_cov_num_candidates" in r
    assert all(x["spear/toolcall_bonus_mean"] == 0.0 for x in rl)  # single-turn: no tool calls


def test_spear_preset_replays_on_batches_of_this_size(tmp_path, mixed_rewards):
    """The preset's buffer is sized to the rollout batch (a quarter of it), so replay fires within a few
    steps on small batches too, at the preset's own warm-up schedule."""
    cfg = preset_config(tmp_path, "spear", "train.steps=4")
    assert cfg.algorithm.spear.replay.buffer_size == 4 * 4 // 4
    rl = [r for r in read_metrics(Trainer(cfg).run()["run_dir"]) if r["stage"] == "rl"]
    replayed = [r["step"] for r in rl if "spear/replay_grpo_pg_loss" in r]
    assert replayed, [(r["step"], r.get("spear/buffer_replayable")) for r in rl]
    print(f"replay at steps {replayed} of {len(rl)}")


def test_spear_config_is_validated():
    with pytest.raises(ConfigError, match="capacity"):
        load_config(CONFIGS / "demo.yaml", presets=["spear"],
                    overrides=["algorithm.spear.replay.capacity=10", "algorithm.spear.replay.buffer_size=8"])
    with pytest.raises(ConfigError, match="ratio"):
        load_config(CONFIGS / "demo.yaml", presets=["spear"],
                    overrides=["algorithm.spear.replay.token_overrides=[{name: clip_cov, params: {ratoi: 1}}]"])
    with pytest.raises(ConfigError, match="kind"):
        load_config(CONFIGS / "demo.yaml", overrides=["algorithm.spear={toolcall: {kind: linear}}"])


# ---- Diversity-or-Precision warm-start ----------------------------------------------------------------------


def test_div_prec_with_zero_exponent_and_rewards_is_cross_entropy(tok):
    batch = toy_batch(tok)
    grads = []
    for loss_fn, params in ((cross_entropy_loss, {}), (div_prec_loss, dict(beta=0.0, lambda_top=0.0, lambda_tail=0.0))):
        model = build_tiny_model(SMALL, tok, seed=0)
        value, metrics = loss_fn(model, batch, **params)
        value.backward()
        grads.append((float(value), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for name in grads[0][1]:
        assert torch.allclose(grads[0][1][name], grads[1][1][name], atol=1e-6), name


def test_sft_loss_config_is_validated():
    with pytest.raises(ConfigError, match="unknown parameter 'bta'"):
        load_config(CONFIGS / "demo.yaml", overrides=["sft.loss={name: div_prec, params: {bta: 1}}"])
    with pytest.raises(ConfigError, match="sft.loss.name"):
        load_config(CONFIGS / "demo.yaml", overrides=["sft.loss={name: focal}"])


def test_llds_ma_reads_the_steps_mean_valid_searches_not_the_mini_batchs(tmp_path, tok):
    """V_s of eq. 5 (arXiv 2512.04220) is the step's mean number of valid searches."""
    from rlvr_lab.objectives.llds import VALID_SEARCH_MEAN_KEY

    methods = Methods(load_config(CONFIGS / "demo.yaml", presets=["llds_ma"]))
    batch = toy_batch(tok)
    batch.extras["valid_searches"] = torch.tensor([0.0, 0, 0, 0, 4, 4, 4, 4])  # step mean 2
    context = methods.context(0, batch)
    first_half = batch.select(torch.arange(4))  # a mini-batch whose own mean is 0
    assert float(context(first_half)[VALID_SEARCH_MEAN_KEY]) == 2.0
    assert VALID_SEARCH_MEAN_KEY not in Methods(load_config(CONFIGS / "demo.yaml", presets=["llds"])).context(0, batch)(batch)
