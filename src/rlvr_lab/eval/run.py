"""``rlvr eval``: one model (or two, paired) on a question set, every sample kept.

The model is anything the trainer loads (``tiny``, ``smollm2-135m-instruct``, a GGUF file, a local Hugging
Face directory) or a run directory, read as its last checkpoint with its own config: the prompt, the
answer extraction and the held-out questions are then the ones that run was trained and evaluated with.
Questions come from a reasoning-gym task (the trainer's held-out split of it) or a JSONL/Parquet file
(``question`` and ``answer``/``answers``, scored by exact match).

Writes to the output directory: ``samples.jsonl`` (one line per response: model, prompt id, sample index,
text, extracted answer, score, correct, token count), ``eval.json`` (metrics with 95% intervals, and the
paired differences with ``--compare``) and ``eval.md`` (the same as a Markdown table).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr_lab.config import Config, load_config
from rlvr_lab.eval.evaluate import (
    PER_PROMPT,
    EvalSamples,
    sample_eval,
    summarize,
)
from rlvr_lab.eval.intervals import normal_interval
from rlvr_lab.eval.passk import paired_difference

SAMPLES_FILE = "samples.jsonl"
RESULT_FILE = "eval.json"
TABLE_FILE = "eval.md"
EVAL_SEED = 1234
"""Sampling seed of ``rlvr eval`` unless ``--seed`` says otherwise; both models of a comparison share it."""


class EvalInputError(ValueError):
    """A model, task, data file or setting that ``rlvr eval`` cannot use; the message says why."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from, and the config of the run that trained it (None for a bare model)."""

    source: str
    label: str
    run_config: Path | None = None


def resolve_model(model: str) -> ModelSpec:
    """``model`` as a loader source. A run directory (``config.yaml`` and ``checkpoints/``) gives its final
    checkpoint (else its latest ``step-N``) and its config; an alias or an existing file or folder is used
    as is; anything else is an error before any model loads."""
    from rlvr_lab.models.loading import SMOLLM2_ALIAS, TINY_SOURCE

    if model in (TINY_SOURCE, SMOLLM2_ALIAS):
        return ModelSpec(model, model)
    path = Path(model)
    if not path.exists():
        raise EvalInputError(f"model {model!r} is neither {TINY_SOURCE!r}, {SMOLLM2_ALIAS!r}, a .gguf file, a model "
                             "directory nor a run directory: no such path")
    checkpoints = path / "checkpoints"
    if path.is_dir() and (path / "config.yaml").is_file() and checkpoints.is_dir():
        from rlvr_lab.train.checkpoint import step_checkpoints

        final = checkpoints / "final"
        steps = step_checkpoints(checkpoints)
        chosen = final if final.is_dir() else (steps[-1] if steps else None)
        if chosen is None:
            raise EvalInputError(f"run directory {path} has no checkpoint under {checkpoints}")
        return ModelSpec(str(chosen), model if chosen == final else f"{model} ({chosen.name})", path / "config.yaml")
    return ModelSpec(str(path), model)


@dataclass
class EvalRequest:
    """What ``rlvr eval`` was asked to do. ``overrides`` are ``key=value`` config overrides applied last."""

    model: str
    task: str | None = None
    data: str | None = None
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    questions: int | None = None  # default: the config's task.eval_size
    samples: int | None = None  # default: the config's eval.samples
    ks: list[int] | None = None  # default: the config's eval.k
    maj: list[int] | None = None  # default: the config's eval.maj (all samples)
    temperature: float | None = None
    seed: int = EVAL_SEED
    compare: str | None = None
    out: Path = Path("evals/latest")
    threads: int | None = None


def eval_config(request: EvalRequest, spec: ModelSpec) -> Config:
    """The config one model is evaluated with: the ``--config`` file, else the run's own config, else the
    defaults; then the request's task, data and settings; the user's overrides last."""
    if request.task and request.data:
        raise EvalInputError("give --task or --data, not both")
    base = request.config or (str(spec.run_config) if spec.run_config else None)
    settings = [f"model.source={spec.source}"]
    if request.task:
        settings += ["task.kind=reasoning_gym", f"task.name={request.task}", "task.config={}"]
    if request.data:
        settings += ["task.kind=qa", f"task.eval_path={request.data}", f"task.train_path={request.data}"]
    for key, value in (("task.eval_size", request.questions), ("eval.samples", request.samples),
                       ("eval.temperature", request.temperature), ("run.threads", request.threads)):
        if value is not None:
            settings.append(f"{key}={value}")
    if request.ks is not None:
        settings.append(f"eval.k={json.dumps(request.ks)}")
    if request.maj is not None:
        settings.append(f"eval.maj={json.dumps(request.maj)}")
    try:
        return load_config(base, overrides=[*settings, *request.overrides])
    except ValueError as exc:
        raise EvalInputError(str(exc)) from exc


def eval_questions(cfg: Config) -> tuple[Any, list[dict[str, Any]]]:
    """(task, questions): the trainer's held-out questions of a reasoning-gym task (same seed, same size), or
    the first ``task.eval_size`` rows of a data file."""
    t = cfg.task
    try:
        if t.kind == "reasoning_gym":
            from rlvr_lab.envs.tasks import ReasoningGymTask

            task = ReasoningGymTask(t.name, seed=t.seed + t.train_size, size=t.eval_size, config=t.config)
        elif t.kind == "qa":
            from rlvr_lab.envs.qa_data import load_qa_dataset
            from rlvr_lab.envs.tasks import QATask

            path = t.eval_path or t.train_path
            if path is None:
                raise EvalInputError("task.kind=qa needs a data file (--data FILE)")
            task = QATask(path, load_qa_dataset(path, limit=t.eval_size), reward=t.qa_reward)
        else:
            raise EvalInputError(f"rlvr eval reads reasoning-gym tasks and data files, not task.kind={t.kind!r}")
    except (FileNotFoundError, ValueError) as exc:
        raise EvalInputError(str(exc)) from exc
    return task, task.examples(len(task))


@dataclass
class ModelEval:
    """One model's evaluation: its samples and the metrics read from them."""

    label: str
    source: str
    samples: EvalSamples
    metrics: dict[str, Any]
    seconds: float


def load_engine(cfg: Config):
    """The rollout engine over ``cfg``'s model, loaded as the trainer loads it."""
    from rlvr_lab.models import load_model_and_tokenizer
    from rlvr_lab.threads import set_threads
    from rlvr_lab.train.loop import make_engine, pick_device

    set_threads(cfg.run.threads)
    loaded = load_model_and_tokenizer(cfg.model.source, tiny=cfg.model.tiny, dtype=cfg.model.dtype,
                                      device=pick_device(cfg.run.device), seed=cfg.run.seed)
    return make_engine(loaded.model, loaded.tokenizer, cfg.rollout)




def evaluate_model(cfg: Config, spec: ModelSpec, examples: list[dict[str, Any]], task, *, seed: int,
                   progress: Callable[[int], None] | None = None) -> ModelEval:
    """Load ``spec``'s model and run :func:`sample_eval` and :func:`summarize` with ``cfg``'s settings."""
    from rlvr_lab.train.environment import build_env

    if cfg.search.enabled:
        raise EvalInputError("rlvr eval runs single-turn tasks; search runs are evaluated by the trainer")
    engine = load_engine(cfg)
    env = build_env(cfg, engine.tokenizer, task, None)
    e, r = cfg.eval, cfg.rollout
    t0 = time.perf_counter()
    result = sample_eval(engine, env, examples, samples=e.samples, temperature=e.temperature,
                         max_new_tokens=r.max_new_tokens, stop_strings=r.stop_strings, greedy=e.greedy, seed=seed,
                         answer_fallback=cfg.task.answer_fallback, progress=progress)
    seconds = time.perf_counter() - t0
    return ModelEval(spec.label, spec.source, result, summarize(result, ks=e.k, maj=e.maj_ks()), seconds)


def metric_names(metrics: dict[str, Any]) -> list[str]:
    """The per-question metrics of a result, in report order: greedy, pass@k, maj@k."""
    return list(metrics[PER_PROMPT])


def paired_differences(a: ModelEval, b: ModelEval) -> dict[str, dict[str, float]]:
    """``b - a`` per metric over the same questions: mean, standard error of the per-question differences,
    and the 95% interval (normal approximation)."""
    out = {}
    for key in metric_names(a.metrics):
        if key in b.metrics[PER_PROMPT]:
            mean, se = paired_difference(a.metrics[PER_PROMPT][key], b.metrics[PER_PROMPT][key])
            low, high = normal_interval(mean, se)
            out[key] = {"mean": mean, "se": se, "low": low, "high": high}
    return out


def write_samples(path: Path, evals: Sequence[ModelEval], questions: Sequence[dict[str, Any]]) -> None:
    """Every response of every model, one JSON object per line (the greedy one has ``sample`` -1)."""
    with path.open("w") as fh:
        for ev in evals:
            for q, group in enumerate(ev.samples.by_question()):
                for s in group:
                    row = {"model": ev.label, "question_index": q, "question": questions[q]["question"], **s.as_dict()}
                    fh.write(json.dumps(row) + "\n")


def _cell(metrics: dict[str, Any], key: str) -> str:
    low, high = normal_interval(metrics[key], metrics[f"{key}_se"])
    return f"{metrics[key]:.3f} [{low:.3f}, {high:.3f}]"


def markdown_table(evals: Sequence[ModelEval], diffs: dict[str, dict[str, float]] | None) -> str:
    """Metrics per model as ``mean [95% interval]``; with two models a last row of paired differences."""
    keys = metric_names(evals[0].metrics)
    names = [k.removeprefix("eval/") for k in keys]
    lines = ["| model | questions x samples | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(keys)]
    for ev in evals:
        m = ev.metrics
        size = f"{int(m['eval/n_prompts'])} x {int(m['eval/samples'])}"
        lines.append(f"| {ev.label} | {size} | " + " | ".join(_cell(m, k) for k in keys) + " |")
    if diffs:
        cells = [f"{diffs[k]['mean']:+.3f} [{diffs[k]['low']:+.3f}, {diffs[k]['high']:+.3f}]" if k in diffs else "-"
                 for k in keys]
        lines.append(f"| {evals[1].label} - {evals[0].label} (paired) | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_eval(request: EvalRequest, *, progress: Callable[[str, int], Callable[[int], None]] | None = None
             ) -> dict[str, Any]:
    """Evaluate ``request.model`` (and ``request.compare`` on the same questions with the same sampling seed),
    write the three output files and return what ``eval.json`` holds. ``progress(label, total)`` may return
    a callback advanced per batch (the CLI's progress bar)."""
    specs = [resolve_model(request.model)] + ([resolve_model(request.compare)] if request.compare else [])
    if len(specs) == 2 and specs[1].run_config is None:  # a bare model is compared on the first one's setting
        specs[1] = ModelSpec(specs[1].source, specs[1].label, specs[0].run_config)
    configs = [eval_config(request, spec) for spec in specs]
    task, examples = eval_questions(configs[0])
    if len(configs) == 2:
        _, other = eval_questions(configs[1])
        if [q["question"] for q in other] != [q["question"] for q in examples]:
            raise EvalInputError(f"{specs[0].label} and {specs[1].label} resolve to different questions (their "
                                 "configs' tasks differ); pass --task, --data or --config so both use the same")
    evals = []
    for cfg, spec in zip(configs, specs):
        tick = progress(spec.label, 2 * len(examples) if cfg.eval.greedy else len(examples)) if progress else None
        evals.append(evaluate_model(cfg, spec, examples, task, seed=request.seed, progress=tick))
    diffs = paired_differences(evals[0], evals[1]) if len(evals) == 2 else None
    out = Path(request.out)
    out.mkdir(parents=True, exist_ok=True)
    write_samples(out / SAMPLES_FILE, evals, examples)
    cfg = configs[0]
    result = {
        "task": cfg.task.name if cfg.task.kind == "reasoning_gym" else cfg.task.eval_path,
        "questions": len(examples), "samples": cfg.eval.samples, "temperature": cfg.eval.temperature,
        "max_new_tokens": cfg.rollout.max_new_tokens, "rollout_mode": cfg.rollout.mode, "seed": request.seed,
        "interval": "95%, normal approximation over questions (mean ± 1.96 se)",
        "models": [{"label": ev.label, "source": ev.source, "seconds": ev.seconds,
                    "metrics": {k: v for k, v in ev.metrics.items() if k != PER_PROMPT}} for ev in evals],
    }
    if diffs is not None:
        result["paired_difference"] = {"of": f"{evals[1].label} - {evals[0].label}", **diffs}
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(evals, diffs)
    (out / TABLE_FILE).write_text(table)
    result["table"] = table
    return result
