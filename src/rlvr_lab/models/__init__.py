"""Loading a causal LM and its tokenizer: a tiny model from a config, a local HF directory, or a GGUF file.

Importing this package loads transformers and tokenizers but nothing from ``rlvr_lab.train`` or the backends.
"""

from rlvr_lab.models.chat import render_prompt
from rlvr_lab.models.loading import (
    DTYPES,
    SMOLLM2_ALIAS,
    TINY_SOURCE,
    LoadedModel,
    load_model_and_tokenizer,
    resolve_smollm2_gguf,
)
from rlvr_lab.models.tiny import TinyModelConfig, build_tiny_model, tiny_llama_config
from rlvr_lab.models.tokenizer import CHAR_CHAT_TEMPLATE, DEFAULT_TAGS, build_char_tokenizer

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
