"""LLDS: Lazy Likelihood Displacement Stabilisation (arXiv 2512.04220; spec section 2).

GRPO can lower the likelihood of the responses it should keep (correct ones, and untrained ones
with ``A = 0``): "lazy likelihood displacement". LLDS adds a one-sided penalty on the per-token
displacement ``Δ = old_logprobs - policy_logprobs`` (positive when the token lost likelihood) over
the preserving set, switched on only where a whole action (or response) lost likelihood:

    L = L_GRPO + λ · L_LLDS,   L_LLDS ∝ Σ gate · max(0, Δ)          (paper eq. 4; λ = 0.2)

The gate is computed from the detached displacement and used only as a 0/1 mask; the gradient
flows through ``policy_logprobs`` inside ``max(0, Δ)``, so minimising raises the likelihood of the
displaced tokens and leaves tokens whose likelihood rose untouched.

Prerequisite: ``Δ`` is identically 0 while the policy has not moved since ``old_logprobs`` were
computed (the first mini-batch of every rollout, and every mini-batch with one mini-batch and one
epoch). Use several mini-batches or epochs; the registry entry declares this, so config validation
refuses LLDS with one mini-batch and one epoch.
"""

from __future__ import annotations

import torch

from rlvr_lab.objectives.aggregate import masked_mean
from rlvr_lab.objectives.context import StepContext
from rlvr_lab.objectives.registry import AUX_LOSSES, Bool, Choice, Float

Metrics = dict[str, torch.Tensor]

LLDS_GATES = ("action", "response", "token")
LLDS_NORMS = ("code", "paper")
PRESERVE_RULES = ("adv>=0", "adv>0")
ANSWER_WEIGHTS = ("paper", "code_adaptive", "code_fixed")

# Keys the trainer may put in ``StepContext.extras`` (both optional, both whole-step/mini-batch values).
VALID_SEARCH_MEAN_KEY = "llds_valid_search_mean"  # float or 0-d tensor: mean valid searches V_s at this RL step
NUM_PRESERVING_KEY = "llds_num_preserving"  # float or 0-d tensor: |Y_pre| of the whole mini-batch (paper norm)


def action_ids_from_mask(loss_mask: torch.Tensor) -> torch.Tensor:
    """Number the maximal runs of ``loss_mask`` per row: (B, T) bool -> (B, T) long, 0 off the mask.

    In tool-use rollouts the observation tokens are off the mask, so each run is one action (turn);
    this is the spec's definition of ``action_id`` (section 0.2) and the official code's chunks.
    """
    m = loss_mask.long()  # (B, T)
    prev = torch.nn.functional.pad(m[:, :-1], (1, 0))  # (B, T) mask shifted right by one
    starts = m * (1 - prev)  # 1 where a run begins
    return torch.cumsum(starts, dim=1) * m


def preserving_mask(advantages: torch.Tensor, loss_mask: torch.Tensor, *, preserve: str = "adv>=0") -> torch.Tensor:
    """Tokens of the preserving set: (B, T) bool. ``adv>=0`` (spec, paper and code) or ``adv>0``."""
    if preserve == "adv>=0":
        pos = advantages >= 0
    elif preserve == "adv>0":
        pos = advantages > 0
    else:
        raise ValueError(f"unknown LLDS preserve rule {preserve!r}; allowed: {', '.join(PRESERVE_RULES)}")
    return pos & loss_mask.bool()


def llds_num_preserving(advantages: torch.Tensor, loss_mask: torch.Tensor, *, preserve: str = "adv>=0") -> torch.Tensor:
    """|Y_pre|: responses with at least one preserving token, as a 0-d float tensor.

    With ``norm="paper"`` under micro-batching, the trainer computes this on the whole mini-batch
    and passes it as ``ctx.extras["llds_num_preserving"]`` so the micro-batch losses add up.
    """
    return preserving_mask(advantages, loss_mask, preserve=preserve).any(dim=-1).float().sum()


def _unit_gate(
    delta: torch.Tensor, m: torch.Tensor, unit_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gate per gating unit (action or response): 1[Σ_{t in unit} Δ_t > 0], broadcast back to tokens.

    Vectorised form of the spec's A-gate (section 2.2): units are the distinct positive ids of
    ``unit_ids`` within a row; id 0 means "in no unit".

    Args:
        delta: (B, T) detached displacement ``old - policy``.
        m: (B, T) bool preserving tokens.
        unit_ids: (B, T) long unit id per token (only read where ``m``).
    Returns:
        token gate (B, T) bool (False off ``m``), per-row count of units (B,), per-row count of gated units (B,).
    """
    cid = unit_ids.long() * m.long()  # (B, T) 0 outside the preserving tokens
    width = int(cid.max()) + 1 if cid.numel() else 1
    sums = torch.zeros(cid.shape[0], width, dtype=delta.dtype, device=delta.device)
    sums.scatter_add_(1, cid, delta * m.to(delta.dtype))  # (B, K+1) displacement per unit
    present = torch.zeros_like(sums).scatter_add_(1, cid, m.to(delta.dtype)) > 0  # (B, K+1)
    present[:, 0] = False  # column 0 collects the tokens outside every unit
    gate = (sums > 0) & present  # (B, K+1)
    token_gate = gate.gather(1, cid) & m  # (B, T)
    return token_gate, present.sum(-1), gate.sum(-1)


def llds_answer_coef(
    valid_search_mean: torch.Tensor | float,
    *,
    lam: float,
    answer_weight: str = "paper",
    valid_search_target: float = 2.0,
    lam_ans: float = 0.2,
) -> torch.Tensor:
    """LLDS-MA coefficient on answer-span tokens (0-d tensor); other tokens get ``lam``.

    * ``paper``: ``λ · β_ans`` with ``β_ans = min(V_s / V_B, 1)``, ``V_B = valid_search_target = 2``
      (arXiv 2512.04220, eq. 5 and B.2.1): the answer span is regularised less while the policy
      makes few valid searches, ramping up linearly to the full weight.
    * ``code_adaptive``: ``min(λ_ans · max(V̄ - 1, 0), λ)`` (official code, adaptive mask weight).
    * ``code_fixed``: ``min(λ_ans, λ)`` (official code, ``MASK_WEIGHT = 0.2``).
    """
    v = torch.as_tensor(valid_search_mean, dtype=torch.float32)
    if answer_weight == "paper":
        if valid_search_target <= 0:
            raise ValueError(f"valid_search_target must be > 0, got {valid_search_target}")
        return lam * (v.clamp_min(0.0) / valid_search_target).clamp(max=1.0)
    if answer_weight == "code_adaptive":
        return (lam_ans * (v - 1.0).clamp_min(0.0)).clamp(max=lam)
    if answer_weight == "code_fixed":
        return torch.tensor(min(lam_ans, lam), dtype=torch.float32)
    raise ValueError(f"unknown LLDS answer_weight {answer_weight!r}; allowed: {', '.join(ANSWER_WEIGHTS)}")


def _valid_search_mean(ctx: StepContext | None) -> torch.Tensor:
    if ctx is not None and VALID_SEARCH_MEAN_KEY in ctx.extras:
        return torch.as_tensor(ctx.extras[VALID_SEARCH_MEAN_KEY], dtype=torch.float32)
    if ctx is not None and ctx.valid_searches is not None:
        return ctx.valid_searches.float().mean()
    raise ValueError(
        "LLDS with mask_answer needs the mean number of valid searches: set ctx.valid_searches (B,) "
        f"or ctx.extras[{VALID_SEARCH_MEAN_KEY!r}]"
    )


@AUX_LOSSES.register(
    "llds",
    params={"lam": Float(ge=0, help="λ: weight of the regulariser (0.2 with the code's normalisation)."),
            "gate": Choice(*LLDS_GATES, help="Granularity of the gate: action (A-gate), response or token."),
            "norm": Choice(*LLDS_NORMS, help="code: token-mean as the official code; paper: eq. 4's |Y_pre|."),
            "preserve": Choice(*PRESERVE_RULES, help="Responses whose likelihood is preserved."),
            "mask_answer": Bool(help="LLDS-MA: down-weight the final answer span (tool-use rollouts only)."),
            "answer_weight": Choice(*ANSWER_WEIGHTS, help="β_ans rule of LLDS-MA."),
            "valid_search_target": Float(gt=0, help="V_s at which β_ans reaches 1 (paper: 2)."),
            "lam_ans": Float(ge=0, help="Answer-span weight of the code_fixed rule.")},
    paper="arXiv 2512.04220 (LLDS), eq. 4-5", summary="likelihood-preserving regulariser on A >= 0 responses",
    acts_on=("llds/frac_gated", "A >= 0 responses (or actions) whose likelihood fell under the update"),
    needs=("action_ids",),
    extra_needs=lambda p: ({"answer_mask", "valid_searches"} if p["mask_answer"] else set())
    | ({"mini_batch_preserving_count"} if p["norm"] == "paper" else set()),
    minibatch_context=lambda advantages, loss_mask, *, norm, preserve, **_: (
        {NUM_PRESERVING_KEY: llds_num_preserving(advantages, loss_mask, preserve=preserve)} if norm == "paper" else {}
    ),
    # eq. 5's V_s is the mean number of valid searches at the RL step: over the whole rollout batch, not
    # over whichever mini-batch or micro-batch the loss happens to see
    step_context=lambda rows, *, mask_answer, **_: (
        {VALID_SEARCH_MEAN_KEY: rows["valid_searches"].float().mean()}
        if mask_answer and rows.get("valid_searches") is not None else {}
    ),
    off_policy="its loss compares the policy with old_logprobs before the policy has moved, so it is identically 0",
)
def llds_loss(
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ctx: StepContext | None = None,
    *,
    lam: float = 0.2,
    gate: str = "action",
    norm: str = "code",
    preserve: str = "adv>=0",
    mask_answer: bool = False,
    answer_weight: str = "paper",
    valid_search_target: float = 2.0,
    lam_ans: float = 0.2,
) -> tuple[torch.Tensor, Metrics]:
    """LLDS auxiliary loss, already weighted by ``lam`` and normalised (spec 2.2; arXiv 2512.04220).

    ``pen_{i,t} = coef_{i,t} · gate_{i,t} · max(0, old_{i,t} - policy_{i,t})`` on preserving tokens
    (``loss_mask`` and ``preserve``), with ``coef = lam`` (or the LLDS-MA answer coefficient on
    ``ctx.answer_mask`` tokens when ``mask_answer``) and the gate at one of three granularities:

    * ``action`` (A-gate, paper eq. 4, the default): ``1[Σ_{t in action} Δ_t > 0]``; actions are
      the ids of ``ctx.action_ids`` (B, T) long. Without ``ctx.action_ids`` each response's
      loss-masked tokens form one action (then it equals the response gate); use
      :func:`action_ids_from_mask` to split a response at observation tokens.
    * ``response`` (R-gate, eq. 10): ``1[Σ_t Δ_t > 0]`` over the response's preserving tokens.
    * ``token`` (eq. 9): no gate.

    Normalisation (errata 14), ``norm``:

    * ``code`` (default; what produced the paper's numbers with λ = 0.2): ``Σ pen / N_tokens`` over
      ALL policy tokens, negative responses included. ``N_tokens = ctx.num_tokens`` (whole mini-batch)
      when given, else ``loss_mask.sum()``.
    * ``paper``: ``(1/|Y_pre|) Σ_{i in Y_pre} Σ_t pen_{i,t} / n_i`` with ``n_i`` the response's
      preserving tokens; ``|Y_pre| = ctx.extras["llds_num_preserving"]`` when given (whole
      mini-batch, see :func:`llds_num_preserving`), else this tensor's own count.

    LLDS-MA (eq. 5, ``mask_answer``) needs ``ctx.answer_mask`` (B, T) bool, True on the final answer
    span (the spec's meaning, the reverse of the official code's mask) and the mean number of valid
    searches at this step: ``ctx.extras["llds_valid_search_mean"]`` if given, else the mean of
    ``ctx.valid_searches`` over this tensor's rows. See :func:`llds_answer_coef` for ``answer_weight``
    (``paper`` default: ``λ·min(V_s/2, 1)``).

    Args:
        policy_logprobs: (B, T) current policy, carries the gradient.
        old_logprobs: (B, T) behaviour policy (detached here).
        advantages: (B, T) token advantages (sign decides the preserving set).
        loss_mask: (B, T) bool, policy tokens.
    Returns:
        (0-d loss, metrics under ``llds/``).
    """
    if gate not in LLDS_GATES:
        raise ValueError(f"unknown LLDS gate {gate!r}; allowed: {', '.join(LLDS_GATES)}")
    if norm not in LLDS_NORMS:
        raise ValueError(f"unknown LLDS norm {norm!r}; allowed: {', '.join(LLDS_NORMS)}")
    if lam < 0:
        raise ValueError(f"LLDS lam must be >= 0, got {lam}")
    mask = loss_mask.bool()
    m = preserving_mask(advantages, mask, preserve=preserve)  # (B, T) preserving tokens
    dtype = policy_logprobs.dtype
    delta = old_logprobs.detach() - policy_logprobs  # (B, T), grad through policy_logprobs
    delta_sg = delta.detach()

    if gate == "token":
        token_gate = m
        units = m.sum(-1)
        gated_units = (m & (delta_sg > 0)).sum(-1)
    else:
        if gate == "action" and ctx is not None and ctx.action_ids is not None:
            unit_ids = ctx.action_ids.to(mask.device)
        else:
            unit_ids = m.long()  # one unit per response
        token_gate, units, gated_units = _unit_gate(delta_sg, m, unit_ids)

    coef = torch.full_like(delta_sg, lam)  # (B, T)
    metrics: Metrics = {}
    if mask_answer:
        if ctx is None or ctx.answer_mask is None:
            raise ValueError("LLDS with mask_answer needs ctx.answer_mask (B, T) bool, True on the answer span")
        answer = ctx.answer_mask.bool().to(mask.device) & mask
        ans_coef = llds_answer_coef(
            _valid_search_mean(ctx), lam=lam, answer_weight=answer_weight,
            valid_search_target=valid_search_target, lam_ans=lam_ans,
        ).to(device=coef.device, dtype=coef.dtype)
        coef = torch.where(answer, ans_coef, coef)
        metrics["llds/answer_coef"] = ans_coef.detach()
        metrics["llds/frac_answer_tokens"] = masked_mean(answer.float(), mask).detach()

    pen = coef * token_gate.to(dtype) * torch.relu(delta)  # (B, T)
    if norm == "code":
        denom = ctx.num_tokens if ctx is not None and ctx.num_tokens is not None else mask.sum()
        denom = torch.as_tensor(denom, dtype=dtype, device=pen.device)
        loss = pen.sum() / denom.clamp_min(1.0)  # pen is 0 off the mask, so an empty mask gives 0
    else:
        n_i = m.sum(-1)  # (B,) preserving tokens per response
        per_resp = pen.sum(-1) / n_i.clamp_min(1).to(dtype)  # (B,)
        if ctx is not None and NUM_PRESERVING_KEY in ctx.extras:
            n_pre = torch.as_tensor(ctx.extras[NUM_PRESERVING_KEY], dtype=dtype, device=pen.device)
        else:
            n_pre = (n_i > 0).sum().to(dtype)
        loss = per_resp.sum() / n_pre.clamp_min(1.0)  # empty Y_pre: 0, still on the graph

    preserving_rows = m.any(-1)  # (B,)
    metrics["llds/loss"] = loss.detach()
    metrics["llds/frac_gated"] = (gated_units.sum() / units.sum().clamp_min(1)).float().detach()
    metrics["llds/mean_reduce_chunk"] = (
        (gated_units * preserving_rows).sum() / preserving_rows.sum().clamp_min(1)
    ).float().detach()
    metrics["llds/mean_pos_displacement"] = masked_mean(delta_sg.clamp_min(0.0), m).detach()
    metrics["llds/frac_preserving"] = (preserving_rows.sum() / max(mask.shape[0], 1)).float().detach()
    return loss, metrics
