"""SPEAR (spec section 7.2-7.3): schedules, replay recalibration and the trajectory buffer.

Hand-computed values are the spec's table rows 20-21 (ref_examples_output.txt, "SPEAR schedules").
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from rlvr_lab.config import load_config
from rlvr_lab.objectives.advantages import broadcast_to_tokens, group_advantages
from rlvr_lab.objectives.spear import (
    recalibrated_advantages,
    replay_coef,
    reward_baseline,
    toolcall_bonus,
    toolcall_weight,
)
from rlvr_lab.train.replay import TrajectoryBuffer
from rlvr_lab.types import Batch

torch.set_num_threads(1)
T_ = torch.tensor
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ---- 7.2 tool-call bonus and 7.3 replay coefficient ----------------------------------------------


@pytest.mark.parametrize(
    "step,bonus,coef",
    [(0, 0.3, 0.0), (50, 0.256066, 0.5), (100, 0.15, 1.0), (150, 0.043934, 1.0), (200, 0.0, 1.0), (250, 0.0, 1.0)],
)
def test_schedules_match_reference_numbers(step, bonus, coef):
    assert close(toolcall_bonus(T_([3]), step), [bonus])
    assert close(replay_coef(step), coef)


def test_toolcall_bonus_cap_kinds_and_posneg():
    calls = T_([0, 3, 15])
    assert close(toolcall_bonus(calls, 0), [0.0, 0.3, 1.0])  # min(1, 0.1 n)
    assert close(toolcall_bonus(calls, 500, kind="constant"), [0.0, 0.3, 1.0])
    assert close(toolcall_bonus(calls, 0, kind="none"), [0.0, 0.0, 0.0])
    assert close(toolcall_bonus(calls, 100, per_call=0.2, cap=0.5, schedule_steps=400), [0.0, 0.5 * 0.853553, 0.5 * 0.853553])
    # posneg: failed responses get the count bonus, successful ones 1[n > 0]
    scores = T_([1.0, 0.0, 1.0])
    assert close(toolcall_bonus(calls, 0, scores, posneg=True), [0.0, 0.3, 1.0])
    assert close(toolcall_bonus(T_([2, 2]), 50, T_([1.0, -1.0]), posneg=True), [0.853553, 0.2 * 0.853553])
    with pytest.raises(ValueError, match="task_scores"):
        toolcall_bonus(calls, 0, posneg=True)
    with pytest.raises(ValueError, match="cosine"):
        toolcall_weight(0, kind="linear")


def test_replay_coef_scale_and_no_warmup():
    assert close(replay_coef(50, coef=0.5), 0.25)
    assert replay_coef(0, warmup_steps=0) == 1.0


# ---- 7.3 recalibration -------------------------------------------------------------------------


def test_recalibration_spec_example():
    history = T_([0.2, 0.4, 0.6, 0.5, 0.7, 0.9])  # two steps of group-mean rewards
    adv, keep, b = recalibrated_advantages(T_([1.0, 0.5, 0.55]), history)
    assert close(b, 0.55)
    assert close(adv, [0.45, -0.05, 0.0])
    assert keep.tolist() == [True, False, True]  # A >= 0 kept (spec, official code)
    _, keep_strict, _ = recalibrated_advantages(T_([1.0, 0.5, 0.55]), history, keep_zero=False)
    assert keep_strict.tolist() == [True, False, False]


@pytest.mark.parametrize("q", [0.0, 17.0, 50.0, 95.0, 100.0])
def test_baseline_percentile_matches_numpy(q):
    x = torch.rand(37, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert close(reward_baseline(x, percentile=q), np.percentile(x.numpy(), q), 1e-12)
    with pytest.raises(ValueError, match="empty"):
        reward_baseline(torch.zeros(0))


# ---- the trajectory buffer ---------------------------------------------------------------------


def make_batch(rewards, group_size, *, seed=0, prompt_lens=None, resp_lens=None):
    """B rows, varied prompt/response lengths, Dr.GRPO advantages, random old log-probs."""
    g = torch.Generator().manual_seed(seed)
    r = T_(rewards, dtype=torch.float32)
    B = r.numel()
    prompt_lens = prompt_lens or [int(torch.randint(1, 4, (1,), generator=g)) for _ in range(B)]
    resp_lens = resp_lens or [int(torch.randint(1, 5, (1,), generator=g)) for _ in range(B)]
    lp, T = max(prompt_lens), max(resp_lens)
    ids = torch.zeros(B, lp + T, dtype=torch.long)
    attn = torch.zeros(B, lp + T, dtype=torch.bool)
    for i in range(B):
        ids[i, lp - prompt_lens[i] : lp] = torch.randint(3, 50, (prompt_lens[i],), generator=g)
        ids[i, lp : lp + resp_lens[i]] = torch.randint(3, 50, (resp_lens[i],), generator=g)
        attn[i, lp - prompt_lens[i] : lp + resp_lens[i]] = True
    loss_mask = attn[:, lp:].clone()
    if T > 2:
        loss_mask[:, 1] = False  # a forced (tool-output) token inside the response
    adv = broadcast_to_tokens(group_advantages(r.view(-1, group_size), std_normalize=False).view(-1), loss_mask)
    return Batch(
        input_ids=ids, attention_mask=attn, response_start=lp, loss_mask=loss_mask, rewards=r,
        group_ids=torch.arange(B // group_size).repeat_interleave(group_size),
        advantages=adv, old_logprobs=-torch.rand(B, T, generator=g) * loss_mask,
        extras={"correct": r > 0.5, "tool_calls": torch.arange(B), "old_entropy": torch.rand(B, T, generator=g)},
    )


def test_add_keeps_only_positive_advantage_rows_unpadded_on_cpu():
    buf = TrajectoryBuffer(buffer_size=4, pad_token_id=0)
    batch = make_batch([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0], 4)  # positive rows: 0, 4, 5, 7
    m = buf.add(batch, step=3)
    assert m["spear/buffer_inserted"] == 4.0 and len(buf) == 4
    assert [t.reward for t in buf.trajectories] == [1.0, 1.0, 1.0, 1.0]
    t0 = buf.trajectories[0]
    lp = batch.response_start
    n = int(batch.attention_mask[0, lp:].sum())
    assert t0.prompt_ids.tolist() == batch.input_ids[0, :lp][batch.attention_mask[0, :lp]].tolist()
    assert t0.response_ids.tolist() == batch.input_ids[0, lp : lp + n].tolist()
    assert torch.equal(t0.old_logprobs, batch.old_logprobs[0, :n]) and t0.step == 3
    assert t0.prompt_ids.device.type == "cpu" and t0.old_logprobs.data_ptr() != batch.old_logprobs.data_ptr()
    assert t0.extras["tool_calls"].item() == 0 and t0.extras["old_entropy"].numel() == n
    assert close(buf.history, [0.25, 0.75])  # one group-mean reward per group


def test_capacity_evicts_oldest_first():
    buf = TrajectoryBuffer(buffer_size=2, trigger=1.5, capacity=4, tolerate_steps=100)
    for step, seed in ((1, 0), (2, 1), (3, 2)):  # 2 positive rows per step
        m = buf.add(make_batch([1.0, 0.0, 0.9, 0.0], 2, seed=seed), step=step)
    assert len(buf) == 4 and m["spear/buffer_evicted_capacity"] == 2.0
    assert [t.step for t in buf.trajectories] == [2, 2, 3, 3]
    with pytest.raises(ValueError, match="never triggers"):
        TrajectoryBuffer(buffer_size=2, trigger=1.5, capacity=3)
    assert TrajectoryBuffer(buffer_size=2048).capacity == 6144  # default 2 x ceil(1.5 x 2048)


def test_stale_entries_are_dropped_relative_to_the_newest():
    buf = TrajectoryBuffer(buffer_size=2, tolerate_steps=1, capacity=100)
    batch = make_batch([1.0, 0.0], 2)
    for step in (1, 2, 4):
        buf.add(batch, step=step)
    # before inserting step 4 the newest entry was step 2, so step 1 (2-1 <= 1) survived
    assert [t.step for t in buf.trajectories] == [1, 2, 4]
    m = buf.add(batch, step=5)  # newest entry 4: steps 1 and 2 are more than 1 step older
    assert m["spear/buffer_evicted_stale"] == 2.0
    assert [t.step for t in buf.trajectories] == [4, 5]
    assert buf.evict_stale(newest_step=7) == 2 and len(buf) == 0


def test_trigger_counts_only_trajectories_above_the_baseline():
    buf = TrajectoryBuffer(buffer_size=2, trigger=1.5, capacity=100, tolerate_steps=100)
    # every group: rewards (1, 0) -> mean 0.5, the baseline stays 0.5; the r=1 row is stored and counts
    for step in range(1, 4):
        buf.add(make_batch([1.0, 0.0], 2, seed=step), step=step)
        assert not buf.ready()  # 1, 2, 3 replayable: not > 1.5 x 2
    # a shaped reward 0.4 > its group mean 0.2 is stored, but is below the global baseline
    buf.add(make_batch([0.4, 0.0], 2), step=4)
    assert len(buf) == 4 and buf.replayable_count() == 3 and not buf.ready()
    buf.add(make_batch([1.0, 0.0], 2), step=5)
    assert buf.replayable_count() == 4 and buf.ready()


def recalibration_buffer():
    """History means {0.2, 0.4, 0.6} then {0.5, 0.7, 0.9} (b = 0.55); stored rewards .4, .5, 1, 1, 1, 1."""
    buf = TrajectoryBuffer(buffer_size=8, trigger=0.25, capacity=100, tolerate_steps=100)
    buf.add(make_batch([0.4, 0.0, 0.5, 0.3, 1.0, 0.2], 2, seed=1), step=1)
    buf.add(make_batch([1.0, 0.0, 1.0, 0.4, 1.0, 0.8], 2, seed=2), step=2)
    return buf


def test_sample_recalibrates_stored_rewards_and_resets():
    buf = recalibration_buffer()
    assert [t.reward for t in buf.trajectories] == pytest.approx([0.4, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert close(buf.baseline(), 0.55) and buf.ready()
    batch, m = buf.sample(torch.Generator().manual_seed(0))
    assert close(m["spear/replay_baseline"], 0.55)
    assert m["spear/replay_candidates"] == 6.0 and m["spear/replay_kept"] == 4.0 and m["spear/replay_size"] == 4.0
    # r = 1 gets A = 0.45 on its policy tokens (kept); r = 0.4, 0.5 get -0.15, -0.05 (dropped)
    assert torch.equal(batch.rewards, torch.ones(4))
    assert close(batch.advantages, 0.45 * batch.loss_mask.float())
    assert len(buf) == 0 and buf.num_replays == 1
    assert close(buf.baseline(), 0.55)  # the reward history survives the reset


def test_replay_batch_layout_roundtrips_the_stored_tensors():
    buf = recalibration_buffer()
    stored = buf.trajectories
    batch, _ = buf.sample(torch.Generator().manual_seed(0))
    lp = batch.response_start
    picked = [t for t in stored if t.reward == 1.0]
    for i, t in enumerate(picked):
        p, n = t.prompt_ids.numel(), t.response_ids.numel()
        assert batch.input_ids[i, lp - p : lp].tolist() == t.prompt_ids.tolist()  # left-padded prompt
        assert not batch.attention_mask[i, : lp - p].any()
        assert batch.input_ids[i, lp : lp + n].tolist() == t.response_ids.tolist()  # right-padded response
        assert torch.equal(batch.loss_mask[i, :n], t.loss_mask) and not batch.loss_mask[i, n:].any()
        assert torch.equal(batch.old_logprobs[i, :n], t.old_logprobs)  # stored behaviour log-probs
        assert batch.extras["tool_calls"][i] == t.extras["tool_calls"]
    assert batch.group_ids.tolist() == [0, 1, 2, 3]
    assert batch.extras["old_entropy"].shape == batch.loss_mask.shape


def test_sampling_is_deterministic_power_of_two_and_capped():
    def drawn(seed, **kw):
        buf = recalibration_buffer()
        buf.buffer_size = kw.get("buffer_size", buf.buffer_size)
        buf.add(make_batch([1.0, 0.2], 2, seed=9), step=3)  # a fifth replayable sample; b becomes 0.6
        batch, m = buf.sample(torch.Generator().manual_seed(seed))
        return batch, m

    a, m = drawn(0)
    b, _ = drawn(0)
    assert m["spear/replay_kept"] == 5.0 and m["spear/replay_size"] == 4.0  # largest power of two <= 5
    assert torch.equal(a.input_ids, b.input_ids)
    seen = {tuple(drawn(s)[0].input_ids.flatten().tolist()) for s in range(6)}
    assert len(seen) > 1  # the generator decides which 4 of the 5
    capped, m2 = drawn(0, buffer_size=2)
    assert len(capped) == 2 and m2["spear/replay_size"] == 2.0


def test_too_few_samples_give_no_batch_but_still_reset():
    buf = TrajectoryBuffer(buffer_size=4, capacity=100)
    buf.add(make_batch([1.0, 0.0], 2), step=1)  # one kept sample -> power of two 0
    batch, m = buf.sample(torch.Generator().manual_seed(0))
    assert batch is None and m["spear/replay_size"] == 0.0 and len(buf) == 0
    buf = recalibration_buffer()
    batch, _ = buf.sample(torch.Generator().manual_seed(0), min_size=8)  # e.g. 8 data-parallel ranks
    assert batch is None and len(buf) == 0


def test_advantage_weight_mode_scales_the_stored_advantages():
    buf = TrajectoryBuffer(buffer_size=4, capacity=100, advantage_weight=0.1)
    batch = make_batch([1.0, 0.0, 0.7, 0.1], 2)  # Dr.GRPO: +0.5 and +0.3 on the kept rows
    buf.add(batch, step=1)
    assert buf.replayable_count() == 2
    replay, m = buf.sample(torch.Generator().manual_seed(0))
    assert "spear/replay_baseline" not in m
    assert close(replay.advantages, T_([[0.05], [0.03]]) * replay.loss_mask)
    with pytest.raises(ValueError, match="advantage_weight"):
        TrajectoryBuffer(advantage_weight=-1.0)


def test_baseline_history_is_bounded():
    buf = TrajectoryBuffer(buffer_size=2, capacity=100, baseline_size=3)
    buf.add(make_batch([0.0, 0.0, 1.0, 1.0], 2), step=1)
    buf.add(make_batch([0.2, 0.4, 0.6, 0.8], 2), step=2)
    assert close(buf.history, [1.0, 0.3, 0.7])


def test_spear_preset_validates_with_the_legacy_aggregation():
    algo = load_config(CONFIGS / "demo.yaml", presets=["spear"]).algorithm
    assert algo.advantage.name == "dr_grpo" and algo.aggregation == "seq-mean-token-sum-norm"
    assert algo.legacy_no_batch_norm is True and algo.kl.coef == 0.0 and algo.entropy_coef == 0.001
    assert (algo.policy_loss.params["clip_low"], algo.policy_loss.params["clip_high"]) == (0.2, 0.28)
    assert algo.policy_loss.params["clip_ratio_c"] is None  # errata 3
