"""Loading a causal LM and its tokenizer: a tiny model from a config, a local HF directory, or a GGUF file.

Importing this package loads nothing heavy; transformers is loaded with the first model or tokenizer function.
"""

import importlib

# Names are imported on first use (PEP 562), so that importing one submodule (the config imports
# ``models.tiny`` for TinyModelConfig) does not load transformers.
_WHERE = {
    "render_prompt": "chat",
    "DTYPES": "loading", "SMOLLM2_ALIAS": "loading", "TINY_SOURCE": "loading", "LoadedModel": "loading",
    "load_model_and_tokenizer": "loading", "resolve_smollm2_gguf": "loading",
    "TinyModelConfig": "tiny", "build_tiny_model": "tiny", "tiny_llama_config": "tiny",
    "CHAR_CHAT_TEMPLATE": "tokenizer", "DEFAULT_TAGS": "tokenizer", "build_char_tokenizer": "tokenizer",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"rlvr_lab.models.{_WHERE[name]}"), name)


__all__ = [
    "CHAR_CHAT_TEMPLATE",
    "DEFAULT_TAGS",
    "DTYPES",
    "SMOLLM2_ALIAS",
    "TINY_SOURCE",
    "LoadedModel",
    "TinyModelConfig",
    "build_char_tokenizer",
    "build_tiny_model",
    "load_model_and_tokenizer",
    "render_prompt",
    "resolve_smollm2_gguf",
    "tiny_llama_config",
]
