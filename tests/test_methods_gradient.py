"""Trainer-level checks that no preset is a silent no-op.

For every packaged preset, the trainer's own stages (rollout, reward shaping, dynamic sampling,
old-policy pass, advantages, token modifiers, row filters) build one batch from the same seeded model,
the policy then moves (a fixed, seeded perturbation of every weight: the off-policy step of a second
mini-batch), and the gradient of one mini-batch update is compared with plain GRPO's. Where a method
is, by design, equal to something simpler in some regime, a test says which: the components that act
only off-policy give exactly the gradient of their neutralised version when the policy has not moved,
and a different one once it has.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlvr_lab.config import load_config
from rlvr_lab.presets import preset_names
from rlvr_lab.train.loop import Trainer
from rlvr_lab.train.methods import FixedSchedule
from rlvr_lab.train.step import minibatch_update
from rlvr_lab.types import Score

torch.set_num_threads(1)
DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
SETUP = [
    "run.threads=1", "sft.steps=30", "sft.optim.lr=3e-3",  # a warm-started model is not uniform "eval.enabled=false", "observe.probe_prompts=0", "observe.report=false",
    "observe.tensorboard=false", "observe.lld_every=0", "task.name=chain_sum",
    "task.config={min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}", "task.train_size=400",
    "task.eval_size=8", "train.prompts_per_step=8", "train.group_size=8", "train.micro_batch_size=64",
    "rollout.max_new_tokens=16", "train.allow_inert_methods=true",
    "model.tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, intermediate_size: 64, "
    "max_position_embeddings: 160}",
]
# Relative L2 distance from GRPO's gradient that counts as "a different update". Two runs of one
# config give identical gradients (distance 0), so anything above float noise is the method's doing;
# 1e-3 asks for a visible change, not rounding.
MARGIN = 1e-3
PERTURBATION = 0.3  # the off-policy step: every weight moves by 30% of its tensor's std, seeded

# Presets whose RL gradient is GRPO's by design, and why.
SAME_AS_GRPO = {
    "grpo": "the baseline itself",
    "div_prec_precision": "a warm-start loss only (tests/test_obj_div_prec.py checks its gradient)",
    "div_prec_tail": "a warm-start loss only (tests/test_obj_div_prec.py checks its gradient)",
    "llds_ma": "needs tool-use rollouts (answer span, search counts); tests/test_search_trainer.py runs it",
}
# Components that act only off-policy, and the override that neutralises them.
NEUTRALISED = {
    "dapo": "algorithm.policy_loss.params.clip_high=0.2",  # clip-higher back to the symmetric clip
    # Lp-Reg's 1.0/9.0 clip is almost off by design (ratios above 2 are rare); the symmetric 0.2 clip shows
    # that its clip range, whatever it is, only matters once the policy has moved
    "lp_reg": "algorithm.policy_loss.params={clip_low: 0.2, clip_high: 0.2}",
    "spear": "algorithm.policy_loss.params.clip_high=0.2",
    "gspo": "algorithm.policy_loss.params={clip_low: 10.0, clip_high: 10.0}",  # a clip that never binds
    "kl_cov": "algorithm.token_overrides=[]",
    "hapo": "algorithm.policy_loss.params.clip_alpha=0.0",  # the adaptive clip and its neutral zone
    "llds": "algorithm.aux_losses=[]",
}


def reward_by_hash(text: str, example) -> Score:
    """About half the responses of a random tiny model are 'correct', so most groups are mixed."""
    ok = sum(map(ord, text)) % 2 == 1
    return Score(value=float(ok), correct=ok)


@pytest.fixture
def mixed_rewards(monkeypatch):
    monkeypatch.setattr("rlvr_lab.train.environment.task_rubric", lambda verifier, format_weight: reward_by_hash)


def update_gradient(tmp_path: Path, preset: str | None, *extra: str, off_policy: bool) -> tuple[torch.Tensor, dict]:
    """The flat gradient of one mini-batch update on the trainer's own step-1 batch, and its metrics."""
    cfg = load_config(DEMO, presets=[preset] if preset else [],
                      overrides=SETUP + [f"run.output_dir={tmp_path}", "run.overwrite=true", *extra])
    trainer = Trainer(cfg)
    trainer.setup()
    trainer.warm_start()
    trainer.freeze_reference()
    batch = trainer.prepare(trainer.collect(1).batch)
    batch, _ = trainer.advantages(batch, 1)
    model = trainer.model
    if off_policy:
        gen = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(PERTURBATION * p.std() * torch.randn(p.shape, generator=gen))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    grads: list[torch.Tensor] = []
    step = opt.step
    opt.step = lambda *a, **k: (grads.append(torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])), step())[1]
    metrics = minibatch_update(model, opt, FixedSchedule(), batch, trainer.spec, micro_batch_size=64, max_grad_norm=None,
                               context=trainer.methods.context(0))
    (grad,) = grads
    return grad, metrics


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def grpo_gradient(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr("rlvr_lab.train.environment.task_rubric", lambda verifier, format_weight: reward_by_hash)
    try:
        grad, _ = update_gradient(tmp_path_factory.mktemp("grpo"), "grpo", off_policy=True)
    finally:
        mp.undo()
    return grad


def test_one_config_gives_one_gradient(tmp_path, mixed_rewards, grpo_gradient):
    again, _ = update_gradient(tmp_path, "grpo", off_policy=True)
    assert distance(again, grpo_gradient) == 0.0  # so any distance below is the method's doing
    assert grpo_gradient.norm() > 0


@pytest.mark.parametrize("preset", [p for p in preset_names() if p not in SAME_AS_GRPO])
def test_every_preset_changes_the_update(tmp_path, mixed_rewards, grpo_gradient, preset):
    grad, _ = update_gradient(tmp_path, preset, off_policy=True)
    d = distance(grad, grpo_gradient)
    print(f"{preset}: relative distance from GRPO's gradient {d:.3g}")
    assert d > MARGIN, f"{preset} gives GRPO's gradient (distance {d:.2g})"


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(NEUTRALISED))
def test_off_policy_components_act_only_once_the_policy_moved(tmp_path, mixed_rewards, preset):
    neutral = NEUTRALISED[preset]
    on, _ = update_gradient(tmp_path / "a", preset, off_policy=False)
    on_neutral, _ = update_gradient(tmp_path / "b", preset, neutral, off_policy=False)
    off, _ = update_gradient(tmp_path / "c", preset, off_policy=True)
    off_neutral, _ = update_gradient(tmp_path / "d", preset, neutral, off_policy=True)
    assert distance(on, on_neutral) < 1e-6, "the component acts on-policy: its off_policy declaration is wrong"
    assert distance(off, off_neutral) > MARGIN, f"{preset}'s component does nothing even off-policy"


# The component that makes each token-level preset what it is, removed: the update must change.
# preset -> (override that removes it, settings for both runs, metric counting the tokens it acted on)
ABLATED = {
    "clip_cov": ("algorithm.token_overrides=[]", [], "clip_cov/num_zeroed"),
    # Lp-Reg regularises a selected token only when the min-p proxy keeps it; at the recipe's rho=0.01 the
    # two lowest-probability negative tokens of this batch are both filtered out (num_regularized 0, the
    # start of the run warns), so the test selects the lowest 10%.
    "lp_reg": ("algorithm.token_overrides=[]", ["algorithm.token_overrides=[{name: lp_reg, params: {rho_neg: 0.1}}]"],
               "lp_reg/num_regularized"),
    "grpo_n": ("algorithm.token_modifiers=[]", [], None),
    "nthr": ("algorithm.token_modifiers=[]", [], None),
    "thr": ("algorithm.token_modifiers=[]", [], None),
    "spear": ("algorithm.spear.rollout_filter=null", [], None),  # no tool calls here; replay runs after the update
}


@pytest.mark.parametrize("preset", sorted(ABLATED))
def test_each_token_level_component_changes_its_presets_update(tmp_path, mixed_rewards, preset):
    ablate, settings, acted = ABLATED[preset]
    with_it, metrics = update_gradient(tmp_path / "a", preset, *settings, off_policy=True)
    without, _ = update_gradient(tmp_path / "b", preset, *settings, ablate, off_policy=True)
    d = distance(with_it, without)
    print(f"{preset}: relative distance from the preset without its component {d:.3g}")
    assert d > MARGIN, f"{preset}'s own component does nothing on this batch"
    if acted:
        assert metrics[acted] > 0


def test_every_off_policy_preset_is_checked():
    from rlvr_lab.config import inert_methods

    needs = {p for p in preset_names() if p not in SAME_AS_GRPO and inert_methods(
        load_config(DEMO, presets=[p], overrides=["train.minibatches=1", "train.allow_inert_methods=true"]))}
    assert needs == set(NEUTRALISED)
