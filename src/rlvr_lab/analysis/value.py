"""``rlvr value``: For-Value scores (arXiv 2508.10180) of a training JSONL against a validation JSONL.

Samples. Each JSONL line is one supervised sample, in either of two shapes:

* ``{"prompt": str, "response": str}``: the prompt is tokenised as written (with the tokenizer's default
  special tokens, e.g. a BOS), the response without special tokens;
* ``{"question": str, "answer": str | number}``: the SFT warm-start's examples, built as the warm-start
  builds them (``rlvr_lab.train.sft``): the question rendered with the chat template, the response
  ``target_template.format(answer=...)`` followed by EOS.

Other fields are kept and copied to the top/bottom exports. A missing or mistyped field fails with
``file:line``; blank lines are skipped. Only response tokens enter a representation (the LLM-selection
script of the official code); a sample whose response has no tokens scores 0.

Forward pass. One forward pass per batch through the decoder body (prompts left-padded, responses
right-padded, explicit position ids): its ``last_hidden_state`` is the output of the final norm, the LM
head's input ``h_t`` (for Llama-style models ``hidden_states[-1]`` of ``output_hidden_states`` is the same
tensor; the tests check ``lm_head(h)`` against the model's logits). Logits are formed only at response
positions, in float32.

Streaming. The validation reference is built first (the mean representation ``Ḡ``, one ``|V'| × d`` matrix;
or, for ``reduce="pairwise"``, every validation sample's factors), then the training file is read and scored
a window of batches at a time; only the scores (one float per sample, or one row for pairwise) and the
top/bottom-k rows are kept. Representations are never written to disk.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from rlvr_lab.analysis.forvalue import (
    REDUCTIONS,
    ForValueFactors,
    MeanRepresentation,
    forvalue_factors,
    forvalue_score_factors,
    score_against_mean,
)
from rlvr_lab.jsonl import json_object, read_lines

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

VOCAB_MODES = ("all", "inputs", "topk")
"""``all``: every id (exact gradient inner product); ``inputs``: the ids occurring in the train and validation
token sequences (``total_unique``, a tokenisation pre-pass over both files); ``topk``: per batch, the union of
the ``prediction_topk`` most probable ids (``topk_unique``)."""

Progress = Callable[[str, int], Callable[[int], None]]
"""``progress(label, total)`` returns ``advance(n)``; called once per phase (validation, training)."""


class ValueInputError(ValueError):
    """A problem with the input files or settings, with ``file:line`` where there is one."""


@dataclass
class Sample:
    """One supervised sample as token ids. ``loss_mask`` (same length as the response) marks the tokens that
    count; None means all of them."""

    prompt_ids: list[int]
    response_ids: list[int]
    loss_mask: list[bool] | None = None
    index: int = 0  # position among the file's samples
    line: int = 0  # 1-based line in the file (0: not from a file)
    row: dict[str, Any] | None = field(default=None, repr=False)  # the JSON object, for the exports
    truncated: bool = False  # the prompt or the response was cut to the settings' maximum length

    def n_counted(self) -> int:
        """Response tokens that enter the representation."""
        if self.loss_mask is None:
            return len(self.response_ids)
        if len(self.loss_mask) != len(self.response_ids):
            raise ValueError(f"loss_mask has {len(self.loss_mask)} entries for {len(self.response_ids)} response tokens")
        return sum(bool(m) for m in self.loss_mask)


@dataclass(frozen=True)
class ValueSettings:
    """How samples are read and scored; every field is validated by :meth:`check`."""

    reduce: Literal["mean", "pairwise"] = "mean"
    vocab: Literal["all", "inputs", "topk"] = "all"
    prediction_topk: int = 32  # vocab="topk": ids kept per position (official default)
    topk_abs: int | None = None  # keep the union of the k largest |α| per position (official --topk_abs)
    keep_ratio: float = 1.0  # training samples: lowest-likelihood fraction of positions (validation: always 1)
    batch_size: int = 8
    top_k: int = 10  # rows written to top.jsonl and bottom.jsonl
    target_template: str = "<answer>{answer}</answer>"  # question/answer rows: the warm-start's response
    use_chat_template: bool = True  # question/answer rows: render the question with the chat template
    max_prompt_tokens: int = 512  # longer prompts keep their last tokens (official default length)
    max_response_tokens: int = 1280  # longer responses keep their first tokens (official default length)
    max_reference_gib: float = 2.0  # pairwise: refuse validation factors larger than this

    def check(self) -> ValueSettings:
        if self.reduce not in REDUCTIONS:
            raise ValueInputError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {self.reduce!r}")
        if self.vocab not in VOCAB_MODES:
            raise ValueInputError(f"vocab must be one of {', '.join(VOCAB_MODES)}, got {self.vocab!r}")
        for name in ("prediction_topk", "batch_size", "max_prompt_tokens", "max_response_tokens"):
            if getattr(self, name) < 1:
                raise ValueInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.top_k < 0:
            raise ValueInputError(f"top_k must be >= 0, got {self.top_k}")
        if self.topk_abs is not None and self.topk_abs < 1:
            raise ValueInputError(f"topk_abs must be >= 1 or None, got {self.topk_abs}")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ValueInputError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if "{answer}" not in self.target_template:
            raise ValueInputError(f"target_template must contain {{answer}}, got {self.target_template!r}")
        return self


# ---- reading ---------------------------------------------------------------------------------------------------


def _text_field(row: dict[str, Any], name: str, where: str, *, numbers: bool = False) -> str:
    if name not in row:
        raise ValueInputError(f"{where}: missing field {name!r}")
    value = row[name]
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    allowed = "a string or a number" if numbers else "a string"
    raise ValueInputError(f"{where}: field {name!r} must be {allowed}, got {type(value).__name__} {value!r:.60}")


def sample_texts(row: dict[str, Any], where: str) -> tuple[Literal["prompt", "question"], str, str]:
    """``(shape, prompt or question, response or answer)`` of one JSON object; errors name ``where``."""
    if "prompt" in row or "response" in row:
        return "prompt", _text_field(row, "prompt", where), _text_field(row, "response", where)
    if "question" in row or "answer" in row:
        return "question", _text_field(row, "question", where), _text_field(row, "answer", where, numbers=True)
    raise ValueInputError(f"{where}: a sample needs fields 'prompt' and 'response' (or 'question' and 'answer', "
                          f"as in the SFT warm-start); got fields {sorted(row)}")


def encode_sample(
    tokenizer: PreTrainedTokenizerBase, shape: str, first: str, second: str, settings: ValueSettings
) -> tuple[list[int], list[int], bool]:
    """``(prompt_ids, response_ids, truncated)`` by the rules of the module docstring."""
    if shape == "prompt":
        prompt_ids = list(tokenizer(first, add_special_tokens=True)["input_ids"])
        response_ids = list(tokenizer(second, add_special_tokens=False)["input_ids"])
    else:
        from rlvr_lab.models.chat import render_prompt

        prompt = render_prompt(tokenizer, first, use_chat_template=settings.use_chat_template)
        prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        response_ids = list(tokenizer(settings.target_template.format(answer=second), add_special_tokens=False)["input_ids"]) + eos
    if not prompt_ids:  # something must predict the first response token
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise ValueInputError("an empty prompt needs a BOS or EOS token to condition on; the tokenizer has neither")
        prompt_ids = [start]
    truncated = len(prompt_ids) > settings.max_prompt_tokens or len(response_ids) > settings.max_response_tokens
    return prompt_ids[-settings.max_prompt_tokens:], response_ids[: settings.max_response_tokens], truncated


def read_samples(path: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase, settings: ValueSettings) -> Iterator[Sample]:
    """The samples of a JSONL file, one at a time, tokenised (``row`` keeps each JSON object)."""
    path = Path(path)
    if not path.is_file():
        raise ValueInputError(f"{path}: no such file")
    index = 0
    for number, line in enumerate(read_lines(path, error=ValueInputError), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json_object(line, where)
        except ValueError as exc:
            raise ValueInputError(str(exc)) from None
        shape, first, second = sample_texts(row, where)
        prompt_ids, response_ids, truncated = encode_sample(tokenizer, shape, first, second, settings)
        yield Sample(prompt_ids, response_ids, index=index, line=number, row=row, truncated=truncated)
        index += 1


def count_samples(path: str | os.PathLike[str]) -> int:
    """Non-blank lines of a file (the progress bar's total)."""
    return sum(1 for line in read_lines(path, error=ValueInputError) if line.strip())


# ---- forward pass ---------------------------------------------------------------------------------------------


def _check_head(model: PreTrainedModel) -> None:
    """Refuse models whose logits are not ``lm_head(h)``: G would not be the head's gradient."""
    config = getattr(model, "config", None)
    for name in ("final_logit_softcapping", "logit_scale"):
        if getattr(config, name, None) not in (None, 1.0):
            raise ValueInputError(f"For-Value needs logits = lm_head(hidden); this model sets {name}={getattr(config, name)}")


def response_states(model: PreTrainedModel, samples: Sequence[Sample]) -> tuple[torch.Tensor, ...]:
    """One forward pass over ``samples``: ``(hidden (B, N, d), logits (B, N, V) float32, targets (B, N),
    mask (B, N) bool)``, row ``t`` predicting response token ``t`` (N = the longest response)."""
    device = next(model.parameters()).device
    lp = max(len(s.prompt_ids) for s in samples)
    n = max(len(s.response_ids) for s in samples)
    B = len(samples)
    ids = torch.zeros(B, lp + n, dtype=torch.long)
    attn = torch.zeros(B, lp + n, dtype=torch.long)
    mask = torch.zeros(B, n, dtype=torch.bool)
    for b, s in enumerate(samples):
        ids[b, lp - len(s.prompt_ids): lp] = torch.as_tensor(s.prompt_ids, dtype=torch.long)
        ids[b, lp: lp + len(s.response_ids)] = torch.as_tensor(s.response_ids, dtype=torch.long)
        attn[b, lp - len(s.prompt_ids): lp + len(s.response_ids)] = 1
        counts = torch.ones(len(s.response_ids), dtype=torch.bool) if s.loss_mask is None else torch.as_tensor(s.loss_mask, dtype=torch.bool)
        mask[b, : len(s.response_ids)] = counts
    positions = (attn.cumsum(-1) - 1).clamp_min(0)  # (B, Lp + N): 0 at each row's first real token
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    head = model.get_output_embeddings()
    with torch.inference_mode():
        out = body(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=positions.to(device), use_cache=False)
        hidden = out.last_hidden_state[:, lp - 1: lp + n - 1]  # (B, N, d): position lp - 1 + t predicts token t
        logits = head(hidden).float()  # (B, N, V)
    return hidden.float(), logits, ids[:, lp:].to(device), mask.to(device)


def sample_factors(
    model: PreTrainedModel,
    samples: Sequence[Sample],
    *,
    vocab: str = "all",
    vocab_ids: torch.Tensor | None = None,
    prediction_topk: int = 32,
    topk_abs: int | None = None,
    keep_ratio: float = 1.0,
) -> tuple[list[ForValueFactors], list[float | None]]:
    """For-Value factors of ``samples`` from one forward pass, and the mean log-probability (nats per token) of
    each sample's counted response tokens (a loss-based reference signal; None for an empty response).

    ``vocab`` is one of :data:`VOCAB_MODES`; ``"inputs"`` needs the id set in ``vocab_ids``. Empty responses
    take no forward pass and give empty factors (every score with them is 0)."""
    spec: Any = {"all": None, "topk": "topk", "inputs": vocab_ids}[vocab]
    if vocab == "inputs" and vocab_ids is None:
        raise ValueError("vocab='inputs' needs vocab_ids")
    live = [b for b, s in enumerate(samples) if s.n_counted() > 0]
    d = model.get_output_embeddings().weight.shape[1]
    device = next(model.parameters()).device
    empty = ForValueFactors(torch.zeros(0, d, device=device), torch.zeros(0, 0, device=device),
                            torch.zeros(0, dtype=torch.long, device=device))
    factors: list[ForValueFactors] = [empty] * len(samples)
    logprobs: list[float | None] = [None] * len(samples)
    if live:
        hidden, logits, targets, mask = response_states(model, [samples[b] for b in live])
        token_logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (B, N)
        mean_logp = (token_logp * mask).sum(-1) / mask.sum(-1)  # (B,)
        built = forvalue_factors(hidden, logits, targets, mask, vocab_ids=spec, prediction_topk=prediction_topk,
                                 keep_ratio=keep_ratio, topk_abs=topk_abs)
        for b, f, lp in zip(live, built, mean_logp.tolist()):
            factors[b], logprobs[b] = f, lp
    return factors, logprobs


# ---- scoring -------------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """The validation side: the mean representation (``reduce="mean"``) or every sample's factors."""

    reduce: str
    n_samples: int = 0
    mean_G: torch.Tensor | None = None  # (|V'|, d)
    mean_ids: torch.Tensor | None = None  # (|V'|,)
    factors: list[ForValueFactors] = field(default_factory=list)

    def score(self, train: ForValueFactors) -> float | list[float]:
        if train.n_positions == 0:
            return 0.0 if self.reduce == "mean" else [0.0] * self.n_samples
        if self.reduce == "mean":
            return float(score_against_mean(train, self.mean_G, self.mean_ids))
        return [float(forvalue_score_factors(train, v)) for v in self.factors]


def _batches(samples: Sequence[Sample], size: int) -> Iterator[list[Sample]]:
    for start in range(0, len(samples), size):
        yield list(samples[start: start + size])


def build_reference(
    model: PreTrainedModel,
    samples: Iterator[Sample] | Sequence[Sample],
    settings: ValueSettings,
    *,
    vocab_ids: torch.Tensor | None = None,
    advance: Callable[[int], None] | None = None,
    where: str = "validation samples",
) -> Reference:
    """Mean representation (or pairwise factors) of the validation samples; at least one must have a
    non-empty response. Validation positions are never subsampled (``keep_ratio`` 1)."""
    ref = Reference(settings.reduce)
    acc = MeanRepresentation()
    limit = settings.max_reference_gib * 2**30
    held = 0
    window: list[Sample] = []

    def flush() -> None:
        nonlocal held
        for batch in _batches(window, settings.batch_size):
            for factors in sample_factors(model, batch, vocab=settings.vocab, vocab_ids=vocab_ids,
                                          prediction_topk=settings.prediction_topk, topk_abs=settings.topk_abs)[0]:
                if factors.n_positions == 0:
                    continue
                ref.n_samples += 1
                if settings.reduce == "mean":
                    acc.add_factors(factors)
                else:
                    held += (factors.alpha.numel() + factors.hidden.numel()) * factors.alpha.element_size()
                    if held > limit:
                        raise ValueInputError(
                            f"pairwise scoring would hold more than {settings.max_reference_gib} GiB of validation factors; "
                            "use vocab=topk or vocab=inputs, fewer or shorter validation samples, or reduce=mean")
                    ref.factors.append(factors)
            if advance is not None:
                advance(len(batch))
        window.clear()

    for sample in samples:
        window.append(sample)
        if len(window) == settings.batch_size:
            flush()
    flush()
    if ref.n_samples == 0:
        raise ValueInputError(f"{where}: no sample with a non-empty response; For-Value needs at least one")
    if settings.reduce == "mean":
        ref.mean_G, ref.mean_ids = acc.mean()
    return ref


def score_samples(
    model: PreTrainedModel,
    samples: Sequence[Sample],
    reference: Reference,
    settings: ValueSettings,
    *,
    vocab_ids: torch.Tensor | None = None,
) -> list[tuple[float | list[float], float | None]]:
    """``(score, mean response log-prob)`` of each of ``samples`` (one forward pass per ``settings.batch_size``),
    in the order given; the score is a list over validation samples for ``reduce="pairwise"``."""
    out: list[tuple[float | list[float], float | None]] = []
    for batch in _batches(samples, settings.batch_size):
        factors, logprobs = sample_factors(model, batch, vocab=settings.vocab, vocab_ids=vocab_ids,
                                           prediction_topk=settings.prediction_topk, topk_abs=settings.topk_abs,
                                           keep_ratio=settings.keep_ratio)
        out += [(reference.score(f), lp) for f, lp in zip(factors, logprobs)]
    return out


def score_token_samples(
    model: PreTrainedModel,
    train: Sequence[Sample],
    val: Sequence[Sample],
    settings: ValueSettings | None = None,
) -> list[float | list[float]]:
    """For-Value scores of in-memory token samples against in-memory validation samples (``sft.select``)."""
    settings = (settings or ValueSettings()).check()
    if settings.vocab == "inputs":
        raise ValueInputError("score_token_samples takes vocab all or topk")
    model.eval()
    reference = build_reference(model, val, settings)
    return [score for score, _ in score_samples(model, train, reference, settings)]


def _check_ids(sample: Sample, vocab_size: int, path: str | os.PathLike[str]) -> None:
    top = max(sample.prompt_ids + sample.response_ids)
    if top >= vocab_size:
        raise ValueInputError(f"{path}:{sample.line}: token id {top} is outside the model's vocabulary of {vocab_size} ids; "
                              "the tokenizer does not match the model")


# ---- the run --------------------------------------------------------------------------------------------------


def run_value(
    train_path: str | os.PathLike[str],
    val_path: str | os.PathLike[str],
    model: str,
    settings: ValueSettings | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    progress: Progress | None = None,
    loaded: Any = None,
) -> dict[str, Any]:
    """Score every training sample against the validation samples and write the results.

    Args:
        train_path, val_path: JSONL files (see the module docstring).
        model: anything ``load_model_and_tokenizer`` accepts (``"tiny"``, ``"smollm2-135m-instruct"``, a
            ``.gguf`` file, a model directory).
        settings: :class:`ValueSettings`.
        out_dir: if given, writes ``scores.jsonl`` (one row per training sample, in file order: ``index``,
            ``line``, ``score``, ``n_tokens``, ``logprob_mean`` (mean log-probability of the response tokens, a
            loss-based reference signal) and ``pairwise`` for that reduction), ``top.jsonl`` and
            ``bottom.jsonl`` (the ``top_k`` highest- and lowest-scoring samples with their JSON rows) and
            ``value.json`` (this summary).
        device, dtype: passed to ``load_model_and_tokenizer``.
        progress: optional progress bars (:data:`Progress`).
        loaded: an already loaded ``LoadedModel`` to use instead of loading ``model``.
    Returns:
        The summary: counts, score statistics, settings, timings and output paths.
    """
    settings = (settings or ValueSettings()).check()
    for path in (train_path, val_path):
        if not Path(path).is_file():
            raise ValueInputError(f"{path}: no such file")
    t0 = time.perf_counter()
    if loaded is None:
        from rlvr_lab.models.loading import load_model_and_tokenizer

        loaded = load_model_and_tokenizer(model, device=device, dtype=dtype)
    net, tokenizer = loaded.model, loaded.tokenizer
    net.eval()
    _check_head(net)
    vocab_size = net.get_output_embeddings().weight.shape[0]
    hidden_size = net.get_output_embeddings().weight.shape[1]

    def checked(path):
        for sample in read_samples(path, tokenizer, settings):
            _check_ids(sample, vocab_size, path)
            yield sample

    vocab_ids = None
    if settings.vocab == "inputs":  # the official total_unique: a tokenisation pass over both files
        seen: set[int] = set()
        for path in (val_path, train_path):
            for sample in checked(path):
                seen.update(sample.prompt_ids)
                seen.update(sample.response_ids)
        vocab_ids = torch.tensor(sorted(seen), dtype=torch.long, device=next(net.parameters()).device)

    t_val = time.perf_counter()
    n_val_rows = count_samples(val_path)
    advance = progress("validation", n_val_rows) if progress else None
    reference = build_reference(net, checked(val_path), settings, vocab_ids=vocab_ids, advance=advance,
                                where=f"{val_path}")
    t_train = time.perf_counter()

    n_train_rows = count_samples(train_path)
    advance = progress("training", n_train_rows) if progress else None
    top: list[tuple[float, int, dict]] = []  # min-heap of the highest scores
    bottom: list[tuple[float, int, dict]] = []  # min-heap of negated scores: the lowest
    means: list[float] = []
    counts = {"train": 0, "train_empty": 0, "train_truncated": 0}
    out = Path(out_dir) if out_dir is not None else None
    handle = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        handle = (out / "scores.jsonl").open("w", encoding="utf-8")
    window_size = settings.batch_size * 8
    try:
        window: list[Sample] = []

        def flush() -> None:
            # within a window, similar lengths share a batch (less padding); rows are written in file order
            order = sorted(window, key=lambda s: len(s.prompt_ids) + len(s.response_ids))
            scored: dict[int, tuple[float | list[float], float | None]] = {}
            for batch in _batches(order, settings.batch_size):
                for s, value in zip(batch, score_samples(net, batch, reference, settings, vocab_ids=vocab_ids)):
                    scored[s.index] = value
                if advance is not None:
                    advance(len(batch))
            for s in window:
                value, logprob = scored[s.index]
                mean = value if isinstance(value, float) else sum(value) / len(value)
                n_tokens = s.n_counted()
                counts["train"] += 1
                counts["train_empty"] += n_tokens == 0
                counts["train_truncated"] += s.truncated
                means.append(mean)
                record: dict[str, Any] = {"index": s.index, "line": s.line, "score": mean, "n_tokens": n_tokens,
                                          "logprob_mean": logprob}
                if not isinstance(value, float):
                    record["pairwise"] = value
                if handle is not None:
                    handle.write(json.dumps(record) + "\n")
                if settings.top_k:
                    entry = {"index": s.index, "line": s.line, "score": mean, "sample": s.row}
                    _push(top, (mean, -s.index, entry), settings.top_k)
                    _push(bottom, (-mean, s.index, entry), settings.top_k)
            window.clear()

        for sample in checked(train_path):
            window.append(sample)
            if len(window) == window_size:
                flush()
        flush()
    finally:
        if handle is not None:
            handle.close()
    if counts["train"] == 0:
        raise ValueInputError(f"{train_path}: no samples")
    t_end = time.perf_counter()

    summary: dict[str, Any] = {
        "method": "For-Value (arXiv 2508.10180)",
        "model": model,
        "train": str(train_path),
        "val": str(val_path),
        "n_train": counts["train"],
        "n_train_empty_response": counts["train_empty"],
        "n_train_truncated": counts["train_truncated"],
        "n_val": reference.n_samples,
        "n_val_rows": n_val_rows,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "reference_vocab_ids": int(reference.mean_ids.numel()) if reference.mean_ids is not None else None,
        "score_mean": sum(means) / len(means),
        "score_std": _std(means),
        "score_min": min(means),
        "score_max": max(means),
        "seconds_load": t_val - t0,
        "seconds_validation": t_train - t_val,
        "seconds_training": t_end - t_train,
        "train_samples_per_s": counts["train"] / max(t_end - t_train, 1e-9),
        "settings": asdict(settings),
        "top": [e for _, _, e in sorted(top, key=lambda x: (-x[0], -x[1]))],
        "bottom": [e for _, _, e in sorted(bottom, key=lambda x: (-x[0], x[1]))],
    }
    if out is not None:
        _write_jsonl(out / "top.jsonl", summary["top"])
        _write_jsonl(out / "bottom.jsonl", summary["bottom"])
        written = {k: v for k, v in summary.items() if k not in ("top", "bottom")}
        written["outputs"] = {name: str(out / name) for name in ("scores.jsonl", "top.jsonl", "bottom.jsonl", "value.json")}
        (out / "value.json").write_text(json.dumps(written, indent=2) + "\n")
        summary["outputs"] = written["outputs"]
    return summary


def _push(heap: list, item: tuple, k: int) -> None:
    if len(heap) < k:
        heapq.heappush(heap, item)
    elif item[:2] > heap[0][:2]:
        heapq.heapreplace(heap, item)


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
