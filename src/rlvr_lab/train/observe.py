"""The training-dynamics observatory inside the trainer: signals each step, probes, sinks, phases.

Cheap signals come from tensors the step already has (old-policy log-probs, entropy, reference
log-probs, gradients). The likelihood-displacement measurement needs the batch re-scored after the
update, one extra forward pass, so it runs every ``observe.lld_every`` steps; the fixed probe set is
re-scored every ``observe.probe_every`` steps. The phase detector reads the step records and reports a
label; on entering a decay or collapse phase the trainer warns, saves a checkpoint or stops, as
configured. Records go to ``metrics.jsonl`` and the configured mirrors (TensorBoard, W&B, MLflow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlvr_lab.config import Config, ObserveConfig
from rlvr_lab.diagnostics import (
    ALERT_LABELS,
    PhaseConfig,
    PhaseDetector,
    PhaseReport,
    entropy_summary,
    kl_to_reference,
    likelihood_displacement,
    low_probability_tokens,
    probe_drift,
    response_likelihood,
)
from rlvr_lab.diagnostics.grads import GradGroups
from rlvr_lab.diagnostics.probes import ProbeSet
from rlvr_lab.diagnostics.sinks import JsonlSink, MlflowSink, Sinks, TensorBoardSink, WandbSink, require
from rlvr_lab.train.batching import supervised_batch
from rlvr_lab.types import Batch


def build_sinks(cfg: Config, run_dir: Path, *, resume_step: int | None = None) -> Sinks:
    """``metrics.jsonl`` first (the run's record), then the enabled mirrors. ``resume_step``: the first RL
    step of a resumed run (TensorBoard drops the events it had from there on)."""
    obs = cfg.observe
    if obs.wandb.enabled:
        require("wandb", "wandb")
    if obs.mlflow.enabled:
        require("mlflow", "mlflow")
    sinks: list[Any] = [JsonlSink(run_dir / "metrics.jsonl")]
    if obs.tensorboard:
        require("tensorboard", "dev")
        sinks.append(TensorBoardSink(run_dir / "tensorboard", purge_step=resume_step))
    if obs.wandb.enabled:
        sinks.append(WandbSink(project=obs.wandb.project, mode=obs.wandb.mode, dir=run_dir, name=cfg.run.name,
                               entity=obs.wandb.entity, config=cfg.model_dump(mode="json")))
    if obs.mlflow.enabled:
        uri = obs.mlflow.tracking_uri or (run_dir / "mlruns").resolve().as_uri()
        params = {"model": cfg.model.source, "task": cfg.task.name, "advantage": cfg.algorithm.advantage.name,
                  "policy_loss": cfg.algorithm.policy_loss.name, "lr": str(cfg.train.optim.lr)}
        sinks.append(MlflowSink(tracking_uri=uri, experiment=obs.mlflow.experiment, run_name=cfg.run.name, params=params))
    return Sinks(sinks)


def _rows(values: list[list], width: int, dtype: torch.dtype) -> torch.Tensor:
    out = torch.zeros(len(values), width, dtype=dtype)
    for i, row in enumerate(values):
        out[i, : len(row)] = torch.as_tensor(row, dtype=dtype)
    return out


def probe_batch(probes: ProbeSet, pad_id: int) -> Batch:
    """The probe responses as a batch; ``ref_logprobs`` set when the probe set has them."""
    batch = supervised_batch(probes.prompt_ids, probes.response_ids, pad_id)
    width = batch.loss_mask.shape[1]
    batch.loss_mask = _rows(probes.loss_mask, width, torch.bool)
    batch.extras["correct"] = torch.tensor(probes.correct, dtype=torch.bool)
    if probes.ref_logprobs is not None:
        batch.ref_logprobs = _rows(probes.ref_logprobs, width, torch.float32)
    return batch


class Observer:
    def __init__(self, cfg: ObserveConfig, model: torch.nn.Module | None = None):
        self.cfg = cfg
        actions = {label: cfg.on_alert for label in ALERT_LABELS}
        self.detector = PhaseDetector(PhaseConfig(actions=actions)) if cfg.phase_detector else None
        self.grad_groups = GradGroups(model, cfg.grad_groups) if model is not None and cfg.grad_groups else None
        self.probes: ProbeSet | None = None
        self._probe_batch: Batch | None = None

    def before_update(self, batch: Batch) -> dict[str, float]:
        """Signals of the rollout batch under the behaviour policy (no extra compute)."""
        out: dict[str, float] = {}
        entropy = batch.extras.get("old_entropy")
        if entropy is not None:
            out.update(entropy_summary(entropy, batch.loss_mask))
        if batch.old_logprobs is not None:
            out.update(low_probability_tokens(batch.old_logprobs, batch.loss_mask, threshold=self.cfg.low_prob_threshold))
            out.update(response_likelihood(batch.old_logprobs, batch.loss_mask, self._correct(batch)))
            if batch.ref_logprobs is not None:
                out.update(kl_to_reference(batch.old_logprobs, batch.ref_logprobs, batch.loss_mask))
        return out

    @staticmethod
    def _correct(batch: Batch) -> torch.Tensor:
        correct = batch.extras.get("correct")
        return batch.rewards > 0 if correct is None else correct

    def wants_displacement(self, step: int) -> bool:
        return self.cfg.lld_every > 0 and step % self.cfg.lld_every == 0

    def displacement(self, batch: Batch, new_logprobs) -> dict[str, float]:
        """Likelihood of correct/incorrect responses and ±advantage tokens before vs after the update."""
        return likelihood_displacement(batch.old_logprobs, new_logprobs, batch.loss_mask, self._correct(batch),
                                       batch.advantages)

    # ---- the fixed probe set ------------------------------------------------------------------

    def set_probes(self, probes: ProbeSet, ref_logprobs: torch.Tensor, pad_id: int) -> ProbeSet:
        """Adopt ``probes`` with this run's reference log-probs ((B, T), from :func:`probe_batch`)."""
        probes.ref_logprobs = [row[: len(ids)].tolist() for row, ids in zip(ref_logprobs.cpu(), probes.response_ids)]
        self.probes = probes
        self._probe_batch = probe_batch(probes, pad_id)
        return probes

    def state_dict(self) -> dict[str, Any]:
        """The phase detector (its window and debounce counters) and the probe set with its reference
        log-probs: what an exact resume restores."""
        return {"detector": self.detector, "probes": self.probes}

    def load_state_dict(self, state: dict[str, Any], pad_id: int) -> None:
        self.detector, self.probes = state["detector"], state["probes"]
        self._probe_batch = None if self.probes is None else probe_batch(self.probes, pad_id)

    @property
    def probe_inputs(self) -> Batch | None:
        return self._probe_batch

    def wants_probe(self, step: int) -> bool:
        return self._probe_batch is not None and step % self.cfg.probe_every == 0

    def probe(self, logprobs: torch.Tensor) -> dict[str, float]:
        """Probe signals from the probe responses' (B, T) log-probs under the current policy."""
        b = self._probe_batch
        return probe_drift(b.ref_logprobs, logprobs.cpu(), b.loss_mask, b.extras["correct"])

    def phase(self, step: int, record: dict[str, float]) -> PhaseReport | None:
        """Label the step from its whole record; None when the detector is off.

        The detector reads the per-token likelihood of correct responses (``lld/correct_logp_per_token``, from
        :meth:`before_update`), ``reward/mean``, ``policy/grad_norm`` and ``policy/entropy``, and on probe steps
        ``probe/correct_logp_per_token`` (evidence only); the keys are fields of :class:`PhaseConfig`.
        """
        return None if self.detector is None else self.detector.update(step, record)
