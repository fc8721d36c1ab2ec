"""Small random training batches shared by the trainer tests."""

import torch

from rlvr_lab.train.batching import supervised_batch


def toy_batch(tok, n=6, seed=0, *, unit="a", max_repeats=4, logp_scale=1.0):
    """``n`` prompts of 2-5 ``q`` characters, responses of 1..``max_repeats`` copies of ``unit``, random
    per-sequence advantages, old log-probs in [-logp_scale, 0] and rewards, all fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    prompts = [tok.encode("q" * int(torch.randint(2, 6, (1,), generator=g)), add_special_tokens=False) for _ in range(n)]
    targets = [
        tok.encode(unit * int(torch.randint(1, max_repeats + 1, (1,), generator=g)), add_special_tokens=False)
        for _ in range(n)
    ]
    b = supervised_batch(prompts, targets, tok.pad_token_id)
    T = b.loss_mask.shape[1]
    b.advantages = torch.randn(n, 1, generator=g).expand(n, T) * b.loss_mask
    b.old_logprobs = (-torch.rand(n, T, generator=g) * logp_scale) * b.loss_mask
    b.rewards = torch.rand(n, generator=g)
    return b
