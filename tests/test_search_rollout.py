"""Search-R1-style multi-turn rollouts: parsing, masks, turn limits, malformed tags, retriever failures."""

import dataclasses
import threading

import torch

from rlvr_lab.envs.retrievers import RETRIEVAL_FAILED, Passage, RetrievalError
from rlvr_lab.envs.search import SearchEnv, parse_action
from rlvr_lab.models.tokenizer import build_char_tokenizer
from rlvr_lab.rewards.qa import qa_exact_match_verifier
from rlvr_lab.rollout.engine import cut_at_stop
from rlvr_lab.rollout.multiturn import multi_turn_generate
from rlvr_lab.rollout.sampling import SamplingParams
from rlvr_lab.types import Generation

TOK = build_char_tokenizer()
STOPS = ("</search>", "</answer>")


class ScriptedEngine:
    """Stands in for RolloutEngine: row i of each call continues the script of the prompt it was given,
    one scripted turn per call, with log-prob -0.5 per token; rows that end on a stop string are
    reported through ``on_finish`` like the real engine."""

    def __init__(self, scripts: dict[str, list[str]], max_positions: int = 10_000):
        self.tokenizer = TOK
        self.pad_id = TOK.pad_token_id
        self.scripts = scripts
        self.calls: list[int] = []
        self.model = type("M", (), {"config": type("C", (), {"max_position_embeddings": max_positions})()})()

    def left_pad(self, prompts):
        lp = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), lp), self.pad_id)
        mask = torch.zeros(len(prompts), lp, dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, lp - len(p):] = torch.tensor(p)
            mask[i, lp - len(p):] = True
        return ids, mask

    def generate(self, prompts, params, *, seed=0, temperature_fn=None, on_finish=None):
        self.calls.append(len(prompts))
        outs, texts, truncated = [], [], []
        for j, p in enumerate(prompts):
            text = TOK.decode(p)
            key = next(k for k in self.scripts if text.startswith(k))
            turn = sum(text.count(s) for s in ("</information>", "[bad]"))
            script = self.scripts[key]
            out = script[turn] if turn < len(script) else "<answer>x</answer>"
            ids = TOK.encode(out, add_special_tokens=False)[: params.max_new_tokens]
            outs.append(ids)
            stopped = any(s in TOK.decode(ids) for s in params.stop_strings)
            truncated.append(not stopped)
            texts.append(cut_at_stop(TOK.decode(ids), params.stop_strings))
            if stopped and on_finish is not None:
                on_finish(j, ids)
        T = max(len(o) for o in outs)
        ids = torch.full((len(prompts), T), self.pad_id)
        valid = torch.zeros(len(prompts), T, dtype=torch.bool)
        for j, o in enumerate(outs):
            ids[j, : len(o)] = torch.tensor(o)
            valid[j, : len(o)] = True
        pids, pmask = self.left_pad(prompts)
        return Generation(pids, pmask, ids, valid, valid.clone(), torch.where(valid, -0.5, 0.0),
                          torch.tensor(truncated), texts)


class DictRetriever:
    def __init__(self, fail=False):
        self.fail = fail
        self.threads = set()

    def search(self, queries, k):
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RetrievalError("service down at http://127.0.0.1:9/retrieve")
        return [[Passage(id="1", title=q.title(), text=f"{q} lives in Oslo.")] for q in queries]


def make_env(retriever=None, max_turns=2, **kw):
    return SearchEnv(tokenizer=TOK, verifier=qa_exact_match_verifier(), retriever=retriever or DictRetriever(),
                     top_k=1, max_turns=max_turns, instruction="Q: ", invalid_message="[bad]",
                     use_chat_template=False, **kw)


def rollout(scripts, env, max_new_tokens=64, engine=None):
    engine = engine or ScriptedEngine(scripts)
    prompts = [TOK.encode(p, add_special_tokens=False) for p in scripts]
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, stop_strings=STOPS)
    return multi_turn_generate(engine, prompts, params, env, max_turns=env.max_turns), engine


def spans(gen, i):
    """(text, sampled) runs of row i."""
    ids, sampled = gen.response_ids[i][gen.response_mask[i]], gen.sampled_mask[i][gen.response_mask[i]]
    out, start = [], 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or sampled[k] != sampled[start]:
            out.append((TOK.decode(ids[start:k].tolist()), bool(sampled[start])))
            start = k
    return out


def test_parse_action_cases():
    assert parse_action("<think>x</think><search> q </search>") == ("search", "q")
    assert parse_action("<answer> Beijing </answer>") == ("answer", "Beijing")
    assert parse_action("<search>never closed") == ("invalid", "")
    assert parse_action("<search>   </search>") == ("invalid", "")
    assert parse_action("<search><answer>x</answer></search>") == ("invalid", "<answer>x</answer>")
    assert parse_action("<answer></answer>") == ("answer", "")
    assert parse_action("<search>a</search><answer>b</answer>") == ("search", "a")  # the first block wins


def test_search_then_answer_masks_observation_and_sets_action_ids():
    gen, _ = rollout({"Q: who": ["<think>hm</think><search>bob</search>", "<answer>Oslo</answer>"]}, make_env())
    runs = spans(gen, 0)
    assert runs == [("<think>hm</think><search>bob</search>", True),
                    ("\n\n<information>Doc 1(Title: Bob) bob lives in Oslo.</information>\n\n", False),
                    ("<answer>Oslo</answer>", True)]
    valid = gen.response_mask[0]
    actions = gen.action_ids[0][valid]
    sampled = gen.sampled_mask[0][valid]
    assert set(actions[sampled].tolist()) == {1, 2} and (actions[~sampled] == 0).all()
    assert (gen.sampler_logprobs[0][valid][~sampled] == 0).all() and (gen.sampler_logprobs[0][valid][sampled] == -0.5).all()
    # the answer mask covers exactly the final answer block
    assert TOK.decode(gen.response_ids[0][gen.answer_mask[0]].tolist()) == "<answer>Oslo</answer>"
    assert gen.counts["valid_search"].tolist() == [1.0] and gen.counts["answered"].tolist() == [1.0]
    assert gen.turns.tolist() == [2] and not gen.truncated[0]
    assert gen.texts[0].endswith("<answer>Oslo</answer>")
    assert make_env().score(gen.texts, [{"answers": ["oslo"]}])[0].value == 1.0


def test_information_span_including_tags_is_never_trained():
    gen, _ = rollout({"Q: a": ["<search>amy</search>", "<answer>x</answer>"]}, make_env())
    ids = gen.response_ids[0][gen.response_mask[0]].tolist()
    text_tokens = [TOK.decode([t]) for t in ids]
    lo, hi = text_tokens.index("<information>"), text_tokens.index("</information>")
    assert not gen.sampled_mask[0][lo : hi + 1].any()


def test_invalid_actions_get_the_message_masked_and_counted():
    scripts = {"Q: u": ["<search>never closed", "<search>  </search>", "<answer>y</answer>"]}
    gen, _ = rollout(scripts, make_env(max_turns=3), max_new_tokens=13)
    runs = spans(gen, 0)
    assert runs[1] == ("[bad]", False) and runs[3] == ("[bad]", False)
    assert gen.counts["invalid_action"].tolist() == [2.0] and "valid_search" not in gen.counts


def test_turn_limit_stops_tool_calls_and_rows_run_independently():
    scripts = {"Q: r1": ["<search>a</search>", "<search>b</search>", "<search>c</search>"],
               "Q: r2": ["<answer>z</answer>"]}
    engine = ScriptedEngine(scripts)
    gen, _ = rollout(scripts, make_env(max_turns=1), engine=engine)
    assert gen.counts["tool_calls"].tolist() == [1.0, 0.0]  # the last turn's search is not executed
    assert gen.turns.tolist() == [2, 1]
    assert engine.calls == [2, 1]  # the answered row leaves the batch
    assert spans(gen, 0)[-1] == ("<search>b</search>", True)
    assert gen.answer_mask[0].sum() == 0
    # the last turn is counted, not executed: row 1's search, row 2's answer (its only turn, not final)
    assert gen.counts["unexecuted_search"].tolist() == [1.0, 0.0]
    assert gen.counts["answered"].tolist() == [0.0, 1.0]


def test_an_answer_in_the_last_turn_is_counted():
    gen, _ = rollout({"Q: q": ["<search>a</search>", "<answer>x</answer>"]}, make_env(max_turns=1))
    assert gen.counts["answered"].tolist() == [1.0] and gen.counts["tool_calls"].tolist() == [1.0]


def test_failed_retrieval_becomes_an_observation_not_a_crash():
    retriever = DictRetriever(fail=True)
    gen, _ = rollout({"Q: f": ["<search>x</search>", "<answer>n</answer>"]}, make_env(retriever))
    assert spans(gen, 0)[1] == (f"\n\n<information>{RETRIEVAL_FAILED}</information>\n\n", False)
    assert gen.counts["failed_search"].tolist() == [1.0]
    assert retriever.threads and "MainThread" not in retriever.threads  # tool calls run on worker threads


def test_context_limit_truncates_instead_of_overflowing():
    scripts = {"Q: long": ["<search>a</search>", "<answer>x</answer>"]}
    engine = ScriptedEngine(scripts, max_positions=60)
    gen, _ = rollout(scripts, make_env(), max_new_tokens=20, engine=engine)
    assert bool(gen.truncated[0]) and gen.turns.tolist() == [1]


def test_demonstration_masks_observations():
    env = make_env()
    ids, mask = env.demonstration({"question": "where?", "queries": ["bob"], "answers": ["Oslo"]})
    text = TOK.decode([t for t, m in zip(ids, mask) if m])
    assert text == "<search>bob</search><answer>Oslo</answer><eos>"
    assert "lives in Oslo" in TOK.decode([t for t, m in zip(ids, mask) if not m])


def test_real_engine_multi_turn_is_consistent():
    from rlvr_lab.models.tiny import TinyModelConfig, build_tiny_model
    from rlvr_lab.rollout.engine import RolloutEngine

    model = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                             intermediate_size=64, max_position_embeddings=256), TOK)
    engine = RolloutEngine(model, TOK)
    env = make_env(max_turns=2)
    prompts = [TOK.encode("Q: hi", add_special_tokens=False)] * 6
    params = SamplingParams(temperature=1.0, max_new_tokens=12, stop_strings=STOPS)
    a = env.generate(engine, prompts, params, seed=3)
    b = env.generate(engine, prompts, params, seed=3)
    assert torch.equal(a.response_ids, b.response_ids)  # seeded
    assert not (a.sampled_mask & ~a.response_mask).any()
    assert ((a.action_ids > 0) == a.sampled_mask).all()
    assert (a.turns >= 1).all() and (a.turns <= 3).all()
    assert a.sampler_entropy is None
    c = env.generate(engine, prompts, dataclasses.replace(params, report_entropy=True), seed=3)
    assert torch.equal(c.response_ids, a.response_ids)
    assert ((c.sampler_entropy > 0) == c.sampled_mask).all()  # forced observation tokens report 0
