"""Mislabel detection with For-Value (arXiv 2508.10180) on a corrupted supervised set.

Two settings, one per ``--task``:

* a reasoning-gym task (``chain_sum``, the default): questions answered in the warm-start's format
  (``<answer>N</answer>``), a fraction of the answers replaced by a wrong number (the correct one plus a
  nonzero offset in [-10, 10]); a clean validation set drawn with another seed. Summary:
  ``experiments/results/forvalue_mislabel.json``.
* ``sentiment``: template-built review sentences (subjects x clearly positive or negative adjectives x
  closing phrases x sentence frames, all in this file), asked as a one-word sentiment question in the chat
  template with the assistant turn begun as "The sentiment of this review is"; the response is the label
  alone (" positive" / " negative", one token each), so only the label position enters a representation
  (no answer-format wrapper, no EOS). Classes are balanced; a fraction of the training labels is flipped;
  the validation set is clean and disjoint. The model's zero-shot accuracy on the clean sets (is the true
  label more probable than the other one after the prompt) is measured first and reported. Scored with
  ``reduce=pairwise``: the row mean of the pairwise scores is the score against the validation mean
  (linearity; the runner's tests check it), and the pairwise rows also give a median aggregate. Summary:
  ``experiments/results/forvalue_mislabel_sentiment.json``.

Every training sample is scored against the validation set by ``rlvr value``'s runner; a low score should
flag a corrupted sample, so the detector is ``-score`` and its quality the AUROC (Mann-Whitney) with
corrupted = positive. The mean response log-likelihood (``-logprob_mean``, a loss-based detector) is scored
on the same forward passes as a reference. Each seed draws new samples and a new corruption; intervals over
seeds are Student's t (n = 3 seeds), per seed a stratified bootstrap. The summary has the shape of the lab's
sweep summaries (``experiments/results``): conditions, a ``chance`` baseline (AUROC 0.5) and claims with
verdicts; For-Value minus the log-likelihood baseline, paired by seed, is kept beside them.

    python scripts/forvalue_mislabel.py --difficulty easy                # the committed chain_sum summary
    python scripts/forvalue_mislabel.py --task sentiment                 # the committed sentiment summary
    python scripts/forvalue_mislabel.py --task sentiment --train 40 --val 10 --seeds 0 --out /tmp/m.json  # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIFFICULTIES = {
    "easy": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},  # the repository's test config
    "default": {},  # reasoning-gym's defaults: 2-6 terms of 1-4 digits (the trainer's default task)
}


def corrupt(answer: str, rng: random.Random) -> str:
    """A wrong answer: the correct integer plus a nonzero offset in [-10, 10]."""
    return str(int(answer) + rng.choice([d for d in range(-10, 11) if d != 0]))


def write_sets(folder: Path, task: str, config: dict, seed: int, n_train: int, n_val: int, fraction: float):
    from rlvr_lab.envs.tasks import split_train_eval

    train_task, val_task = split_train_eval(task, config=config, train_size=n_train, eval_size=n_val,
                                            seed=10_000 * (seed + 1))
    rng = random.Random(seed)
    bad = set(rng.sample(range(n_train), round(fraction * n_train)))
    train_rows = []
    for i in range(n_train):
        ex = train_task[i]
        answer = corrupt(ex["answer"], rng) if i in bad else ex["answer"]
        train_rows.append({"question": ex["question"], "answer": answer, "corrupted": i in bad})
    val_rows = [{"question": val_task[i]["question"], "answer": val_task[i]["answer"]} for i in range(n_val)]
    for name, rows in (("train.jsonl", train_rows), ("val.jsonl", val_rows)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [int(r["corrupted"]) for r in train_rows]


# ---- the sentiment set ----------------------------------------------------------------------------------------

SUBJECTS = ("the movie", "the film", "the book", "the restaurant", "the hotel", "the service", "the concert",
            "the game", "the show", "the meal", "the album", "the new phone", "the laptop", "the staff",
            "the trip", "the museum", "the play", "the coffee", "the app", "the course")
ADJECTIVES = {
    "positive": ("wonderful", "excellent", "fantastic", "delightful", "amazing", "superb", "brilliant", "lovely",
                 "outstanding", "great", "marvelous", "terrific", "charming", "impressive", "enjoyable", "perfect"),
    "negative": ("terrible", "awful", "horrible", "dreadful", "disappointing", "boring", "bad", "poor", "miserable",
                 "disgusting", "annoying", "useless", "pathetic", "unpleasant", "lousy", "frustrating"),
}
CLOSINGS = {
    "positive": ("I loved it", "I would recommend it to everyone", "I can't wait to go back", "It made my day"),
    "negative": ("I hated it", "I would not recommend it to anyone", "I want my money back", "It ruined my day"),
}
FRAMES = ("{Subject} was {adjective}. {closing}.", "Honestly, {subject} was {adjective}. {closing}.",
          "I thought {subject} was {adjective}. {closing}.", "{Subject} was really {adjective}. {closing}.")
LABELS = ("positive", "negative")
SENTIMENT_QUESTION = ("Is the sentiment of the following review positive or negative? Answer with one word.\n\n"
                      "Review: {text}")
SENTIMENT_LEAD = "The sentiment of this review is"  # begins the assistant turn; part of the prompt
SENTIMENT_RESPONSE = " {label}"


def sentiment_sentences(label: str) -> list[str]:
    """Every sentence of one class, in a fixed order (frames x subjects x adjectives x closings)."""
    return [frame.format(Subject=subject[0].upper() + subject[1:], subject=subject, adjective=adjective, closing=closing)
            for frame in FRAMES for subject in SUBJECTS for adjective in ADJECTIVES[label] for closing in CLOSINGS[label]]


def sentiment_sets(seed: int, n_train: int, n_val: int, fraction: float) -> tuple[list[dict], list[dict]]:
    """``(train, val)`` rows ``{text, label, true_label, corrupted}``: distinct sentences, each set balanced
    between the classes (an odd count gives the extra one to a class chosen by the seed), train and val
    disjoint, exactly ``round(fraction * n_train)`` training labels flipped (chosen uniformly); val is clean.
    Deterministic in ``seed``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    first = rng.choice(LABELS)
    order = (first,) + tuple(lab for lab in LABELS if lab != first)

    def counts(n: int) -> dict[str, int]:
        return {order[0]: n - n // 2, order[1]: n // 2}

    need_train, need_val = counts(n_train), counts(n_val)
    train, val = [], []
    for label in LABELS:
        pool = sentiment_sentences(label)
        if need_train[label] + need_val[label] > len(pool):
            raise ValueError(f"only {len(pool)} distinct {label} sentences, asked for {need_train[label] + need_val[label]}")
        drawn = [pool[i] for i in rng.sample(range(len(pool)), need_train[label] + need_val[label])]
        train += [{"text": t, "true_label": label} for t in drawn[: need_train[label]]]
        val += [{"text": t, "true_label": label} for t in drawn[need_train[label]:]]
    rng.shuffle(train)
    rng.shuffle(val)
    flipped = set(rng.sample(range(n_train), round(fraction * n_train)))
    for i, row in enumerate(train):
        other = next(lab for lab in LABELS if lab != row["true_label"])
        row.update(label=other if i in flipped else row["true_label"], corrupted=i in flipped)
    for row in val:
        row.update(label=row["true_label"], corrupted=False)
    return train, val


def sentiment_prompt(tokenizer, text: str) -> str:
    """The chat-rendered question with the assistant turn begun by :data:`SENTIMENT_LEAD`."""
    from rlvr_lab.models.chat import render_prompt

    return render_prompt(tokenizer, SENTIMENT_QUESTION.format(text=text)) + SENTIMENT_LEAD


def sentiment_rows(tokenizer, rows: list[dict]) -> list[dict]:
    """``rlvr value``'s prompt/response rows (the response is the label alone), keeping the generator's fields."""
    return [{"prompt": sentiment_prompt(tokenizer, r["text"]), "response": SENTIMENT_RESPONSE.format(label=r["label"]),
             **r} for r in rows]


def write_sentiment_sets(folder: Path, tokenizer, seed: int, n_train: int, n_val: int, fraction: float):
    """Writes ``train.jsonl`` and ``val.jsonl``; returns the corrupted flags and the clean rows (train with its
    true labels, then val) for the accuracy check."""
    train, val = sentiment_sets(seed, n_train, n_val, fraction)
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows(tokenizer, rows)))
    clean = [{**r, "label": r["true_label"], "corrupted": False} for r in train] + val
    return [int(r["corrupted"]) for r in train], clean


def label_accuracy(loaded, rows: list[dict], batch_size: int = 8):
    """Zero-shot check on clean rows: after each prompt, is the true label's token more probable than the
    other label's? Returns ``(stats, hidden)``: counts, the accuracy, how often the true label is the single
    most probable token and the mean probability of the true label; and the LM head's inputs at that position
    (n, d), which are every sample's ``h`` in For-Value (the response is one token). Labels must be one token
    each."""
    import torch

    from rlvr_lab.analysis.value import Sample, ValueSettings, encode_sample, response_states

    tokenizer, settings = loaded.tokenizer, ValueSettings()
    ids = {}
    for label in LABELS:
        pieces = tokenizer(SENTIMENT_RESPONSE.format(label=label), add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"label {label!r} is {len(pieces)} tokens; the accuracy check needs one")
        ids[label] = pieces[0]
    right = top = 0
    p_true = 0.0
    states = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start: start + batch_size]
        samples = []
        for r in batch:
            prompt_ids, _, _ = encode_sample(tokenizer, "prompt", sentiment_prompt(tokenizer, r["text"]), "", settings)
            samples.append(Sample(prompt_ids, [ids[r["true_label"]]]))
        hidden, logits, _, _ = response_states(loaded.model, samples)
        states.append(hidden[:, 0])
        logp = torch.log_softmax(logits[:, 0], dim=-1)  # (B, V): the position after the prompt
        for b, r in enumerate(batch):
            true_id = ids[r["true_label"]]
            other_id = next(ids[lab] for lab in LABELS if lab != r["true_label"])
            right += int(logp[b, true_id] > logp[b, other_id])
            top += int(int(logp[b].argmax()) == true_id)
            p_true += float(logp[b, true_id].exp())
    stats = {"n": len(rows), "correct": right, "accuracy": right / len(rows), "top1": top / len(rows),
             "mean_p_true": p_true / len(rows)}
    return stats, torch.cat(states)


def class_similarity(train_h, val_h, train_labels: list[str], val_labels: list[str]) -> dict:
    """How much the hidden states that For-Value multiplies (``<h_i, h_v>``) tell the classes apart: the mean
    inner product and cosine of train x val pairs of the same true class and of different classes."""
    import torch

    dots = train_h @ val_h.T  # (n_train, n_val)
    norms = train_h.norm(dim=-1, keepdim=True) * val_h.norm(dim=-1)
    same = torch.tensor([[a == b for b in val_labels] for a in train_labels])
    out = {}
    for name, values in (("dot", dots), ("cosine", dots / norms)):
        out[f"{name}_same_class"] = float(values[same].mean())
        out[f"{name}_other_class"] = float(values[~same].mean())
    return out


# ---- the run ----------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="chain_sum", help="a reasoning-gym task, or 'sentiment' for the built-in set")
    ap.add_argument("--difficulty", nargs="+", default=list(DIFFICULTIES), choices=list(DIFFICULTIES),
                    help="reasoning-gym tasks only")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--train", type=int, default=200, help="training samples per seed")
    ap.add_argument("--val", type=int, default=50, help="clean validation samples per seed")
    ap.add_argument("--fraction", type=float, default=0.2, help="share of training answers corrupted")
    ap.add_argument("--reduce", choices=["mean", "pairwise"], default=None,
                    help="the runner's reduction (default: mean for reasoning-gym tasks, pairwise for sentiment)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None,
                    help="default: experiments/results/forvalue_mislabel.json (forvalue_mislabel_sentiment.json "
                         "for --task sentiment)")
    args = ap.parse_args()
    sentiment = args.task == "sentiment"
    reduce = args.reduce or ("pairwise" if sentiment else "mean")
    name = "forvalue_mislabel_sentiment" if sentiment else "forvalue_mislabel"
    out_path = args.out or ROOT / "experiments" / "results" / f"{name}.json"

    import torch

    from rlvr_lab.analysis.detect import auroc, auroc_interval
    from rlvr_lab.analysis.value import ValueSettings, run_value
    from rlvr_lab.eval.intervals import mean_interval, paired_difference, wilson_interval
    from rlvr_lab.lab.results import verdict
    from rlvr_lab.models.loading import load_model_and_tokenizer

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    loaded = load_model_and_tokenizer(args.model)
    settings = ValueSettings(batch_size=args.batch_size, top_k=0, reduce=reduce)
    groups = ["sentiment"] if sentiment else list(args.difficulty)
    per_seed: dict[str, dict[str, dict[int, float]]] = {}
    intervals: dict[str, dict[int, list[float]]] = {}
    details, run_seconds, accuracy = [], [], {}
    for group in groups:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                t0 = time.perf_counter()
                if sentiment:
                    labels, clean = write_sentiment_sets(folder, loaded.tokenizer, seed, args.train, args.val, args.fraction)
                    accuracy[seed], states = label_accuracy(loaded, clean, args.batch_size)
                    truth = [r["true_label"] for r in clean]
                    accuracy[seed]["hidden_similarity"] = class_similarity(
                        states[: args.train], states[args.train:], truth[: args.train], truth[args.train:])
                else:
                    labels = write_sets(folder, args.task, DIFFICULTIES[group], seed, args.train, args.val, args.fraction)
                summary = run_value(folder / "train.jsonl", folder / "val.jsonl", args.model, settings,
                                    out_dir=folder / "out", loaded=loaded)
                seconds = time.perf_counter() - t0
                rows = [json.loads(line) for line in (folder / "out" / "scores.jsonl").read_text().splitlines()]
            run_seconds.append(seconds)
            detectors = {"forvalue": [-r["score"] for r in rows], "loglik": [-r["logprob_mean"] for r in rows]}
            if reduce == "pairwise":
                detectors["forvalue_pairwise_median"] = [-_median(r["pairwise"]) for r in rows]
            record = {"difficulty" if not sentiment else "task": group, "seed": seed, "n_train": len(rows),
                      "n_corrupted": sum(labels), "n_val": summary["n_val"], "seconds": seconds,
                      "score_mean_clean": _mean([r["score"] for r, y in zip(rows, labels) if not y]),
                      "score_mean_corrupted": _mean([r["score"] for r, y in zip(rows, labels) if y])}
            if sentiment:
                record["zero_shot"] = accuracy[seed]
            for detector, values in detectors.items():
                key = f"{detector}_{group}"
                per_seed.setdefault(key, {})[seed] = auroc(values, labels)
                intervals.setdefault(key, {})[seed] = list(auroc_interval(values, labels, seed=seed))
                record[f"auroc_{detector}"] = per_seed[key][seed]
                record[f"auroc_{detector}_ci95"] = intervals[key][seed]
            details.append(record)
            extra = f", zero-shot accuracy {accuracy[seed]['accuracy']:.3f}" if sentiment else ""
            print(f"{group:>9} seed {seed}: AUROC For-Value {record['auroc_forvalue']:.3f} "
                  f"[{record['auroc_forvalue_ci95'][0]:.3f}, {record['auroc_forvalue_ci95'][1]:.3f}], log-likelihood "
                  f"{record['auroc_loglik']:.3f}"
                  + (f", pairwise median {record['auroc_forvalue_pairwise_median']:.3f}" if reduce == "pairwise" else "")
                  + f" | {len(rows)} train ({sum(labels)} corrupted), {summary['n_val']} val{extra}, {seconds:.0f}s",
                  flush=True)

    chance = {seed: 0.5 for seed in args.seeds}
    conditions = {"chance": {"metrics": {"auroc": {"after": [0.5, 0.5, 0.5], "diff": None,
                                                   "per_seed": {str(s): 0.5 for s in args.seeds}}}}}
    for key, values in per_seed.items():
        conditions[key] = {"metrics": {"auroc": {
            "after": list(mean_interval(list(values.values()))),
            "diff": list(paired_difference(values, chance)),
            "per_seed": {str(s): v for s, v in values.items()},
            "per_seed_ci95": {str(s): v for s, v in intervals[key].items()},
        }}}
    what = "flipped sentiment labels" if sentiment else "corrupted answers"
    claims = []
    for group in groups:
        setting = "template sentiment, SmolLM2 zero-shot" if sentiment else f"{group} {args.task}"
        for detector, text in (("forvalue", f"For-Value (-score vs the clean validation mean) flags {what} better than chance"),
                               ("loglik", f"reference: the response log-likelihood flags {what} better than chance")):
            diff = conditions[f"{detector}_{group}"]["metrics"]["auroc"]["diff"]
            claims.append({"condition": f"{detector}_{group}", "metric": "auroc", "direction": "higher",
                           "text": f"{text} ({setting})", "diff": diff, "verdict": verdict(tuple(diff), "higher")})
    versus = {g: list(paired_difference(per_seed[f"forvalue_{g}"], per_seed[f"loglik_{g}"])) for g in groups}
    command = "OMP_NUM_THREADS=1 .venv/bin/python scripts/forvalue_mislabel.py " + " ".join(sys.argv[1:])
    result = {
        "name": name,
        "description": "For-Value (arXiv 2508.10180) detects mislabeled supervised samples: " + (
            f"template-built review sentences labelled ' positive'/' negative', {args.fraction:.0%} of the training "
            "labels flipped" if sentiment else
            f"{args.task} answers, {args.fraction:.0%} replaced by a wrong number") +
            ", scored by SmolLM2-135M-Instruct against a clean validation mean; AUROC of -score, corrupted = positive.",
        "baseline": "chance",
        "seeds": args.seeds,
        "base": None,
        "overrides": [],
        "compute": {"cells": len(details), "completed": len(details), "cell_seconds": sum(run_seconds)},
        "conditions": conditions,
        "claims": claims,
        "forvalue_minus_loglik_auroc": versus,
    }
    if sentiment:
        result["comparisons"] = [{
            "condition": f"forvalue_{g}", "reference": f"loglik_{g}", "metric": "auroc", "direction": "higher",
            "text": f"For-Value flags {what} better than the response log-likelihood (paired by seed)",
            "diff": versus[g], "verdict": verdict(tuple(versus[g]), "higher")} for g in groups]
        correct, total = sum(a["correct"] for a in accuracy.values()), sum(a["n"] for a in accuracy.values())
        result["zero_shot"] = {
            "what": "clean training (true labels) + validation rows: the true label's token more probable than the "
                    "other label's right after the prompt",
            "accuracy": correct / total, "wilson_ci95": list(wilson_interval(correct, total)), "correct": correct,
            "n": total, "top1": _mean([a["top1"] for a in accuracy.values()]),
            "mean_p_true": _mean([a["mean_p_true"] for a in accuracy.values()]),
            "per_seed": {str(s): a for s, a in accuracy.items()}}
        setup = {"model": args.model, "task": "sentiment", "n_train": args.train, "n_val": args.val,
                 "corrupted_fraction": args.fraction, "corruption": "the training label flipped to the other class",
                 "sentences": {"subjects": len(SUBJECTS), "adjectives_per_class": len(ADJECTIVES["positive"]),
                               "closings_per_class": len(CLOSINGS["positive"]), "frames": len(FRAMES),
                               "distinct_per_class": len(sentiment_sentences("positive"))},
                 "prompt": "chat template (default system message) of: " + SENTIMENT_QUESTION + ", then "
                           + repr(SENTIMENT_LEAD) + " begins the assistant turn",
                 "response": "' positive' or ' negative' (one token each; no EOS, no format wrapper)"}
    else:
        setup = {"model": args.model, "task": args.task,
                 "difficulties": {d: DIFFICULTIES[d] for d in args.difficulty},
                 "n_train": args.train, "n_val": args.val, "corrupted_fraction": args.fraction,
                 "corruption": "correct answer + a uniform nonzero offset in [-10, 10]",
                 "response": "<answer>{answer}</answer> + EOS after the chat-rendered question (the warm-start's sample)"}
    setup.update({"settings": {"reduce": reduce, "vocab": "all", "keep_ratio": 1.0, "batch_size": args.batch_size},
                  "threads": args.threads, "wall_seconds": time.perf_counter() - t_start, "command": command,
                  "device": "CPU", "torch": torch.__version__})
    if reduce == "pairwise":
        setup["pairwise_median"] = "detector -median_v s(i, v) over the validation samples (our choice of a robust aggregate)"
    result["setup"] = setup
    result["runs"] = details
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    if sentiment:
        z = result["zero_shot"]
        print(f"zero-shot accuracy on the clean sets: {z['accuracy']:.3f} [{z['wilson_ci95'][0]:.3f}, "
              f"{z['wilson_ci95'][1]:.3f}] ({z['correct']}/{z['n']}), top-1 {z['top1']:.3f}, mean p(true) {z['mean_p_true']:.3f}")
    for key, cond in conditions.items():
        if key != "chance":
            mean, low, high = cond["metrics"]["auroc"]["after"]
            print(f"{key:>34}: AUROC {mean:.3f} [{low:.3f}, {high:.3f}] over {len(args.seeds)} seeds")
    for g, (mean, low, high, n) in versus.items():
        print(f"For-Value - log-likelihood ({g}): {mean:+.3f} [{low:+.3f}, {high:+.3f}], {n} paired seeds")
    print(f"wrote {out_path} ({time.perf_counter() - t_start:.0f}s)")


def _mean(values):
    return sum(values) / len(values) if values else None


def _median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


if __name__ == "__main__":
    main()
