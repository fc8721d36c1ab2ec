"""Best-of-n solution selection: GenSelect knockout tournaments, LLM-as-a-judge, and their hybrid.

arXiv 2511.13027 (Mahdavi et al., "Scaling Generative Verifiers for Natural Language Mathematical Proof
Verification and Selection"). The model calls are injected callables, so everything here runs and is
tested without a model: ``compare_fn(group) -> reply`` for GenSelect and ``judge_fn(candidate_id,
sample) -> reply`` for the judge, where a reply is a ``str`` or an object with ``.text`` (and
``.tokens``). :mod:`~rlvr_lab.eval.selection.templates` builds such callables from prompt templates
and a ``generate(prompt, seed)`` function; :mod:`~rlvr_lab.eval.selection.simulate` builds them from
latent labels, for checks on a CPU.

Imports only the standard library.
"""

from rlvr_lab.eval.selection.hybrid import ORDERS, HybridResult, hybrid_select
from rlvr_lab.eval.selection.judge import NO_VERDICT, JudgeRecord, judge_score, judge_solution, yes_rate
from rlvr_lab.eval.selection.metrics import (
    Estimate,
    JudgeQuality,
    bon_accuracy,
    judge_quality,
    majority_vote_accuracy,
    mean_estimate,
    oracle_accuracy,
    proportion,
    random_choice_accuracy,
    selection_accuracy,
    wilson_interval,
)
from rlvr_lab.eval.selection.parse import final_part, parse_best_solution, parse_judgement
from rlvr_lab.eval.selection.replies import Reply, Usage, read_reply
from rlvr_lab.eval.selection.simulate import (
    SimulatedProblem,
    noisy_judge,
    noisy_selector,
    sample_correctness,
    simulate_problem,
)
from rlvr_lab.eval.selection.templates import (
    GENSELECT_TEMPLATE,
    JUDGE_TEMPLATE,
    TEMPLATES,
    format_candidates,
    genselect_prompt,
    judge_prompt,
    load_template,
    prompt_compare_fn,
    prompt_judge_fn,
)
from rlvr_lab.eval.selection.tournament import Game, TournamentLog, knockout_select

__all__ = [
    "GENSELECT_TEMPLATE",
    "JUDGE_TEMPLATE",
    "NO_VERDICT",
    "ORDERS",
    "TEMPLATES",
    "Estimate",
    "Game",
    "HybridResult",
    "JudgeQuality",
    "JudgeRecord",
    "Reply",
    "SimulatedProblem",
    "TournamentLog",
    "Usage",
    "bon_accuracy",
    "final_part",
    "format_candidates",
    "genselect_prompt",
    "hybrid_select",
    "judge_prompt",
    "judge_quality",
    "judge_score",
    "judge_solution",
    "knockout_select",
    "load_template",
    "majority_vote_accuracy",
    "mean_estimate",
    "noisy_judge",
    "noisy_selector",
    "oracle_accuracy",
    "parse_best_solution",
    "parse_judgement",
    "prompt_compare_fn",
    "prompt_judge_fn",
    "proportion",
    "random_choice_accuracy",
    "read_reply",
    "sample_correctness",
    "selection_accuracy",
    "simulate_problem",
    "wilson_interval",
    "yes_rate",
]
