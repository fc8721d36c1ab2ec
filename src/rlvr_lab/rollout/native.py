"""A lean decoder forward for Llama-family models with a preallocated KV cache.

It reads the weights of a loaded ``transformers`` model in place (no copy), so the policy being
trained and the sampler always agree. Generation spends most of its time in per-step overhead on
small models; this path avoids the generic cache classes, mask builders and logits processors of
``generate`` and writes keys and values into fixed buffers. Supported: ``llama``, ``mistral``
(without sliding window) and ``qwen2``; other models use :class:`HFDecoder`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def native_supported(model) -> bool:
    cfg = model.config
    if getattr(cfg, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
        return False
    # sliding-window attention is not implemented here (mistral enables it by default, qwen2 by flag)
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", cfg.model_type == "mistral"):
        return False
    return hasattr(model, "model") and hasattr(model.model, "layers") and hasattr(model.model, "rotary_emb")


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KVCache:
    """Fixed buffers ``(B, n_kv_heads, L_max, head_dim)`` per layer, plus which key slots are real."""

    def __init__(self, n_layers: int, batch: int, n_kv: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, n_kv, max_len, head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.key_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)  # (B, L_max)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (drop finished sequences so later steps do less work)."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.key_valid = self.key_valid.index_select(0, rows)


class NativeDecoder:
    """Prefill and single-token decode steps over a :class:`KVCache` for a Llama-family model."""

    def __init__(self, model):
        if not native_supported(model):
            raise ValueError(f"model type {model.config.model_type!r} is not supported by the native decoder")
        self.model = model
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        rot = model.model.rotary_emb
        self.inv_freq = rot.inv_freq.float()
        self.rope_scale = float(getattr(rot, "attention_scaling", 1.0))
        self.layers = list(model.model.layers)
        self.embed = model.model.embed_tokens.weight
        self.final_norm = model.model.norm.weight
        self.lm_head = model.lm_head

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        return KVCache(len(self.layers), batch, self.n_kv, max_len, self.head_dim, self.embed.dtype, self.embed.device)

    def _rope(self, positions: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float().unsqueeze(-1) * self.inv_freq.to(positions.device)  # (B, L, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scale).to(dtype).unsqueeze(1)  # (B, 1, L, hd)
        sin = (emb.sin() * self.rope_scale).to(dtype).unsqueeze(1)
        return cos, sin

    def _forward(self, ids, positions, cache: KVCache, start: int, attn_mask) -> torch.Tensor:
        """Run all layers on ``ids`` (B, L) written at cache columns ``start:start+L``; returns the
        final-norm hidden state of the last position (B, d)."""
        B, L = ids.shape
        x = F.embedding(ids, self.embed)  # (B, L, d)
        cos, sin = self._rope(positions, x.dtype)
        end = start + L
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = _rms_norm(x, layer.input_layernorm.weight, self.eps)
            q = attn.q_proj(h).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
            k = attn.k_proj(h).view(B, L, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, L, hd)
            v = attn.v_proj(h).view(B, L, self.n_kv, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            cache.k[i][:, :, start:end] = k
            cache.v[i][:, :, start:end] = v
            o = F.scaled_dot_product_attention(
                q,
                cache.k[i][:, :, :end],
                cache.v[i][:, :, :end],
                attn_mask=attn_mask,
                scale=self.scale,
                enable_gqa=self.n_kv != self.n_heads,
            )  # (B, H, L, hd)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(B, L, self.n_heads * self.head_dim))
            h = _rms_norm(x, layer.post_attention_layernorm.weight, self.eps)
            mlp = layer.mlp
            x = x + mlp.down_proj(F.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        return _rms_norm(x[:, -1], self.final_norm, self.eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()  # (B, V)

    @torch.inference_mode()
    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Encode left-padded prompts (B, Lp); returns next-token logits (B, V) float32."""
        B, Lp = prompt_ids.shape
        positions = (prompt_mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, Lp)
        cache.key_valid[:, :Lp] = prompt_mask
        causal = torch.ones(Lp, Lp, dtype=torch.bool, device=prompt_ids.device).tril()
        mask = causal.unsqueeze(0) & prompt_mask.unsqueeze(1)  # (B, Lp, Lp)
        # a padded query row would attend to nothing (NaN); let it see itself, its output is unused
        mask = mask | torch.eye(Lp, dtype=torch.bool, device=prompt_ids.device).unsqueeze(0)
        hidden = self._forward(prompt_ids, positions, cache, 0, mask.unsqueeze(1))
        return self.logits(hidden)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, column: int) -> torch.Tensor:
        """Decode one token per row: ``tokens`` (B,) at ``positions`` (B,) into cache ``column``."""
        cache.key_valid[:, column] = True
        mask = cache.key_valid[:, None, None, : column + 1]  # (B, 1, 1, column+1)
        hidden = self._forward(tokens.unsqueeze(-1), positions.unsqueeze(-1), cache, column, mask)
        return self.logits(hidden)
