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
    """Llama RMSNorm: normalise in float32, scale in the input dtype (as transformers does)."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    return weight * F.rms_norm(x.float(), weight.shape, None, eps).to(x.dtype)


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


class _LayerWeights:
    """One layer's projections for a generation: q/k/v and gate/up fused into single matmuls.

    Fusing copies the weights, so it is done once per ``generate`` call (the policy changes between
    calls) and only for models small enough that the copy is cheap; larger models use views.
    """

    def __init__(self, layer, fuse: bool):
        attn, mlp = layer.self_attn, layer.mlp
        self.in_norm = layer.input_layernorm.weight
        self.post_norm = layer.post_attention_layernorm.weight
        self.o_proj, self.o_bias, self.down = attn.o_proj.weight, attn.o_proj.bias, mlp.down_proj.weight
        self.fused = fuse
        if fuse:
            self.qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            projs = (attn.q_proj, attn.k_proj, attn.v_proj)
            has_bias = any(p.bias is not None for p in projs)
            self.qkv_bias = (
                torch.cat([p.bias if p.bias is not None else p.weight.new_zeros(p.out_features) for p in projs])
                if has_bias else None
            )
            self.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        else:
            self.attn, self.mlp = attn, mlp

    def qkv_proj(self, h: torch.Tensor, n_q: int, n_kv: int) -> tuple[torch.Tensor, ...]:
        if self.fused:
            return F.linear(h, self.qkv, self.qkv_bias).split([n_q, n_kv, n_kv], dim=-1)
        return self.attn.q_proj(h), self.attn.k_proj(h), self.attn.v_proj(h)

    def mlp_out(self, h: torch.Tensor) -> torch.Tensor:
        if self.fused:
            gate, up = F.linear(h, self.gate_up).chunk(2, dim=-1)
        else:
            gate, up = self.mlp.gate_proj(h), self.mlp.up_proj(h)
        return F.linear(F.silu(gate) * up, self.down)


# Fuse projections (a weight copy per generate call) below this many parameters.
FUSE_MAX_PARAMS = 1_000_000_000


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
        self.embed = model.model.embed_tokens.weight
        self.final_norm = model.model.norm.weight
        self.lm_head = model.lm_head
        self.fuse = sum(p.numel() for p in model.parameters()) < FUSE_MAX_PARAMS

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """Buffers for one generation, plus a snapshot of the layer weights and a RoPE table."""
        with torch.no_grad():
            self.layers = [_LayerWeights(layer, self.fuse) for layer in self.model.model.layers]
            pos = torch.arange(max_len, device=self.embed.device, dtype=torch.float32)
            freqs = pos.unsqueeze(-1) * self.inv_freq.to(pos.device)  # (L_max, hd/2)
            emb = torch.cat((freqs, freqs), dim=-1)
            self.cos_table = (emb.cos() * self.rope_scale).to(self.embed.dtype)  # (L_max, hd)
            self.sin_table = (emb.sin() * self.rope_scale).to(self.embed.dtype)
        return KVCache(len(self.layers), batch, self.n_kv, max_len, self.head_dim, self.embed.dtype, self.embed.device)

    def _attend_one(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decode-step attention for one query per row without expanding K/V to every query head.

        q (B, H, 1, hd); k, v (B, Hkv, S, hd); mask (B, 1, 1, S) additive float -> (B, H, 1, hd).
        """
        B = q.shape[0]
        rep = self.n_heads // self.n_kv
        qg = q.reshape(B, self.n_kv, rep, self.head_dim)  # heads sharing a K/V head side by side
        scores = torch.matmul(qg, k.transpose(-1, -2))  # (B, Hkv, rep, S)
        scores = scores.float() * self.scale + mask
        probs = torch.softmax(scores, dim=-1).to(v.dtype)
        return torch.matmul(probs, v).view(B, self.n_heads, 1, self.head_dim)

    def _forward(self, ids, positions, cache: KVCache, start: int, attn_mask) -> torch.Tensor:
        """Run all layers on ``ids`` (B, L) written at cache columns ``start:start+L``; returns the
        final-norm hidden state of the last position (B, d). ``attn_mask`` is (B, 1, L, end) for a
        prefill; a single-token step (L == 1) reads ``cache.key_valid`` instead."""
        B, L = ids.shape
        x = F.embedding(ids, self.embed)  # (B, L, d)
        cos = self.cos_table[positions].unsqueeze(1)  # (B, 1, L, hd)
        sin = self.sin_table[positions].unsqueeze(1)
        end = start + L
        n_q, n_kv = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        heads = self.n_heads + self.n_kv
        if L == 1:  # additive key mask shared by every layer of a decode step: (B, 1, 1, end)
            step_mask = torch.zeros(B, 1, 1, end, dtype=torch.float32, device=x.device)
            step_mask.masked_fill_(~cache.key_valid[:, None, None, :end], float("-inf"))
        for i, w in enumerate(self.layers):
            h = _rms_norm(x, w.in_norm, self.eps)
            q, k, v = w.qkv_proj(h, n_q, n_kv)
            # rotate queries and keys together: one set of RoPE ops per layer
            qk = torch.cat([q, k], dim=-1).view(B, L, heads, self.head_dim).transpose(1, 2)  # (B, H+Hkv, L, hd)
            qk = qk * cos + _rotate_half(qk) * sin
            q, k = qk[:, : self.n_heads], qk[:, self.n_heads :]
            v = v.view(B, L, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, L, hd)
            cache.k[i][:, :, start:end] = k
            cache.v[i][:, :, start:end] = v
            keys, values = cache.k[i][:, :, :end], cache.v[i][:, :, :end]
            if L == 1:
                o = self._attend_one(q, keys, values, step_mask)
            else:
                o = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=attn_mask, scale=self.scale, enable_gqa=self.n_kv != self.n_heads
                )  # (B, H, L, hd)
            x = x + F.linear(o.transpose(1, 2).reshape(B, L, n_q), w.o_proj, w.o_bias)
            x = x + w.mlp_out(_rms_norm(x, w.post_norm, self.eps))
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
        mask = None  # the decode step reads cache.key_valid directly
        hidden = self._forward(tokens.unsqueeze(-1), positions.unsqueeze(-1), cache, column, mask)
        return self.logits(hidden)
