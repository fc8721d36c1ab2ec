"""Per-layer-group gradient norms, the probe-set file, and the metric sinks."""

import json
import math
import warnings

import pytest
import torch

from rlvr_lab.diagnostics.grads import GradGroups, layer_groups
from rlvr_lab.diagnostics.probes import ProbeSet
from rlvr_lab.diagnostics.sinks import JsonlSink, Sinks, mlflow_key, require, scalars
from rlvr_lab.models.tiny import TinyModelConfig, build_tiny_model
from rlvr_lab.models.tokenizer import build_char_tokenizer
from rlvr_lab.train.observe import probe_batch

LLAMA_NAMES = [
    "model.embed_tokens.weight",
    *[f"model.layers.{i}.self_attn.q_proj.weight" for i in range(6)],
    *[f"model.layers.{i}.mlp.down_proj.weight" for i in range(6)],
    "model.norm.weight",
    "lm_head.weight",
]


def test_layer_groups_split_blocks_into_contiguous_bands():
    groups = layer_groups(LLAMA_NAMES, 3)
    assert groups[0] == "embed" and groups[-2:] == ["head", "head"]
    q = groups[1:7]  # q_proj of layers 0..5
    assert q == ["layers_0-1", "layers_0-1", "layers_2-3", "layers_2-3", "layers_4-5", "layers_4-5"]
    assert groups[7:13] == q  # mlp of the same layers, same bands
    # more groups than layers: one band per layer; GPT-2 style names
    assert layer_groups(["transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "transformer.ln_f.weight"], 4) == [
        "embed", "layers_0", "head"]
    with pytest.raises(ValueError, match="n_groups"):
        layer_groups(LLAMA_NAMES, 0)


def test_group_norms_add_up_to_the_total_norm():
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=4, num_heads=2, num_kv_heads=1,
                                             intermediate_size=64), tok)
    groups = GradGroups(model, n_groups=2)
    assert groups.norms() == {}  # no gradient yet
    ids = torch.randint(0, len(tok), (2, 9))
    model(ids, labels=ids).loss.backward()
    norms = groups.norms()
    assert set(norms) == {"grad_norm/embed", "grad_norm/layers_0-1", "grad_norm/layers_2-3", "grad_norm/head"}
    total = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    assert math.sqrt(sum(v * v for v in norms.values())) == pytest.approx(float(total), rel=1e-5)
    for p in model.model.layers[3].parameters():  # a band without gradient is left out, not reported as 0
        p.grad = None
    for p in model.model.layers[2].parameters():
        p.grad = None
    assert "grad_norm/layers_2-3" not in groups.norms()


def _probes(**kw):
    args = dict(prompt_ids=[[5, 6, 7], [8]], response_ids=[[1, 2], [3, 4, 9]],
                loss_mask=[[True, True], [True, False, True]], correct=[True, False], texts=["ab", "cde"])
    args.update(kw)
    return ProbeSet(**args)


def test_probe_set_round_trip_and_validation(tmp_path):
    probes = _probes(ref_logprobs=[[-0.5, -1.0], [-2.0, 0.0, -3.0]], meta={"task": "t"})
    path = tmp_path / "probes.json"
    probes.save(path)
    again = ProbeSet.load(path)
    assert again == probes and again.max_token_id == 9
    with pytest.raises(ValueError, match="response 1: 3 tokens but a loss mask of 2"):
        _probes(loss_mask=[[True, True], [True, False]])
    with pytest.raises(ValueError, match="correct has 1 entries"):
        _probes(correct=[True])
    with pytest.raises(ValueError, match="reference log-probs"):
        _probes(ref_logprobs=[[-0.5], [-2.0, 0.0, -3.0]])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ProbeSet.load(tmp_path / "missing.json")
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        ProbeSet.load(path)


def test_probe_batch_layout():
    probes = _probes(ref_logprobs=[[-0.5, -1.0], [-2.0, 0.0, -3.0]])
    b = probe_batch(probes, pad_id=0)
    assert b.response_start == 3
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert b.loss_mask.tolist() == [[True, True, False], [True, False, True]]
    assert b.ref_logprobs.tolist() == [[-0.5, -1.0, 0.0], [-2.0, 0.0, -3.0]]
    assert b.extras["correct"].tolist() == [True, False]


class _Broken:
    name = "broken"

    def __init__(self):
        self.closed = False

    def write(self, record):
        raise OSError("disk full")

    def close(self):
        self.closed = True


def test_sinks_drop_a_failing_mirror_but_not_the_record(tmp_path):
    broken = _Broken()
    sinks = Sinks([JsonlSink(tmp_path / "m.jsonl"), broken])
    with pytest.warns(UserWarning, match="'broken' failed and is switched off: OSError: disk full"):
        sinks.write({"stage": "rl", "step": 1, "reward/mean": 0.5})
    assert broken.closed and sinks.names == ["jsonl"]
    sinks.write({"stage": "rl", "step": 2, "reward/mean": 0.75})
    sinks.close()
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["reward/mean"] for r in lines] == [0.5, 0.75]
    primary = Sinks([_Broken()])
    with pytest.raises(OSError), warnings.catch_warnings():
        warnings.simplefilter("error")
        primary.write({"step": 1})


def test_scalars_keep_finite_numbers_only_and_mlflow_keys_are_legal():
    rec = {"stage": "rl", "step": 3, "a/x": 1, "a/y": float("nan"), "phase/label": "healthy", "flag": True, "b": 2.5}
    assert scalars(rec) == {"a/x": 1.0, "b": 2.5}
    assert mlflow_key("eval/pass@8_se") == "eval/pass_at_8_se"
    assert mlflow_key("reward/part:fmt") == "reward/part_fmt"
    with pytest.raises(RuntimeError, match=r"pip install 'rlvr-lab\[nope\]'"):
        require("surely_not_a_module_xyz", "nope")
