"""Attentiveness to answer choices (arXiv 2305.14596): probability mass on the choices, the surface-form
competition bound and PMI_DC (arXiv 2104.08315), measured on multiple-choice questions in three prompt formats.

``attentiveness`` is pure arithmetic on choice probabilities; ``scoring`` scores strings with a causal LM;
``templates`` builds the prompts; ``data`` loads question files and ships a small offline set; ``report``
runs a model and summarises. Importing this package does not load torch or transformers.
"""

from rlvr_lab.eval.mcq.attentiveness import (
    accuracy_bounds,
    first_occurrences,
    mean_interval,
    pmi_dc,
    pmi_dc_log,
    predict,
    prob_mass,
    sfc_resolved,
    top_two_gap,
    wilson_interval,
)
from rlvr_lab.eval.mcq.data import (
    MCQDataError,
    MCQuestion,
    build_offline_mcq,
    load_mcq,
    load_offline_mcq,
    write_mcq,
)
from rlvr_lab.eval.mcq.report import (
    AttentivenessResult,
    QuestionRecord,
    attentiveness_report,
    draw_demos,
    format_table,
    run_mcq,
)
from rlvr_lab.eval.mcq.scoring import ContinuationScore, score_continuations, split_continuation
from rlvr_lab.eval.mcq.templates import FORMATS, build_prompt, continuations, uncontextual_premise

__all__ = [
    "FORMATS",
    "AttentivenessResult",
    "ContinuationScore",
    "MCQDataError",
    "MCQuestion",
    "QuestionRecord",
    "accuracy_bounds",
    "attentiveness_report",
    "build_offline_mcq",
    "build_prompt",
    "continuations",
    "draw_demos",
    "first_occurrences",
    "format_table",
    "load_mcq",
    "load_offline_mcq",
    "mean_interval",
    "pmi_dc",
    "pmi_dc_log",
    "predict",
    "prob_mass",
    "run_mcq",
    "score_continuations",
    "sfc_resolved",
    "split_continuation",
    "top_two_gap",
    "uncontextual_premise",
    "wilson_interval",
    "write_mcq",
]
