"""A tiny Llama-architecture model, built from a validated config, for CPU tests and testbeds.

It is a real ``transformers.LlamaForCausalLM``, so the same code paths (KV cache, ``generate``,
``save_pretrained`` to safetensors, ``AutoModelForCausalLM.from_pretrained``) serve it and a real checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # transformers (and torch) load with the first model built, not with the config
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


class TinyModelConfig(BaseModel):
    """Shape of the tiny Llama model. The vocabulary and special-token ids come from the tokenizer."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(4, gt=0, description="Number of decoder layers.")
    num_heads: int = Field(4, gt=0, description="Query heads per layer; must divide hidden_size.")
    num_kv_heads: int = Field(
        2, gt=0, description="Key/value heads per layer (grouped-query attention); must divide num_heads."
    )
    intermediate_size: int = Field(384, gt=0, description="Hidden width of the SwiGLU MLP.")
    max_position_embeddings: int = Field(
        512, gt=0, description="Longest sequence (prompt + completion) in tokens."
    )
    rope_theta: float = Field(10000.0, gt=0, description="Base period of the rotary position embedding.")
    tie_word_embeddings: bool = Field(
        True, description="Share the input embedding and the output projection."
    )
    init_std: float = Field(
        0.02, gt=0, le=1.0, description="Std of the normal init of the linear and embedding weights."
    )

    @model_validator(mode="after")
    def _check_head_layout(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_heads={self.num_heads} must be divisible by num_kv_heads={self.num_kv_heads}"
            )
        return self


def tiny_llama_config(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """Translate a ``TinyModelConfig`` and a tokenizer into the ``LlamaConfig`` that builds the model."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),  # len() counts added tokens; .vocab_size may not
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        initializer_range=cfg.init_std,
        tie_word_embeddings=cfg.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        attn_implementation="sdpa",
    )


def build_tiny_model(
    cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0
) -> LlamaForCausalLM:
    """Build a randomly initialised ``LlamaForCausalLM`` in float32 on the CPU, in eval mode.

    The same ``(cfg, tokenizer, seed)`` always gives the same weights. The global torch RNG is left as it was,
    so building a model never shifts the sampling stream of the caller.
    """
    config = tiny_llama_config(cfg, tokenizer)
    import torch
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()
