"""Optimisers beyond AdamW (rlvr_lab.optim): hand-computed single steps, the limits that tie Muon and Shampoo to
SpecGD, the language-model parameter split, and the trainer's ``train.optim.name``."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from rlvr_lab.config import ConfigError, load_config
from rlvr_lab.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from rlvr_lab.optim import (
    Muon,
    NormalizedGD,
    Shampoo,
    SpecGD,
    build_matrix_optimizer,
    newton_schulz,
    spec_step,
    split_matrix_params,
    step_scale,
)
from rlvr_lab.train.optim import build_optimizer
from rlvr_lab.types import Score

torch.set_num_threads(1)
F64 = torch.float64
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def well_conditioned(m: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, U Vᵀ)``: a random (m, n) matrix with singular values spread over [1, 2], and its polar factor."""
    g = torch.Generator().manual_seed(seed)
    r = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, r, dtype=F64, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, r, dtype=F64, generator=g))
    return U @ torch.diag(torch.linspace(1.0, 2.0, r, dtype=F64)) @ V.mT, U @ V.mT


def one_step(opt_cls, G: torch.Tensor, **kwargs) -> torch.Tensor:
    """The parameter change of one step of ``opt_cls`` from W = 0 with gradient G."""
    W = torch.zeros_like(G, requires_grad=True)
    opt = opt_cls([W], **kwargs)
    W.grad = G.clone()
    opt.step()
    return W.detach().clone()


# ---- spec_step and SpecGD ----------------------------------------------------------------------


def test_spec_step_of_hand_computed_matrices():
    # diag(2, 0.5) = I diag(2, 0.5) I: polar factor I; a swap scaled per row: the swap itself
    assert spec_step(torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=F64)).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert torch.allclose(spec_step(torch.tensor([[0.0, 3.0], [1.0, 0.0]], dtype=F64)),
                          torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64), atol=1e-15)
    # rank one: 5 u vᵀ with unit u, v -> u vᵀ
    u, v = torch.tensor([0.6, 0.8], dtype=F64), torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    assert torch.allclose(spec_step(5.0 * torch.outer(u, v)), torch.outer(u, v), atol=1e-15)
    assert spec_step(torch.zeros(3, 2, dtype=F64)).abs().max() == 0


def test_spec_step_has_unit_singular_values_on_the_rank_of_g():
    # spec A2.4 (1): rank 2 in R^{5x7}
    g = torch.Generator().manual_seed(1)
    G = torch.randn(5, 2, dtype=F64, generator=g) @ torch.randn(2, 7, dtype=F64, generator=g)
    S = spec_step(G)
    sv = torch.linalg.svdvals(S)
    assert torch.linalg.matrix_rank(S) == 2
    assert torch.allclose(sv[:2], torch.ones(2, dtype=F64), atol=1e-12) and sv[2:].abs().max() < 1e-12
    U, _, Vh = torch.linalg.svd(G)
    col, row = U[:, :2], Vh[:2].mT  # column and row spaces of G
    assert torch.allclose(col @ col.mT @ S, S, atol=1e-12)  # columns of S in G's column space
    assert torch.allclose(S @ row @ row.mT, S, atol=1e-12)  # rows of S in G's row space


def test_spec_step_drops_singular_values_below_rtol():
    G = torch.diag(torch.tensor([1.0, 1e-12], dtype=F64))
    assert spec_step(G).tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert spec_step(G, rtol=1e-13).tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_specgd_step_is_minus_lr_times_the_polar_factor():
    G = torch.tensor([[0.0, 3.0], [1.0, 0.0]], dtype=F64)
    assert torch.allclose(one_step(SpecGD, G, lr=0.1), torch.tensor([[0.0, -0.1], [-0.1, 0.0]], dtype=F64), atol=1e-15)
    G, polar = well_conditioned(4, 6)
    assert torch.allclose(one_step(SpecGD, G, lr=0.5), -0.5 * polar, atol=1e-12)


def test_specgd_needs_matrices_unless_the_group_takes_adamw():
    with pytest.raises(ValueError, match="2-D"):
        SpecGD([torch.zeros(3, requires_grad=True)], lr=0.1)
    SpecGD([{"params": [torch.zeros(3, requires_grad=True)], "adamw": True}], lr=0.1)


def test_adamw_groups_step_like_torch_adamw():
    g = torch.Generator().manual_seed(0)
    start = torch.randn(4, dtype=F64, generator=g)
    grads = [torch.randn(4, dtype=F64, generator=g) for _ in range(3)]
    ours, ref = start.clone().requires_grad_(), start.clone().requires_grad_()
    opt = Muon([{"params": [ours], "adamw": True}], lr=0.01, weight_decay=0.1, betas=(0.9, 0.95))
    opt_ref = torch.optim.AdamW([ref], lr=0.01, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    for grad in grads:
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        opt_ref.step()
    assert torch.allclose(ours, ref, atol=1e-14)


# ---- Newton–Schulz and Muon --------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (10, 6)])
def test_newton_schulz_approximates_the_polar_factor(shape):
    G, polar = well_conditioned(*shape)
    # the convergent quintic reaches U Vᵀ within 1e-2 in Muon's 5 steps for a well-conditioned G (spec A2.5)
    assert (newton_schulz(G, coefficients="convergent") - polar).abs().max() < 1e-2
    # Muon's coefficients trade accuracy for speed: singular values in about [0.68, 1.13], vectors kept
    approx = newton_schulz(G)
    sv = torch.linalg.svdvals(approx)
    assert sv.min() > 0.6 and sv.max() < 1.2
    cosine = (approx * polar).sum() / (approx.norm() * polar.norm())
    assert cosine > 0.98


def test_muon_without_momentum_is_specgd():
    G, polar = well_conditioned(5, 7)
    exact = one_step(Muon, G, lr=0.1, momentum=0.0, coefficients="convergent", ns_steps=12, scale="none")
    assert torch.allclose(exact, one_step(SpecGD, G, lr=0.1), atol=1e-10)
    fast = one_step(Muon, G, lr=0.1, momentum=0.0)  # Muon's defaults: 5 steps of its coefficients
    cosine = (fast * -polar).sum() / (fast.norm() * polar.norm())
    assert cosine > 0.98


def test_muon_two_steps_use_nesterov_momentum():
    g = torch.Generator().manual_seed(2)
    g1, g2 = torch.randn(3, 4, dtype=F64, generator=g), torch.randn(3, 4, dtype=F64, generator=g)
    W = torch.zeros(3, 4, dtype=F64, requires_grad=True)
    opt = Muon([W], lr=0.05, momentum=0.9)
    W.grad = g1.clone()
    opt.step()
    first = W.detach().clone()
    assert torch.allclose(first, -0.05 * newton_schulz(g1 + 0.9 * g1), atol=1e-12)
    W.grad = g2.clone()
    opt.step()
    buffer = 0.9 * g1 + g2
    assert torch.allclose(W.detach() - first, -0.05 * newton_schulz(g2 + 0.9 * buffer), atol=1e-12)


@pytest.mark.parametrize("opt_cls", [Muon, Shampoo])
def test_state_dict_round_trip_continues_identically(opt_cls):
    # a resumed run reloads the optimiser: momentum / preconditioners and the AdamW group's moments
    g = torch.Generator().manual_seed(4)
    grads = [(torch.randn(3, 4, dtype=F64, generator=g), torch.randn(4, dtype=F64, generator=g)) for _ in range(3)]

    def make():
        W, b = torch.zeros(3, 4, dtype=F64, requires_grad=True), torch.zeros(4, dtype=F64, requires_grad=True)
        return W, b, opt_cls([{"params": [W]}, {"params": [b], "adamw": True}], lr=0.1)

    W, b, opt = make()
    for gW, gb in grads[:2]:
        W.grad, b.grad = gW.clone(), gb.clone()
        opt.step()
    W2, b2, opt2 = make()
    with torch.no_grad():
        W2.copy_(W)
        b2.copy_(b)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as saved to disk: state_dict() aliases live tensors
    for w, bias, o in ((W, b, opt), (W2, b2, opt2)):
        w.grad, bias.grad = grads[2][0].clone(), grads[2][1].clone()
        o.step()
    assert torch.equal(W, W2) and torch.equal(b, b2)


def test_step_scales():
    assert step_scale((4, 8), "none") == 1.0
    assert step_scale((8, 2), "spectral") == 2.0 and step_scale((2, 8), "spectral") == 1.0
    assert step_scale((16, 4), "match_adamw") == pytest.approx(0.8)
    with pytest.raises(ValueError, match="allowed"):
        Muon([torch.zeros(2, 2, requires_grad=True)], scale="huge")


# ---- Shampoo and normalised GD -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 6), (4, 7)])
def test_shampoo_on_the_current_gradient_is_specgd(shape):
    G, polar = well_conditioned(*shape)
    step = one_step(Shampoo, G, lr=1.0, decay=0.0, epsilon=1e-14)
    assert torch.allclose(step, -polar, atol=1e-6)


def test_shampoo_rank_deficient_gradient_in_the_eps_limit():
    g = torch.Generator().manual_seed(3)
    G = torch.randn(5, 2, dtype=F64, generator=g) @ torch.randn(2, 7, dtype=F64, generator=g)
    assert torch.allclose(one_step(Shampoo, G, lr=1.0, decay=0.0, epsilon=1e-16), -spec_step(G), atol=1e-5)


def test_shampoo_accumulates_its_preconditioners():
    # G = diag(2, 1/2): L = R = diag(4, 1/4), so the first step is I; the same gradient again gives
    # L = R = diag(8, 1/2) and the step (2^{-1/4})² I = I / √2
    W = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    opt = Shampoo([W], lr=1.0, epsilon=1e-30)
    G = torch.diag(torch.tensor([2.0, 0.5], dtype=F64))
    W.grad = G.clone()
    opt.step()
    assert torch.allclose(W.detach(), -torch.eye(2, dtype=F64), atol=1e-12)
    W.grad = G.clone()
    opt.step()
    assert torch.allclose(W.detach(), -(1 + 2 ** -0.5) * torch.eye(2, dtype=F64), atol=1e-12)


def test_normalized_gd_step():
    step = one_step(NormalizedGD, torch.tensor([3.0, 4.0], dtype=F64), lr=0.5)
    assert step.tolist() == [-0.3, -0.4]
    assert one_step(NormalizedGD, torch.zeros(2, dtype=F64), lr=0.5).tolist() == [0.0, 0.0]


# ---- language models: the split and the trainer -------------------------------------------------

TINY_MODEL = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                             max_position_embeddings=128)


def test_split_sends_embeddings_head_and_norms_to_adamw():
    model = build_tiny_model(TINY_MODEL, build_char_tokenizer(), seed=0)
    matrix, other = split_matrix_params(model)
    matrix_names, other_names = [n for n, _ in matrix], [n for n, _ in other]
    assert all(n.startswith("model.layers.0.") and n.endswith("proj.weight") for n in matrix_names)
    assert len(matrix_names) == 7  # q, k, v, o, gate, up, down
    assert "model.embed_tokens.weight" in other_names  # tied to the LM head
    assert all("norm" in n or "embed" in n for n in other_names)
    opt = build_matrix_optimizer(model, "muon", lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99))
    assert [g["adamw"] for g in opt.param_groups] == [False, True]
    assert opt.param_groups[0]["scale"] == "match_adamw"


def test_build_optimizer_by_name():
    model = build_tiny_model(TINY_MODEL, build_char_tokenizer(), seed=0)
    assert isinstance(build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99)), torch.optim.AdamW)
    tensors = model.parameters()  # the older call, a list of tensors, still builds AdamW
    assert isinstance(build_optimizer(tensors, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99)), torch.optim.AdamW)
    assert isinstance(build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99), name="specgd"), SpecGD)
    with pytest.raises(ValueError, match="needs the model"):
        build_optimizer(model.parameters(), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99), name="muon")
    with pytest.raises(ValueError, match="allowed: adamw, muon, specgd"):
        build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99), name="sgd")


def test_optimiser_name_is_validated_in_the_config():
    assert load_config(None).train.optim.name == "adamw"
    assert load_config(None, overrides=["train.optim.name=muon"]).train.optim.name == "muon"
    with pytest.raises(ConfigError, match="train.optim.name"):
        load_config(None, overrides=["train.optim.name=lion"])


FAST = [
    "run.threads=1",
    "model.tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, intermediate_size: 64, "
    "max_position_embeddings: 160}",
    "task.name=chain_sum", "task.config={min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}",
    "task.train_size=100", "task.eval_size=8", "sft.steps=0", "rollout.max_new_tokens=8",
    "train.steps=2", "train.prompts_per_step=4", "train.group_size=4", "train.micro_batch_size=16",
    "train.optim.lr=1e-3", "eval.enabled=false", "observe.report=false",
]


def parity_reward(text: str, example) -> Score:
    """Splits most groups, so every step has a gradient (a tiny random model is never right)."""
    return Score(value=float(len(text) % 2 == 1), correct=len(text) % 2 == 1)


@pytest.mark.slow
def test_trainer_runs_two_steps_with_muon_and_specgd(tmp_path, monkeypatch):
    from rlvr_lab.train.loop import Trainer

    monkeypatch.setattr("rlvr_lab.train.environment.task_rubric", lambda verifier, format_weight: parity_reward)
    start, final = None, {}
    for name in ("adamw", "muon", "specgd"):
        cfg = load_config(CONFIGS / "demo.yaml", presets=["grpo"],
                          overrides=FAST + [f"run.output_dir={tmp_path}", f"run.name={name}", f"train.optim.name={name}"])
        trainer = Trainer(cfg)
        trainer.setup()
        weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        assert start is None or all(torch.equal(weights[n], start[n]) for n in start)  # same seed, same start
        start = weights
        trainer.run()
        final[name] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    hidden = "model.layers.0.mlp.down_proj.weight"
    for name in ("muon", "specgd"):
        moved = (final[name][hidden] - start[hidden]).norm()
        assert moved > 0, f"{name}: the hidden matrix did not move"
        assert not torch.allclose(final[name][hidden], final["adamw"][hidden]), f"{name} stepped like AdamW"
        assert not torch.equal(final[name]["model.embed_tokens.weight"], start["model.embed_tokens.weight"])
        # the spectral step is scaled to an entry RMS of 0.2, AdamW's typical one (arXiv 2502.16982), so one lr
        # serves both; AdamW's first steps are sign-like (RMS about 1), so here the spectral ones are smaller
        ratio = moved / (final["adamw"][hidden] - start[hidden]).norm()
        assert 0.05 < ratio < 2, f"{name}: update {ratio:.3g} x AdamW's"
    assert not torch.allclose(final["muon"][hidden], final["specgd"][hidden])
    assert math.isfinite(float(final["muon"][hidden].sum()))
