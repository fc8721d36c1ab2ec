"""Held-out evaluation: greedy accuracy and unbiased pass@k from n samples per prompt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rlvr_lab.eval.passk import pass_at_k, standard_error
from rlvr_lab.rollout.sampling import SamplingParams

PER_PROMPT = "eval/per_prompt"
"""Key of an evaluation result's per-prompt values: ``{"eval/pass@1": [one value per prompt], ...}``. The
only non-float entry of the result; metric sinks other than ``metrics.jsonl`` keep floats only and skip it."""


def _correct(score) -> bool:
    return bool(score.correct) if score.correct is not None else score.value > 0


def evaluate(
    engine,
    env,
    examples: Sequence[Mapping[str, Any]],
    *,
    samples: int,
    ks: Sequence[int],
    temperature: float,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    greedy: bool = True,
    seed: int = 0,
    max_batch: int = 256,
) -> dict[str, Any]:
    """Accuracy of ``engine`` on ``examples``.

    Returns ``eval/greedy_acc``, ``eval/pass@k`` for each k (unbiased, arXiv 2107.03374), their
    standard errors over prompts (``..._se``), ``eval/n_prompts`` and ``eval/samples``, all floats; and
    under :data:`PER_PROMPT`, ``eval/greedy_acc`` and each ``eval/pass@k`` again as one value per prompt in
    the order of ``examples``, which a paired before/after difference needs
    (:func:`~rlvr_lab.eval.passk.paired_difference`).
    """
    prompts = engine.encode([env.render(ex) for ex in examples])
    out: dict[str, Any] = {"eval/n_prompts": float(len(examples)), "eval/samples": float(samples)}
    per_prompt: dict[str, list[float]] = {}
    if greedy:
        params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop_strings=tuple(stop_strings))
        hits: list[float] = []
        for lo in range(0, len(prompts), max_batch):
            gen = env.generate(engine, prompts[lo : lo + max_batch], params, seed=seed)
            hits += [float(_correct(s)) for s in env.score(gen.texts, examples[lo : lo + max_batch])]
        out["eval/greedy_acc"] = sum(hits) / len(hits)
        out["eval/greedy_acc_se"] = standard_error(hits)
        per_prompt["eval/greedy_acc"] = hits
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, stop_strings=tuple(stop_strings))
    per_batch = max(1, max_batch // samples)
    counts: list[int] = []
    for lo in range(0, len(prompts), per_batch):
        chunk = prompts[lo : lo + per_batch]
        exs = examples[lo : lo + per_batch]
        gen = env.generate(engine, [p for p in chunk for _ in range(samples)], params, seed=seed + 1 + lo)
        scores = env.score(gen.texts, [ex for ex in exs for _ in range(samples)])
        ok = torch.tensor([_correct(s) for s in scores]).view(len(chunk), samples)
        counts += ok.sum(-1).tolist()
    for k in ks:
        vals = [pass_at_k(samples, c, k) for c in counts]
        out[f"eval/pass@{k}"] = sum(vals) / len(vals)
        out[f"eval/pass@{k}_se"] = standard_error(vals)
        per_prompt[f"eval/pass@{k}"] = vals
    out[PER_PROMPT] = per_prompt
    return out
