"""Training-dynamics diagnostics: per-step signals and the phase detector (imports torch, numpy, stdlib only)."""

from rlvr_lab.diagnostics.phases import (
    ACTIONS,
    ALERT_LABELS,
    Action,
    PhaseConfig,
    PhaseDetector,
    PhaseReport,
    label_series,
)
from rlvr_lab.diagnostics.signals import (
    DEFAULT_LOW_PROB_THRESHOLD,
    entropy_summary,
    kl_to_reference,
    likelihood_displacement,
    low_probability_tokens,
    probe_drift,
    response_likelihood,
)

__all__ = [
    "ACTIONS",
    "ALERT_LABELS",
    "Action",
    "DEFAULT_LOW_PROB_THRESHOLD",
    "PhaseConfig",
    "PhaseDetector",
    "PhaseReport",
    "entropy_summary",
    "kl_to_reference",
    "label_series",
    "likelihood_displacement",
    "low_probability_tokens",
    "probe_drift",
    "response_likelihood",
]
