"""Tests of rlvr_lab.models: the character tokenizer, the tiny Llama, loading by source, prompt rendering."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub

import pydantic
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from rlvr_lab.models import (
    DEFAULT_TAGS,
    SMOLLM2_ALIAS,
    LoadedModel,
    TinyModelConfig,
    build_char_tokenizer,
    build_tiny_model,
    load_model_and_tokenizer,
    render_prompt,
)

torch.set_num_threads(1)

# Small enough to build and run in milliseconds, still exercising grouped-query attention.
SMALL = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)

ROUND_TRIP_TEXTS = [
    "",
    " ",
    "   leading and trailing   ",
    "two  spaces,  then   three",
    "line one\nline two\n\n",
    "\n starts with a newline",
    "<think>2 + 3 = 5</think> <answer>5</answer>",
    "<search>capital of France</search>\n<information>Paris</information>",
    "0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "unbalanced <answer tag and </answer",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def test_importing_models_stays_light():
    code = (
        "import sys, rlvr_lab.models; "
        "bad = sorted(m for m in sys.modules if m.startswith(('rlvr_lab.train', 'rlvr_lab.rollout', 'vllm')) "
        "or m in ('ray', 'verl', 'trl')); "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# ---------------------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_char_tokenizer_round_trips_exactly(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_every_alphabet_character_is_one_token(tokenizer):
    alphabet = "".join(chr(code) for code in range(32, 127)) + "\n"
    ids = tokenizer.encode(alphabet)
    assert len(ids) == len(alphabet)
    assert len(set(ids)) == len(alphabet)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == alphabet


def test_vocabulary_layout(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == (
        "<pad>",
        "<bos>",
        "<eos>",
        "<unk>",
    )
    assert tokenizer.convert_ids_to_tokens(list(range(4, 4 + len(DEFAULT_TAGS)))) == list(DEFAULT_TAGS)
    assert len(tokenizer) == 4 + len(DEFAULT_TAGS) + 95 + 1
    assert tokenizer.padding_side == "left"


@pytest.mark.parametrize("tag", DEFAULT_TAGS)
def test_tags_are_single_tokens(tokenizer, tag):
    ids = tokenizer.encode(f"a{tag}b")
    assert len(ids) == 3
    assert tokenizer.convert_ids_to_tokens(ids[1]) == tag


def test_custom_tags(tokenizer):
    custom = build_char_tokenizer(extra_special=("<tool>", "</tool>"))
    assert len(custom.encode("<tool>x</tool>")) == 3
    assert len(custom.encode("<answer>")) == len("<answer>")  # default tags are no longer tokens


def test_unknown_characters_become_unk(tokenizer):
    a, b = tokenizer.convert_tokens_to_ids(["a", "b"])
    unk = tokenizer.unk_token_id
    assert tokenizer.encode("a\tb\u00e9") == [a, unk, b, unk]
    assert tokenizer.decode([a, unk, b]) == "a<unk>b"


def test_no_special_tokens_added_on_encode(tokenizer):
    assert tokenizer("ab").input_ids == tokenizer.convert_tokens_to_ids(["a", "b"])


def test_skip_special_tokens_drops_pad_bos_eos_but_keeps_tags(tokenizer):
    body = "<think>x</think><answer>7</answer>"
    ids = [tokenizer.pad_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id]
    ids += tokenizer.encode(body) + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == body
    assert tokenizer.decode(ids) == f"<pad><pad><bos>{body}<eos>"


def test_left_padding(tokenizer):
    batch = tokenizer(["ab", "abcd"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, :2].tolist() == [tokenizer.pad_token_id] * 2
    assert batch.attention_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_tokenizer_save_and_reload_is_identical(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.added_tokens_decoder == tokenizer.added_tokens_decoder
    assert reloaded.all_special_tokens == tokenizer.all_special_tokens
    assert reloaded.padding_side == "left"
    assert reloaded.chat_template == tokenizer.chat_template
    for text in ROUND_TRIP_TEXTS:
        ids = tokenizer.encode(text)
        assert reloaded.encode(text) == ids
        assert reloaded.decode(ids, skip_special_tokens=True) == text


# ------------------------------------------------------------------------------------------------- chat


def test_chat_template_of_char_tokenizer(tokenizer):
    assert render_prompt(tokenizer, "What is 2+3?") == "<bos>user: What is 2+3?\nassistant: "
    assert render_prompt(tokenizer, "Q", system="Be brief.") == "<bos>system: Be brief.\nuser: Q\nassistant: "


def test_render_prompt_without_template(tokenizer):
    assert render_prompt(tokenizer, "Q", use_chat_template=False) == "Q"
    assert render_prompt(tokenizer, "Q", system="S", use_chat_template=False) == "S\nQ"
    bare = build_char_tokenizer()
    bare.chat_template = None
    assert render_prompt(bare, "Q", system="S") == "S\nQ"


def test_rendered_prompt_encodes_bos_once(tokenizer):
    ids = tokenizer.encode(render_prompt(tokenizer, "hi"))
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1


# ----------------------------------------------------------------------------------------------- tiny model


def test_tiny_model_forward_shape(tokenizer):
    model = build_tiny_model(SMALL, tokenizer)
    assert isinstance(model, LlamaForCausalLM)
    assert model.config._attn_implementation == "sdpa"
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (0, 1, 2)
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    batch = tokenizer(["abc", "hello"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 5, len(tokenizer))
    assert torch.isfinite(logits).all()


def test_tiny_model_default_config_builds(tokenizer):
    model = build_tiny_model(TinyModelConfig(), tokenizer)
    assert model.config.hidden_size == 128 and model.config.num_hidden_layers == 4
    assert model.config.num_key_value_heads == 2
    assert model.config.rope_parameters["rope_theta"] == 10000.0


def test_tiny_model_init_is_seeded(tokenizer):
    first = build_tiny_model(SMALL, tokenizer, seed=3).state_dict()
    again = build_tiny_model(SMALL, tokenizer, seed=3).state_dict()
    other = build_tiny_model(SMALL, tokenizer, seed=4).state_dict()
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_building_does_not_move_the_global_rng(tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(SMALL, tokenizer, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_model_save_and_reload_gives_identical_logits(tokenizer, tmp_path):
    model = build_tiny_model(SMALL, tokenizer, seed=1)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    assert isinstance(reloaded, LlamaForCausalLM)
    ids = torch.tensor([tokenizer.encode("<think>1+1</think>")])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        ({"hidden_size": 0}, "hidden_size", "0"),
        ({"num_layers": -1}, "num_layers", "-1"),
        ({"hidden_size": 130}, "hidden_size", "130"),
        ({"num_kv_heads": 3}, "num_kv_heads", "3"),
        ({"init_std": 0.0}, "init_std", "0.0"),
        ({"hidden": 64}, "hidden", "64"),
    ],
)
def test_tiny_config_errors_name_the_field_and_value(overrides, field, value):
    with pytest.raises(pydantic.ValidationError) as excinfo:
        TinyModelConfig(**overrides)
    message = str(excinfo.value)
    assert field in message and value in message


# ---------------------------------------------------------------------------------------------- loading


def test_load_tiny():
    loaded = load_model_and_tokenizer("tiny", tiny=SMALL, seed=5)
    assert isinstance(loaded, LoadedModel)
    assert (loaded.kind, loaded.source) == ("tiny", "tiny")
    assert loaded.model.config.hidden_size == SMALL.hidden_size
    assert loaded.model.config.use_cache
    assert not loaded.model.training
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token == "<pad>"
    expected = build_tiny_model(SMALL, loaded.tokenizer, seed=5)
    assert torch.equal(loaded.model.model.embed_tokens.weight, expected.model.embed_tokens.weight)


def test_load_tiny_in_bfloat16():
    loaded = load_model_and_tokenizer("tiny", tiny=SMALL, dtype="bfloat16")
    assert loaded.model.dtype == torch.bfloat16


def test_load_hf_directory(tokenizer, tmp_path):
    model = build_tiny_model(SMALL, tokenizer, seed=2)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model_and_tokenizer(str(tmp_path))
    assert (loaded.kind, loaded.source) == ("hf_dir", str(tmp_path))
    assert isinstance(loaded.model, LlamaForCausalLM)
    assert loaded.model.dtype == torch.float32 and loaded.model.config.use_cache
    assert loaded.tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded.tokenizer.padding_side == "left"
    ids = torch.tensor([tokenizer.encode("abc")])
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_load_hf_directory_falls_back_to_eos_for_padding(tokenizer, tmp_path):
    build_tiny_model(SMALL, tokenizer).save_pretrained(tmp_path)
    unpadded = build_char_tokenizer()
    unpadded.pad_token = None
    unpadded.padding_side = "right"
    unpadded.save_pretrained(tmp_path)
    loaded = load_model_and_tokenizer(str(tmp_path))
    assert loaded.tokenizer.pad_token == "<eos>"
    assert loaded.tokenizer.padding_side == "left"


@pytest.mark.parametrize("source", ["no/such/dir", "meta-llama/Llama-3.2-1B", "missing.gguf", "TINY"])
def test_load_rejects_unknown_sources(source):
    with pytest.raises(ValueError, match="Accepted sources") as excinfo:
        load_model_and_tokenizer(source)
    assert repr(source) in str(excinfo.value)


def test_load_rejects_directory_without_config(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_model_and_tokenizer(str(tmp_path))


def test_load_rejects_bad_dtype():
    with pytest.raises(ValueError, match="'float64'"):
        load_model_and_tokenizer("tiny", dtype="float64")


# ------------------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_smollm2_alias_loads_and_generates(tmp_path, monkeypatch):
    """The packaged GGUF, read once (and cached dequantised), then again from the cache: same model."""
    monkeypatch.setenv("RLVR_LAB_CACHE", str(tmp_path))
    loaded = load_model_and_tokenizer(SMOLLM2_ALIAS)
    model, tokenizer = loaded.model, loaded.tokenizer
    assert loaded.kind == "gguf" and loaded.source == SMOLLM2_ALIAS and loaded.cache_path is None
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.vocab_size == 49152
    assert model.dtype == torch.float32
    assert tokenizer.chat_template
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"

    prompt = render_prompt(tokenizer, "What is 2+3?")
    assert prompt.endswith("assistant\n")
    batch = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=8, do_sample=False)
        logits = model(**batch).logits
    completion = tokenizer.decode(output[0, batch.input_ids.shape[1] :], skip_special_tokens=True)
    assert output.shape[1] > batch.input_ids.shape[1]
    assert completion.strip()

    again = load_model_and_tokenizer(SMOLLM2_ALIAS)
    assert again.cache_path is not None and again.cache_path.parent.parent == tmp_path
    assert again.kind == "gguf" and isinstance(again.model, LlamaForCausalLM)
    assert render_prompt(again.tokenizer, "What is 2+3?") == prompt
    assert again.tokenizer(prompt).input_ids == batch.input_ids[0].tolist()
    assert (again.tokenizer.eos_token, again.tokenizer.pad_token) == (tokenizer.eos_token, tokenizer.pad_token)
    with torch.no_grad():
        assert torch.equal(again.model(**batch).logits, logits)
    half = load_model_and_tokenizer(SMOLLM2_ALIAS, dtype="bfloat16")
    assert half.cache_path == again.cache_path and half.model.dtype == torch.bfloat16


def test_gguf_cache_entry_follows_the_file(tmp_path, monkeypatch):
    """A new or edited GGUF file gets a new cache entry (never a stale copy); 'off' disables the cache."""
    from rlvr_lab.models.loading import _gguf_cache_entry

    monkeypatch.setenv("RLVR_LAB_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    first = _gguf_cache_entry(f)
    assert first.parent == tmp_path / "cache" / "gguf" and first.name.startswith("m-")
    assert _gguf_cache_entry(f) == first
    f.write_bytes(b"xy")
    assert _gguf_cache_entry(f) != first
    monkeypatch.setenv("RLVR_LAB_CACHE", "off")
    assert _gguf_cache_entry(f) is None


def test_gguf_cache_write_failure_is_a_warning(tmp_path):
    from rlvr_lab.models.loading import _write_cache_entry

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(SMALL, tokenizer)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not cache"):
        _write_cache_entry(model, tokenizer, blocker / "entry")
    entry = tmp_path / "gguf" / "entry"
    _write_cache_entry(model, tokenizer, entry)
    assert (entry / "config.json").is_file() and not list(entry.parent.glob("*.tmp-*"))
    reloaded = AutoModelForCausalLM.from_pretrained(str(entry))
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model.eval()(ids).logits)
