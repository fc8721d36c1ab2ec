"""`rlvr select`: reading an eval samples file, a scripted selector through the batched prompt path, and
the command end to end on the tiny model (whose replies name no candidate: counted, never a crash)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from rlvr_lab.cli import app
from rlvr_lab.eval.selection.run import (
    BatchedSelector,
    Pool,
    SelectInputError,
    SelectSettings,
    read_pools,
    select_pool,
    summarize_selection,
)
from rlvr_lab.eval.selection.templates import GENSELECT_TEMPLATE, JUDGE_TEMPLATE

runner = CliRunner()


def write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def row(pid, sample, text, correct, answer=None, model="m"):
    return {"model": model, "prompt_id": pid, "question": f"q{pid}", "sample": sample, "text": text,
            "correct": correct, "answer": answer}


def test_read_pools_groups_sampled_responses_and_skips_greedy(tmp_path):
    path = tmp_path / "s.jsonl"
    write_samples(path, [row("a", -1, "g", True), row("a", 0, "x", False), row("a", 1, "y", True),
                         row("b", 0, "z", True)])
    pools = read_pools(path)
    assert [(p.prompt_id, p.texts, p.correct) for p in pools] == [("a", ["x", "y"], [False, True]), ("b", ["z"], [True])]


def test_read_pools_errors(tmp_path):
    path = tmp_path / "s.jsonl"
    write_samples(path, [row("a", 0, "x", False), {**row("a", 1, "y", True), "correct": "yes"}])
    with pytest.raises(SelectInputError, match=r"s.jsonl:2: field 'correct'"):
        read_pools(path)
    write_samples(path, [row("a", 0, "x", False, model="m1"), row("a", 0, "x", False, model="m2")])
    with pytest.raises(SelectInputError, match="2 models"):
        read_pools(path)
    assert len(read_pools(path, model="m2")) == 1
    with pytest.raises(SelectInputError, match="not found"):
        read_pools(tmp_path / "missing.jsonl")


class ScriptedEngine:
    """A selector that reads each prompt: in a game it names the solution containing RIGHT; as a judge it
    says Yes to a solution containing RIGHT. Prompts pass through as they are."""

    tokenizer = SimpleNamespace(chat_template=None)
    model = None

    def __init__(self):
        self.batches = []

    def encode(self, prompts):
        return list(prompts)

    def generate(self, prompts, params, seed=0):
        self.batches.append(len(prompts))
        texts = []
        for p in prompts:
            if "Proposed solution" in p:
                texts.append("Judgement: Yes" if "RIGHT" in p.split("Proposed solution")[1] else "Judgement: No")
            else:
                parts = re.split(r"\[Solution (\d+)\]", p)
                best = next((parts[i] for i in range(1, len(parts), 2) if "RIGHT" in parts[i + 1]), "1")
                texts.append(f"<best_solution>{best}</best_solution>")
        return SimpleNamespace(texts=texts, response_mask=torch.ones(len(texts), 2, dtype=torch.bool))


@pytest.mark.parametrize("method", ["genselect", "judge", "hybrid"])
def test_a_selector_that_sees_the_right_solution_picks_it(method):
    texts = ["wrong 1", "wrong 2", "RIGHT 3", "wrong 4", "wrong 5", "wrong 6"]
    pool = Pool("m", "q", "question", texts, [None] * 6, [t.startswith("RIGHT") for t in texts])
    settings = SelectSettings(method=method, n_s=2, n_j=3)
    engine = ScriptedEngine()
    selector = BatchedSelector(engine, settings)
    chosen = select_pool(pool, selector, settings, (GENSELECT_TEMPLATE, JUDGE_TEMPLATE), rng_seed=0)
    assert chosen.chosen == 2 and chosen.failed_comparisons == 0
    games = {"genselect": 5, "judge": 0, "hybrid": 4}[method]
    judged = {"genselect": 0, "judge": 6, "hybrid": 2}[method]
    assert chosen.games == games and chosen.judge_calls == judged * 3
    assert len(chosen.calls) == games + judged * 3 and chosen.tokens == 2 * len(chosen.calls)
    summary = summarize_selection([chosen], settings, 0.0)
    assert summary["selected"]["value"] == 1.0 and summary["random"]["value"] == pytest.approx(1 / 6)
    if judged:  # every verdict agrees with the verifier
        assert summary["judge"]["precision"]["value"] == 1.0 and summary["judge"]["recall"]["value"] == 1.0


@pytest.mark.parametrize("method", ["genselect", "hybrid"])
def test_a_wave_batches_questions_together_and_selects_as_one_at_a_time(method):
    pools = []
    for q in range(7):
        texts = [f"wrong {i}" for i in range(5)]
        texts[q % 5] = "RIGHT"
        pools.append(Pool("m", str(q), f"question {q}", texts, [None] * 5, [t == "RIGHT" for t in texts]))
    settings = SelectSettings(method=method, n_s=2, n_j=2)
    templates = (GENSELECT_TEMPLATE, JUDGE_TEMPLATE)
    alone_engine, wave_engine = ScriptedEngine(), ScriptedEngine()
    alone = [select_pool(p, BatchedSelector(alone_engine, settings), settings, templates, rng_seed=i)
             for i, p in enumerate(pools)]
    selector = BatchedSelector(wave_engine, settings, wave=4)
    together = []
    for lo in range(0, len(pools), 4):
        jobs = [lambda pos, lo=lo: select_pool(pools[lo + pos], selector, settings, templates, rng_seed=lo + pos,
                                               order=pos)] * len(pools[lo : lo + 4])
        together += selector.run_wave(jobs)
    assert [s.chosen for s in together] == [s.chosen for s in alone] == [q % 5 for q in range(7)]
    assert [s.calls for s in together] == [s.calls for s in alone]
    assert sum(wave_engine.batches) == sum(alone_engine.batches)  # the same calls...
    assert len(wave_engine.batches) < len(alone_engine.batches)  # ...in fewer, larger batches


def test_an_error_in_one_question_of_a_wave_is_raised_not_hung():
    settings = SelectSettings(method="genselect")
    selector = BatchedSelector(ScriptedEngine(), settings, wave=3)
    pool = Pool("m", "q", "question", ["a RIGHT", "b", "c"], [None] * 3, [True, False, False])

    def job(position):
        if position == 1:
            raise RuntimeError("boom")
        return select_pool(pool, selector, settings, (GENSELECT_TEMPLATE, JUDGE_TEMPLATE), 0, order=position)

    with pytest.raises(RuntimeError, match="boom"):
        selector.run_wave([job] * 3)


def test_cli_end_to_end_on_the_tiny_model(tmp_path):
    tiny = ["rollout.max_new_tokens=6", "model.tiny={hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, "
            "intermediate_size: 64, max_position_embeddings: 512}"]
    ev = runner.invoke(app, ["eval", "tiny", "--task", "chain_sum", "-n", "3", "-s", "4", "--k", "1",
                             "--out", str(tmp_path / "ev"), "--threads", "1", *tiny])
    assert ev.exit_code == 0, ev.output
    # short templates: the tiny selector reads characters and has 512 positions
    (tmp_path / "g.txt").write_text("{problem}\n{candidates}\nBest:")
    (tmp_path / "j.txt").write_text("{problem}\n{solution}\nJudgement:")
    result = runner.invoke(app, ["select", str(tmp_path / "ev" / "samples.jsonl"), "--selector", "tiny",
                                 "--method", "hybrid", "--n-s", "2", "--n-j", "2", "--max-new-tokens", "4",
                                 "--genselect-template", str(tmp_path / "g.txt"),
                                 "--judge-template", str(tmp_path / "j.txt"),
                                 "--out", str(tmp_path / "sel"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "sel" / "select.json").read_text())
    assert summary["questions"] == 3 and summary["candidates"] == 12
    valid = [r for r in map(json.loads, (tmp_path / "sel" / "selections.jsonl").read_text().splitlines())]
    assert summary["games"] == sum(r["games"] for r in valid) and summary["failed_comparisons"] <= summary["games"]
    assert summary["oracle"]["value"] >= summary["random"]["value"]
    assert summary["judge_calls"] == sum(r["judge_calls"] for r in valid)


def test_a_prompt_longer_than_the_selector_reads_is_a_clear_error(tmp_path):
    path = tmp_path / "s.jsonl"
    write_samples(path, [row("a", 0, "x" * 300, False), row("a", 1, "y" * 300, True)])
    result = runner.invoke(app, ["select", str(path), "--selector", "tiny", "--method", "genselect"])
    assert result.exit_code == 2 and "context" in result.output and "template" in result.output


def test_bad_method_and_template_fail_clearly(tmp_path):
    path = tmp_path / "s.jsonl"
    write_samples(path, [row("a", 0, "x", False)])
    result = runner.invoke(app, ["select", str(path), "--selector", "tiny", "--method", "vote"])
    assert result.exit_code == 2 and "method must be one of" in result.output
    bad = tmp_path / "t.txt"
    bad.write_text("no fields here")
    result = runner.invoke(app, ["select", str(path), "--selector", "tiny", "--judge-template", str(bad)])
    assert result.exit_code == 2 and "solution" in result.output
