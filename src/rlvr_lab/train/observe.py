"""The training-dynamics observatory inside the trainer: signals each step and the phase detector.

Cheap signals come from tensors the step already has (old-policy log-probs and entropy). The
likelihood-displacement measurement needs the batch re-scored after the update, one extra forward
pass, so it runs every ``observe.lld_every`` steps. The phase detector reads the step records and
reports a label; on entering a decay or collapse phase the trainer warns, saves a checkpoint or stops,
as configured.
"""

from __future__ import annotations

from rlvr_lab.config import ObserveConfig
from rlvr_lab.diagnostics import (
    ALERT_LABELS,
    PhaseConfig,
    PhaseDetector,
    PhaseReport,
    entropy_summary,
    likelihood_displacement,
    low_probability_tokens,
)
from rlvr_lab.types import Batch


class Observer:
    def __init__(self, cfg: ObserveConfig):
        self.cfg = cfg
        actions = {label: cfg.on_alert for label in ALERT_LABELS}
        self.detector = PhaseDetector(PhaseConfig(actions=actions)) if cfg.phase_detector else None

    def before_update(self, batch: Batch) -> dict[str, float]:
        """Signals of the rollout batch under the behaviour policy (no extra compute)."""
        out: dict[str, float] = {}
        entropy = batch.extras.get("old_entropy")
        if entropy is not None:
            out.update(entropy_summary(entropy, batch.loss_mask))
        if batch.old_logprobs is not None:
            out.update(low_probability_tokens(batch.old_logprobs, batch.loss_mask, threshold=self.cfg.low_prob_threshold))
        return out

    def wants_displacement(self, step: int) -> bool:
        return self.cfg.lld_every > 0 and step % self.cfg.lld_every == 0

    def displacement(self, batch: Batch, new_logprobs) -> dict[str, float]:
        """Likelihood of correct/incorrect responses and ±advantage tokens before vs after the update."""
        correct = batch.extras.get("correct")
        if correct is None:
            correct = batch.rewards > 0
        return likelihood_displacement(batch.old_logprobs, new_logprobs, batch.loss_mask, correct, batch.advantages)

    def phase(self, step: int, record: dict[str, float]) -> PhaseReport | None:
        return None if self.detector is None else self.detector.update(step, record)
