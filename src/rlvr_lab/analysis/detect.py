"""Machine-generated-text detection on a JSONL file of texts: Lastde, Lastde++ and two baselines, with AUROC.

Input: one JSON object a line with ``text`` (a string) and optionally ``label`` (0 human-written, 1
machine-generated) and ``source`` (copied to the records). Every text is read once by the scoring model
(:func:`rlvr_lab.analysis.lastde.token_statistics`) and scored by

* ``lastde``: Lastde (arXiv 2410.06072), official white-box settings s=3, eps=10n, tau'=5;
* ``lastde_pp``: Lastde++, s=4, eps=8n, tau'=15, ``n_samples`` tokens drawn per position from the scoring
  model itself (reference model = scoring model, the paper's white-box setting);
* ``loglik``: mean token log-likelihood;
* ``logrank``: minus the mean log-rank of the observed tokens.

Higher is more machine-like for all four.

Tokenisation follows the official code: the tokenizer's default special tokens are kept and the first
token is context only (``labels = ids[1:]``), so a text of N tokens gives N-1 log-probabilities (N-1 is
``n_tokens`` in the records). A text longer than the model's context is read in non-overlapping blocks,
each conditioned on a carried-over prefix of half the context (:func:`~rlvr_lab.analysis.lastde.score_windows`);
the summary says how many texts needed more than one window.

Bad input. An empty file, a line that is not a JSON object, a missing or non-string ``text`` or a label
other than 0/1 is a ``ValueError`` naming ``file:line``. An empty (all-whitespace) text gets status
``empty`` and a text with fewer scored tokens than the selected methods need (``tau_max + s``: 8 for
Lastde, 19 for Lastde++, 1 for the baselines) gets ``too_short``; both keep their line in the records with
null scores, are counted in the summary and are left out of every AUROC, so all methods are compared on
the same texts. A score that comes out non-finite (Lastde with MDE = 0, Lastde++ with samples of zero
spread) is written as null, counted per method and left out of that method's AUROC only.

AUROC is the Mann-Whitney statistic with ties counted one half (:func:`auroc`); its 95% interval is a
stratified bootstrap over texts (humans and machines resampled separately with replacement, 2000
resamples, percentile interval, fixed seed; :func:`auroc_interval`). Pairs (a human text and the machine
continuation of its prefix) are resampled as independent texts.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlvr_lab.jsonl import json_object, read_lines

METHODS: tuple[str, ...] = ("lastde", "lastde_pp", "loglik", "logrank")
METHOD_TITLES = {"lastde": "Lastde", "lastde_pp": "Lastde++", "loglik": "log-likelihood", "logrank": "log-rank"}
BOOTSTRAP_RESAMPLES = 2000
WINDOWING = ("texts longer than the model context are read in non-overlapping scored blocks, each conditioned "
             "on a carried-over prefix of half the context; the first token of a text is context only")
INTERVAL = (f"95% stratified bootstrap over texts ({BOOTSTRAP_RESAMPLES} resamples, percentile, seed 0); "
            "AUROC = Mann-Whitney statistic with ties counted 1/2")

Progress = Callable[[int], Callable[[int], None]]
"""``progress(total)`` returns ``advance(n)``; called once with the number of texts."""


@dataclass(frozen=True)
class DetectText:
    """One input line."""

    index: int
    text: str
    label: int | None
    source: str | None


@dataclass
class DetectSettings:
    """Scoring settings; defaults are the official ones (module docstring)."""

    methods: tuple[str, ...] = METHODS
    n_samples: int = 100
    lastde_s: int = 3
    lastde_eps_mult: float = 10.0
    lastde_tau_max: int = 5
    pp_s: int = 4
    pp_eps_mult: float = 8.0
    pp_tau_max: int = 15
    seed: int = 0
    batch_size: int = 8
    max_context: int | None = None

    def __post_init__(self) -> None:
        self.methods = tuple(dict.fromkeys(self.methods))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown or '(none given)'}; choose from {', '.join(METHODS)}")
        if "lastde_pp" in self.methods and self.n_samples < 2:
            raise ValueError(f"lastde_pp needs n_samples >= 2, got {self.n_samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_context is not None and self.max_context < 2:
            raise ValueError(f"max_context must be >= 2, got {self.max_context}")

    def min_tokens(self) -> int:
        """Fewest scored tokens a text needs for every selected method."""
        need = {"lastde": self.lastde_tau_max + self.lastde_s, "lastde_pp": self.pp_tau_max + self.pp_s,
                "loglik": 1, "logrank": 1}
        return max(need[m] for m in self.methods)


@dataclass
class DetectRecord:
    """One text's scores (one JSONL line). Scores are None when undefined (see ``status``)."""

    index: int
    label: int | None
    source: str | None
    status: str  # "ok", "empty" or "too_short"
    n_tokens: int  # scored tokens (token log-probabilities)
    windows: int
    scores: dict[str, float | None]
    lastde_pp_sample_mean: float | None = None
    lastde_pp_sample_std: float | None = None
    lastde_pp_nonfinite_samples: int | None = None  # samples left out of the z-score (their MDE was 0)
    preview: str = ""


@dataclass
class MethodResult:
    """AUROC of one method over the labelled, scored texts with a finite score."""

    method: str
    auroc: float | None
    ci95: tuple[float, float] | None
    n_human: int
    n_machine: int
    n_nonfinite: int
    note: str = ""


@dataclass
class DetectResult:
    summary: dict[str, Any]
    records: list[DetectRecord] = field(repr=False)
    table: str = ""


# ----------------------------------------------------------------------------- input


def load_texts(path: str | os.PathLike[str]) -> list[DetectText]:
    """Read the JSONL input (module docstring); blank lines are skipped. Raises ValueError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    texts: list[DetectText] = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        row = json_object(line, where)
        text = row.get("text")
        if not isinstance(text, str):
            raise ValueError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
        label = row.get("label")
        if label is not None and (isinstance(label, bool) or label not in (0, 1)):
            raise ValueError(f"{where}: field 'label' must be 0 (human) or 1 (machine), got {label!r:.80}")
        source = row.get("source")
        texts.append(DetectText(len(texts), text, None if label is None else int(label),
                                None if source is None else str(source)))
    if not texts:
        raise ValueError(f"{path}: no texts (the file is empty)")
    return texts


# ----------------------------------------------------------------------------- AUROC


def midranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values`` with tied values given the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (1 positive = machine, 0 negative = human).

    Mann-Whitney form: the probability that a random positive scores above a random negative, ties
    counting one half, ``(R_pos - P(P+1)/2) / (P N)`` with ``R_pos`` the sum of the positives' midranks.
    Raises ValueError when a class is missing.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    n_pos = sum(1 for y in labels if y == 1)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes, got {n_pos} positive and {n_neg} negative")
    ranks = midranks(scores)
    rank_sum = sum(r for r, y in zip(ranks, labels) if y == 1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc_interval(scores: Sequence[float], labels: Sequence[int], *, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the AUROC under a stratified bootstrap over texts (positives and negatives
    resampled separately with replacement, so every resample has both classes in the original numbers)."""
    import numpy as np

    values = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    pos, neg = values[y == 1], values[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs both classes")
    rng = np.random.default_rng(seed)
    estimates = np.empty(resamples)
    for b in range(resamples):
        p = pos[rng.integers(0, len(pos), len(pos))]
        n = neg[rng.integers(0, len(neg), len(neg))]
        # Mann-Whitney by comparing every pair: exact ties count 1/2
        estimates[b] = ((p[:, None] > n[None, :]).mean() + 0.5 * (p[:, None] == n[None, :]).mean())
    alpha = (1 - confidence) / 2
    low, high = np.quantile(estimates, [alpha, 1 - alpha])
    return float(low), float(high)


def method_results(records: Sequence[DetectRecord], methods: Sequence[str]) -> list[MethodResult]:
    """AUROC with its interval per method over the scored, labelled records."""
    results = []
    for method in methods:
        scored = [r for r in records if r.status == "ok" and r.label is not None]
        finite = [r for r in scored if r.scores.get(method) is not None]
        scores = [float(r.scores[method]) for r in finite]  # type: ignore[arg-type]
        labels = [int(r.label) for r in finite]  # type: ignore[arg-type]
        n_machine = sum(labels)
        n_human = len(labels) - n_machine
        result = MethodResult(method, None, None, n_human, n_machine, len(scored) - len(finite))
        if n_human and n_machine:
            result.auroc = auroc(scores, labels)
            result.ci95 = auroc_interval(scores, labels)
        else:
            result.note = "needs labelled texts of both classes"
        results.append(result)
    return results


# ----------------------------------------------------------------------------- scoring


def _finite(value: float) -> float | None:
    return value + 0.0 if math.isfinite(value) else None  # + 0.0: no "-0.0" in the records


def score_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[DetectText],
    settings: DetectSettings,
    *,
    advance: Callable[[int], None] | None = None,
) -> list[DetectRecord]:
    """Score ``texts`` in batches of ``settings.batch_size``; one :class:`DetectRecord` per text, in order."""
    import torch

    from rlvr_lab.analysis.lastde import (
        lastde,
        lastde_pp_from_logprobs,
        log_likelihood,
        log_rank,
        score_windows,
        seeded_generator,
        token_statistics,
    )

    need = settings.min_tokens()
    n_samples = settings.n_samples if "lastde_pp" in settings.methods else 0
    max_context = settings.max_context or int(getattr(model.config, "max_position_embeddings", 2048))
    carry = max_context // 2  # the carried-over prefix of every window after the first (module docstring)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    records: list[DetectRecord] = []
    for begin in range(0, len(texts), settings.batch_size):
        batch = texts[begin:begin + settings.batch_size]
        ids = [list(tokenizer(item.text).input_ids) if item.text.strip() else [] for item in batch]
        generators = None
        if n_samples:
            # one stream per (text, window): the draws do not depend on the batch a text falls in
            generators = [[seeded_generator(settings.seed, item.index, w, device=device)
                           for w in range(len(score_windows(len(x), max_context, carry)))]
                          for item, x in zip(batch, ids)]
        stats = token_statistics(model, ids, n_samples=n_samples, generators=generators, max_context=max_context,
                                 carry=carry, pad_id=pad_id, batch_size=settings.batch_size)
        for item, stat in zip(batch, stats):
            n = int(stat.logp.shape[0])
            record = DetectRecord(index=item.index, label=item.label, source=item.source, status="ok", n_tokens=n,
                                  windows=stat.windows, scores={m: None for m in settings.methods},
                                  preview=item.text[:80])
            if not item.text.strip():
                record.status = "empty"
            elif n < need:
                record.status = "too_short"
            else:
                with torch.no_grad():
                    for method in settings.methods:
                        if method == "lastde":
                            value = lastde(stat.logp, s=settings.lastde_s, eps_mult=settings.lastde_eps_mult,
                                           tau_max=settings.lastde_tau_max)
                        elif method == "lastde_pp":
                            assert stat.sample_logp is not None
                            value, metrics = lastde_pp_from_logprobs(
                                stat.logp, stat.sample_logp, s=settings.pp_s, eps_mult=settings.pp_eps_mult,
                                tau_max=settings.pp_tau_max)
                            record.lastde_pp_sample_mean = _finite(float(metrics["lastde_pp/sample_mean"]))
                            record.lastde_pp_sample_std = _finite(float(metrics["lastde_pp/sample_std"]))
                            record.lastde_pp_nonfinite_samples = int(metrics["lastde_pp/nonfinite_samples"])
                        elif method == "loglik":
                            value = log_likelihood(stat.logp)
                        else:
                            value = log_rank(stat.rank)
                        record.scores[method] = _finite(float(value))
            records.append(record)
        if advance is not None:
            advance(len(batch))
    return records


def run_detect(
    texts_path: str | os.PathLike[str],
    model: Any,
    *,
    settings: DetectSettings | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    progress: Progress | None = None,
) -> DetectResult:
    """Score every text of ``texts_path`` and, when labels are present, report AUROC per method.

    Args:
        texts_path: the JSONL input (module docstring).
        model: a model source for ``load_model_and_tokenizer`` (``"tiny"``, ``"smollm2-135m-instruct"``, a
            ``.gguf`` file, a model directory), or an object with ``.model`` and ``.tokenizer`` (a
            ``LoadedModel``).
        settings: methods and their parameters (default: all four, official parameters).
        out_dir: if given, ``records.jsonl`` (one line per text), ``detect.json`` (the summary) and
            ``detect.md`` (the table) are written there.
        device, dtype: passed to ``load_model_and_tokenizer`` for a source string.
        progress: optional progress callback over texts.

    Returns:
        A :class:`DetectResult` (summary dict, per-text records, Markdown table).
    """
    settings = settings or DetectSettings()
    texts = load_texts(texts_path)
    started = time.perf_counter()
    if isinstance(model, str):
        from rlvr_lab.models.loading import load_model_and_tokenizer

        loaded = load_model_and_tokenizer(model, device=device, dtype=dtype, seed=settings.seed)
        source = model
    else:
        loaded, source = model, str(getattr(model, "source", type(model.model).__name__))
    advance = progress(len(texts)) if progress is not None else None
    records = score_texts(loaded.model, loaded.tokenizer, texts, settings, advance=advance)
    results = method_results(records, settings.methods)
    wall = time.perf_counter() - started
    status_counts = {s: sum(r.status == s for r in records) for s in ("ok", "empty", "too_short")}
    summary: dict[str, Any] = {
        "model": source,
        "texts": str(texts_path),
        "n_texts": len(records),
        "n_scored": status_counts["ok"],
        "n_empty": status_counts["empty"],
        "n_too_short": status_counts["too_short"],
        "min_tokens": settings.min_tokens(),
        "n_labelled": sum(r.label is not None for r in records),
        "n_human": sum(r.label == 0 for r in records),
        "n_machine": sum(r.label == 1 for r in records),
        "n_multi_window": sum(r.windows > 1 for r in records),
        "mean_tokens": (sum(r.n_tokens for r in records if r.status == "ok") / status_counts["ok"]
                        if status_counts["ok"] else None),
        "max_context": settings.max_context or int(getattr(loaded.model.config, "max_position_embeddings", 0)),
        "windowing": WINDOWING,
        "interval": INTERVAL,
        "settings": asdict(settings),
        "methods": {r.method: {"title": METHOD_TITLES[r.method], "auroc": r.auroc,
                               "ci95": list(r.ci95) if r.ci95 else None, "n_human": r.n_human,
                               "n_machine": r.n_machine, "n_nonfinite": r.n_nonfinite, "note": r.note}
                    for r in results},
        "wall_s": round(wall, 2),
    }
    table = format_table(summary)
    if out_dir is not None:
        write_outputs(Path(out_dir), summary, records, table)
    return DetectResult(summary=summary, records=records, table=table)


def write_outputs(out: Path, summary: dict[str, Any], records: Sequence[DetectRecord], table: str) -> None:
    """``records.jsonl``, ``detect.json`` and ``detect.md`` in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "records.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    (out / "detect.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "detect.md").write_text(table + "\n")


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table: AUROC [95% interval] per method, with the counts it rests on."""
    lines = ["| method | AUROC | 95% interval | human | machine | undefined scores |", "|---|---:|---|---:|---:|---:|"]
    for method, row in summary["methods"].items():
        if row["auroc"] is None:
            auc, ci = "n/a", row["note"] or "n/a"
        else:
            auc, ci = f"{row['auroc']:.3f}", f"[{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]"
        lines.append(f"| {row['title']} | {auc} | {ci} | {row['n_human']} | {row['n_machine']} | {row['n_nonfinite']} |")
    lines.append("")
    lines.append(f"model {summary['model']}; {summary['n_texts']} texts: {summary['n_scored']} scored (mean "
                 f"{summary['mean_tokens'] or 0:.0f} tokens), {summary['n_empty']} empty, {summary['n_too_short']} "
                 f"shorter than {summary['min_tokens']} tokens (skipped), {summary['n_multi_window']} read in "
                 f"several windows; {summary['interval']}")
    return "\n".join(lines)


__all__ = [
    "METHODS",
    "DetectRecord",
    "DetectResult",
    "DetectSettings",
    "DetectText",
    "MethodResult",
    "auroc",
    "auroc_interval",
    "format_table",
    "load_texts",
    "method_results",
    "midranks",
    "run_detect",
    "score_texts",
    "write_outputs",
]
