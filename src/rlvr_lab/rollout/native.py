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
        """Keep ``rows`` (drop finished sequences so later steps do less work; a repeated row is copied)."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.key_valid = self.key_valid.index_select(0, rows)


def weight_packing_supported(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether :class:`_Linear` can lay weights out for oneDNN's CPU matmul (fp32, or bf16 where the
    CPU has bf16 instructions)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


class _Linear:
    """``x W^T + b``, optionally plus a residual, for one generation.

    With ``pack_rows`` set, the weight is copied once into oneDNN's blocked layout, tuned for about
    that many input rows; its matmuls then skip the per-call repacking of the plain kernel (measured
    on a 2-core CPU at 32 rows: SmolLM2's 576x3072 MLP projection 955 -> 519 us, its 49k-row vocabulary
    projection 23.8 -> 10.1 ms). Without it, the plain weight is used as is (a view, no copy).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pack_rows: int | None):
        self.bias = bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, pack_rows) if pack_rows else None
        # once packed, the plain weight (a fused copy, for q/k/v and gate/up) is not kept alive
        self.weight = None if self.packed is not None else weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def add_to(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``residual + self(x)`` with the addition fused into the matmul."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.bias, "add")
        if self.bias is None and x.dim() == 2:
            return torch.addmm(residual, x, self.weight.t())
        return residual + F.linear(x, self.weight, self.bias)


def _concat_bias(projs) -> torch.Tensor | None:
    if all(p.bias is None for p in projs):
        return None
    return torch.cat([p.bias if p.bias is not None else p.weight.new_zeros(p.out_features) for p in projs])


class _LayerWeights:
    """One layer's projections for a generation: q/k/v and gate/up fused into single matmuls.

    Fusing copies the weights, so it is done once per ``generate`` call (the policy changes between
    calls) and only for models small enough that the copy is cheap; larger models use views.
    ``pack_rows`` lays the (fused) weights out for oneDNN as well (see :class:`_Linear`).
    """

    def __init__(self, layer, fuse: bool, pack_rows: int | None):
        attn, mlp = layer.self_attn, layer.mlp
        self.in_norm = layer.input_layernorm.weight
        self.post_norm = layer.post_attention_layernorm.weight
        self.o_proj = _Linear(attn.o_proj.weight, attn.o_proj.bias, pack_rows)
        self.down = _Linear(mlp.down_proj.weight, None, pack_rows)
        self.fused = fuse
        if fuse:
            projs = (attn.q_proj, attn.k_proj, attn.v_proj)
            self.qkv = _Linear(torch.cat([p.weight for p in projs]), _concat_bias(projs), pack_rows)
            self.gate_up = _Linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), None, pack_rows)
        else:
            self.attn, self.mlp = attn, mlp

    def qk_and_v(self, h: torch.Tensor, n_q: int, n_kv: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys side by side (..., n_q + n_kv), and values (..., n_kv)."""
        if self.fused:
            out = self.qkv(h)
            return out[..., : n_q + n_kv], out[..., n_q + n_kv :]
        return torch.cat([self.attn.q_proj(h), self.attn.k_proj(h)], dim=-1), self.attn.v_proj(h)

    def gate_up_act(self, h: torch.Tensor) -> torch.Tensor:
        """``silu(gate(h)) * up(h)``, the input of the down projection."""
        if self.fused:
            gate, up = self.gate_up(h).chunk(2, dim=-1)
        else:
            gate, up = self.mlp.gate_proj(h), self.mlp.up_proj(h)
        return F.silu(gate) * up


# Fuse projections (a weight copy per generate call) below this many parameters.
FUSE_MAX_PARAMS = 1_000_000_000


class NativeDecoder:
    """Prefill and single-token decode steps over a :class:`KVCache` for a Llama-family model."""

    def __init__(self, model, *, pack_weights: bool | None = None):
        """``pack_weights``: lay the weights out for oneDNN's CPU matmul on every ``new_cache`` (see
        :class:`_Linear`); ``None`` does so where it is supported and the projections are fused."""
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
        supported = weight_packing_supported(self.embed.dtype, self.embed.device)
        if pack_weights and not supported:
            raise ValueError(f"weight packing needs a CPU with oneDNN and fp32/bf16 weights, "
                             f"got {self.embed.dtype} on {self.embed.device}")
        self.pack = supported and self.fuse if pack_weights is None else pack_weights

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """Buffers for one generation, plus a snapshot of the layer weights and a RoPE table."""
        with torch.no_grad():
            pack_rows = batch if self.pack else None
            self.layers = [_LayerWeights(layer, self.fuse, pack_rows) for layer in self.model.model.layers]
            self.head = _Linear(self.lm_head.weight, self.lm_head.bias, pack_rows)
            pos = torch.arange(max_len, device=self.embed.device, dtype=torch.float32)
            freqs = pos.unsqueeze(-1) * self.inv_freq.to(pos.device)  # (L_max, hd/2)
            emb = torch.cat((freqs, freqs), dim=-1)
            self.cos_table = (emb.cos() * self.rope_scale).to(self.embed.dtype)  # (L_max, hd)
            self.sin_table = (emb.sin() * self.rope_scale).to(self.embed.dtype)
            # rotate_half(x) * sin == roll(x, hd/2) * (sin with its first half negated)
            half = self.head_dim // 2
            self.sin_signed_table = torch.cat([-self.sin_table[:, :half], self.sin_table[:, half:]], dim=-1)
        return KVCache(len(self.layers), batch, self.n_kv, max_len, self.head_dim, self.embed.dtype, self.embed.device)

    def _forward(self, ids, positions, cache: KVCache, start: int, attn_mask, rows: slice) -> torch.Tensor:
        """Run all layers on ``ids`` (B, L) written at cache ``rows``, columns ``start:start+L``; returns
        the final-norm hidden state of the last position (B, d). ``attn_mask`` is (B, 1, L, L)."""
        B, L = ids.shape
        x = F.embedding(ids, self.embed)  # (B, L, d)
        cos = self.cos_table[positions].unsqueeze(1)  # (B, 1, L, hd)
        sin = self.sin_table[positions].unsqueeze(1)
        end = start + L
        n_q, n_kv = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        heads = self.n_heads + self.n_kv
        for i, w in enumerate(self.layers):
            h = _rms_norm(x, w.in_norm, self.eps)
            qk, v = w.qk_and_v(h, n_q, n_kv)
            # rotate queries and keys together: one set of RoPE ops per layer
            qk = qk.reshape(B, L, heads, self.head_dim).transpose(1, 2)  # (B, H+Hkv, L, hd)
            qk = qk * cos + _rotate_half(qk) * sin
            q, k = qk[:, : self.n_heads], qk[:, self.n_heads :]
            v = v.reshape(B, L, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, L, hd)
            cache.k[i][rows, :, start:end] = k
            cache.v[i][rows, :, start:end] = v
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, scale=self.scale, enable_gqa=self.n_kv != self.n_heads
            )  # (B, H, L, hd): a prompt attends to itself only
            x = w.o_proj.add_to(x, o.transpose(1, 2).reshape(B, L, n_q))
            x = w.down.add_to(x, w.gate_up_act(_rms_norm(x, w.post_norm, self.eps)))
        return _rms_norm(x[:, -1], self.final_norm, self.eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).float()  # (B, V)

    @torch.inference_mode()
    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cache: KVCache,
                rows: slice = slice(None), start: int = 0) -> torch.Tensor:
        """Encode left-padded prompts (n, L); returns next-token logits (n, V) float32.

        The prompts go to cache ``rows`` at columns ``start:start+L``, so that a batch can be prefilled
        in groups of similar length, each cut to its own longest prompt (``start`` > 0 for the shorter
        groups); the columns before ``start`` of those rows are zeroed and marked as padding.
        """
        n, L = prompt_ids.shape
        positions = (prompt_mask.long().cumsum(-1) - 1).clamp_min(0)  # (n, L)
        cache.key_valid[rows, :start] = False
        cache.key_valid[rows, start : start + L] = prompt_mask
        if start:  # never-written slots would feed garbage (possibly NaN) into the masked scores
            for k, v in zip(cache.k, cache.v):
                k[rows, :, :start] = 0
                v[rows, :, :start] = 0
        causal = torch.ones(L, L, dtype=torch.bool, device=prompt_ids.device).tril()
        mask = causal.unsqueeze(0) & prompt_mask.unsqueeze(1)  # (n, L, L)
        # a padded query row would attend to nothing (NaN); let it see itself, its output is unused
        mask = mask | torch.eye(L, dtype=torch.bool, device=prompt_ids.device).unsqueeze(0)
        hidden = self._forward(prompt_ids, positions, cache, start, mask.unsqueeze(1), rows)
        return self.logits(hidden)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, column: int) -> torch.Tensor:
        """Decode one token per row: ``tokens`` (B,) at ``positions`` (B,) into cache ``column``."""
        cache.key_valid[:, column] = True
        return self.logits(self._decode(tokens, positions, cache, column))

    def _decode(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, column: int) -> torch.Tensor:
        """The single-position forward, kept two-dimensional (B, d) so that every layer is a short,
        fixed list of kernels: residual adds are fused into the projections, queries and
        keys are rotated together, and attention runs per key-value head without expanding it."""
        B, hd, H, Hkv = tokens.shape[0], self.head_dim, self.n_heads, self.n_kv
        n_q, n_kv, end = H * hd, Hkv * hd, column + 1
        x = F.embedding(tokens, self.embed)  # (B, d)
        cos = self.cos_table[positions].unsqueeze(1)  # (B, 1, hd)
        sin = self.sin_signed_table[positions].unsqueeze(1)
        mask = torch.zeros(B, 1, 1, end, dtype=torch.float32, device=x.device)  # additive, shared by layers
        mask.masked_fill_(~cache.key_valid[:, None, None, :end], float("-inf"))
        for i, w in enumerate(self.layers):
            qk, v = w.qk_and_v(_rms_norm(x, w.in_norm, self.eps), n_q, n_kv)
            qk = qk.reshape(B, H + Hkv, hd)
            qk = torch.addcmul(qk * cos, qk.roll(hd // 2, dims=-1), sin)  # RoPE on queries and keys
            cache.k[i][:, :, column] = qk[:, H:]
            cache.v[i][:, :, column] = v.reshape(B, Hkv, hd)
            q = qk[:, :H].reshape(B, Hkv, H // Hkv, hd)  # query heads grouped by their K/V head
            scores = torch.matmul(q, cache.k[i][:, :, :end].transpose(-1, -2))  # (B, Hkv, rep, end)
            probs = torch.softmax(torch.add(mask, scores.float(), alpha=self.scale), dim=-1).to(x.dtype)
            o = torch.matmul(probs, cache.v[i][:, :, :end]).reshape(B, n_q)
            x = w.o_proj.add_to(x, o)
            x = w.down.add_to(x, w.gate_up_act(_rms_norm(x, w.post_norm, self.eps)))
        return _rms_norm(x, self.final_norm, self.eps)
