"""A fixed probe set: prompts with stored responses whose likelihood is re-measured during training.

The per-step likelihood signals are measured on each step's fresh rollouts, whose prompts and
responses change from step to step. A probe set keeps the same responses (correct and incorrect) for
the whole run, so the likelihood of correct answers can be followed step by step without prompt-mix
noise, and two runs given the same ``probes.json`` are compared on identical responses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

PROBE_FILE_VERSION = 1


@dataclass
class ProbeSet:
    """Token ids of each probe response with its prompt, the verifier's verdict and reference log-probs.

    All lists have one entry per response; ``loss_mask[i]`` and ``ref_logprobs[i]`` align with
    ``response_ids[i]`` (True on tokens the policy sampled; tool output would be False).
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    loss_mask: list[list[bool]]
    correct: list[bool]
    texts: list[str] = field(default_factory=list)
    ref_logprobs: list[list[float]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.prompt_ids)
        if n == 0:
            raise ValueError("a probe set needs at least one response")
        for name in ("response_ids", "loss_mask", "correct"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"probe set: {name} has {len(getattr(self, name))} entries, prompt_ids has {n}")
        for i, (ids, mask) in enumerate(zip(self.response_ids, self.loss_mask)):
            if len(ids) != len(mask):
                raise ValueError(f"probe response {i}: {len(ids)} tokens but a loss mask of {len(mask)}")
        if self.ref_logprobs is not None:
            for i, (ids, lp) in enumerate(zip(self.response_ids, self.ref_logprobs)):
                if len(ids) != len(lp):
                    raise ValueError(f"probe response {i}: {len(ids)} tokens but {len(lp)} reference log-probs")

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def max_token_id(self) -> int:
        return max(max(ids, default=-1) for ids in (*self.prompt_ids, *self.response_ids))

    @classmethod
    def from_rows(
        cls,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        sampled_mask: torch.Tensor,
        correct: list[bool],
        texts: list[str],
        meta: dict[str, Any] | None = None,
    ) -> "ProbeSet":
        """From padded generation tensors: (B, Lp) prompts left-padded, (B, T) responses right-padded."""
        prompts, responses, masks = [], [], []
        for i in range(prompt_ids.shape[0]):
            prompts.append(prompt_ids[i][prompt_mask[i].bool()].tolist())
            keep = response_mask[i].bool()
            responses.append(response_ids[i][keep].tolist())
            masks.append(sampled_mask[i][keep].bool().tolist())
        return cls(prompts, responses, masks, [bool(c) for c in correct], list(texts), None, dict(meta or {}))

    def save(self, path: Path) -> None:
        path = Path(path)
        payload = {"version": PROBE_FILE_VERSION, **asdict(self)}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> "ProbeSet":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"probe file {path} does not exist (a run writes RUN_DIR/probes.json)")
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"probe file {path} is not valid JSON: {exc}") from exc
        version = payload.pop("version", None)
        if version != PROBE_FILE_VERSION:
            raise ValueError(f"probe file {path} has version {version!r}; this rlvr-lab reads version {PROBE_FILE_VERSION}")
        try:
            return cls(**payload)
        except TypeError as exc:
            raise ValueError(f"probe file {path} is malformed: {exc}") from exc
