"""Evaluation: unbiased pass@k, greedy accuracy, evaluation runs."""

from rlvr_lab.eval.passk import mean_pass_at_k, paired_difference, pass_at_k, standard_error

__all__ = ["mean_pass_at_k", "paired_difference", "pass_at_k", "standard_error"]
