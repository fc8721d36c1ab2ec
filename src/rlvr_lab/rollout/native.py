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


def _unit_rms_norm(x: torch.Tensor, root_d_eps: torch.Tensor) -> torch.Tensor:
    """``rms_norm(x) / sqrt(d)`` in three kernels, for a norm whose ``weight * sqrt(d)`` is folded into the
    next projection: ``x / sqrt(|x|^2 + d*eps)``, with ``root_d_eps = sqrt(d*eps)`` (a 0-d tensor).
    On a CPU this is about half the time of ``F.rms_norm``, which runs as a chain of elementwise kernels.
    Below float32 the norm is taken in float32 (as transformers does) and its inverse applied in ``x``'s dtype."""
    if x.dtype in (torch.float32, torch.float64):
        return x / torch.hypot(torch.linalg.vector_norm(x, dim=-1, keepdim=True), root_d_eps)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    return x * torch.hypot(norm, root_d_eps).reciprocal().to(x.dtype)


class KVCache:
    """Per layer one buffer ``(2, B, n_kv_heads, L_max, head_dim)`` (keys, then values), so that one copy
    writes both, plus which key slots are real as an additive attention bias ``(B, n_kv_heads, L_max)``:
    0 for a real key, -inf for padding and for slots not written yet. The bias is repeated per key/value
    head so that a view of it, ``(B * n_kv_heads, 1, end)``, serves the batched attention matmuls."""

    def __init__(self, n_layers: int, batch: int, n_kv: int, max_len: int, head_dim: int, dtype, device):
        shape = (2, batch, n_kv, max_len, head_dim)
        self.kv = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.key_bias = torch.full((batch, n_kv, max_len), float("-inf"), dtype=dtype, device=device)

    def select(self, rows: torch.Tensor) -> None:
        """Keep ``rows`` (drop finished sequences so later steps do less work; a repeated row is copied)."""
        self.kv = [self._rows_of(kv, rows) for kv in self.kv]
        self.key_bias = self.key_bias.index_select(0, rows)

    def keys_values(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``(B * n_kv, end, head_dim)`` of a layer's keys and values in columns ``:end``, one
        batch entry per (row, key/value head), built directly (a third of the time of index + reshape)."""
        kv = self.kv[layer]
        _, batch, n_kv, max_len, head_dim = kv.shape
        size, stride, offset = (batch * n_kv, end, head_dim), (max_len * head_dim, head_dim, 1), kv.storage_offset()
        return kv.as_strided(size, stride, offset), kv.as_strided(size, stride, offset + kv[0].numel())

    def attention_bias(self, end: int) -> torch.Tensor:
        """``(B * n_kv, 1, end)``: the key bias of columns ``:end``, one row per attention batch entry (a view)."""
        return self.key_bias[:, :, None, :end].flatten(0, 1)

    @staticmethod
    def _rows_of(kv: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        # plane by plane: index_select along a leading dimension copies whole rows, several times
        # faster than along dimension 1
        out = kv.new_empty((2, len(rows), *kv.shape[2:]))
        for plane in range(2):
            torch.index_select(kv[plane], 0, rows, out=out[plane])
        return out


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


# Smallest weight (elements) worth packing. A packed oneDNN matmul has a larger fixed cost per call
# than the plain kernel, which skipping the repacking outweighs only for larger weights: on a 2-core
# CPU, whole 32 x 128-token generations with the tiny demo model (weights up to 128x768) ran 0.31 s
# with none of its weights packed, 0.34 s with those from 2^16 elements up and 0.39 s with all packed;
# SmolLM2-135M's projections (from 576x576) gain about 2x from packing.
PACK_MIN_NUMEL = 1 << 18


class _Linear:
    """``x W^T + b``, optionally plus a residual, for one generation.

    With ``pack_rows`` set and a weight of at least ``PACK_MIN_NUMEL`` elements, the weight is copied
    once into oneDNN's blocked layout, tuned for about that many input rows; its matmuls then skip the
    per-call repacking of the plain kernel (measured on a 2-core CPU at 32 rows: SmolLM2's 576x3072 MLP
    projection 955 -> 519 us, its 49k-row vocabulary projection 23.8 -> 10.1 ms). Without it, the plain weight is used as is (a view, no copy).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pack_rows: int | None):
        self.bias = bias
        if weight.numel() < PACK_MIN_NUMEL:
            pack_rows = None
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, pack_rows) if pack_rows else None
        # once packed, the plain weight (a fused copy, for q/k/v and gate/up) is not kept alive
        self.weight = None if self.packed is not None else weight
        # (in, out) view: a decode step's 2-D input goes straight to mm/addmm (F.linear goes through
        # matmul and transposes the weight on every call)
        self.weight_t = None if self.weight is None else weight.t()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if x.dim() == 2:
            return torch.mm(x, self.weight_t) if self.bias is None else torch.addmm(self.bias, x, self.weight_t)
        return F.linear(x, self.weight, self.bias)

    def add_to(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``residual + self(x)`` with the addition fused into the matmul."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.bias, "add")
        if self.bias is None and x.dim() == 2:
            return torch.addmm(residual, x, self.weight_t)
        return residual + self(x)


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t`` in ``dtype`` (itself when it already is; None stays None)."""
    return None if t is None else t.to(dtype)


def _bias_or_zeros(proj) -> torch.Tensor:
    return proj.bias if proj.bias is not None else proj.weight.new_zeros(proj.out_features)


class _LayerWeights:
    """One layer's projections for a generation.

    Fused (``fuse``), q/k/v become one matmul whose output is grouped by key/value head: the ``rep``
    query heads that share a key/value head (pre-multiplied by the attention scale head_dim^-0.5),
    then its key, then its value. Views of that output, (..., n_kv, rep + 2, head_dim), then give the
    queries of all groups as one batch of attention matmuls and each position's key and value as one
    copy into the cache. gate/up become one matmul as well. With ``fold_norms`` the two RMSNorm
    weights, times sqrt(d), are folded into the input columns of the projections that follow them
    (exact up to rounding: see :func:`_unit_rms_norm`). With ``interleave`` (used with ``fuse``) the output
    dimensions of each query and key head are reordered so that the two halves RoPE rotates together,
    ``i`` and ``i + head_dim/2``, sit side by side: the rotation is then one complex multiplication
    (see :meth:`NativeDecoder._rope_table`). Attention scores are dot products of a query and a key
    under the same reordering, so they do not change; values keep their order.

    Fusing and folding copy the weights, so they are done once per ``generate`` call (the policy
    changes between calls). Unfused, the model's own projections are used as they are.
    ``pack_rows`` lays the weights out for oneDNN as well (see :class:`_Linear`). ``dtype`` (fused
    only, or the model's own dtype) is the precision of every weight used: fusing and folding happen in
    the model's precision, then the copies are cast.
    """

    def __init__(self, layer, n_kv: int, rep: int, head_dim: int, *, fuse: bool, fold_norms: bool,
                 pack_rows: int | None, interleave: bool = False, dtype: torch.dtype | None = None):
        attn, mlp = layer.self_attn, layer.mlp
        self.n_kv, self.rep, self.head_dim = n_kv, rep, head_dim
        self.interleave = interleave  # NativeDecoder allows it only with fuse (complex_rope)
        self.scale = head_dim**-0.5
        dtype = dtype or layer.input_layernorm.weight.dtype  # another than the model's: NativeDecoder fuses

        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return _cast(t, dtype)

        in_norm, post_norm = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
        fold = fuse and fold_norms
        self.in_norm = None if fold else cast(in_norm)  # None: folded into qkv (and post_norm into gate_up)
        self.post_norm = None if fold else cast(post_norm)
        self.o_proj = _Linear(cast(attn.o_proj.weight), cast(attn.o_proj.bias), pack_rows)
        self.down = _Linear(cast(mlp.down_proj.weight), None, pack_rows)
        self.fused = fuse
        if not fuse:
            self.attn, self.mlp = attn, mlp
            return
        projs = (attn.q_proj, attn.k_proj, attn.v_proj)
        qkv = self._grouped(attn.q_proj.weight * self.scale, attn.k_proj.weight, attn.v_proj.weight)
        qkv_bias = None
        if any(p.bias is not None for p in projs):
            q_bias, k_bias, v_bias = (_bias_or_zeros(p) for p in projs)
            qkv_bias = self._grouped(q_bias * self.scale, k_bias, v_bias)
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        if fold:
            root_d = in_norm.shape[0] ** 0.5
            qkv = qkv * (in_norm * root_d)
            gate_up = gate_up * (post_norm * root_d)
        self.qkv = _Linear(cast(qkv), cast(qkv_bias), pack_rows)
        self.gate_up = _Linear(cast(gate_up), None, pack_rows)

    def _grouped(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q/k/v projection weights (heads * head_dim, d), or biases, stacked in key/value-head groups."""
        tail = q.shape[1:]
        q = q.reshape(self.n_kv, self.rep, self.head_dim, *tail)
        k = k.reshape(self.n_kv, 1, self.head_dim, *tail)
        v = v.reshape(self.n_kv, 1, self.head_dim, *tail)
        if self.interleave:  # dims 0, hd/2, 1, hd/2 + 1, ...: each rotated pair side by side
            half = torch.arange(self.head_dim // 2, device=q.device)
            order = torch.stack([half, half + self.head_dim // 2], dim=-1).flatten()
            q, k = q[:, :, order], k[:, :, order]
        return torch.cat([q, k, v], dim=1).reshape(-1, *tail)

    def qkv_grouped(self, h: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., n_kv, rep + 2, head_dim): per key/value head its scaled queries, key, value."""
        groups = (self.n_kv, self.rep + 2, self.head_dim)
        if self.fused:
            return self.qkv(h).unflatten(-1, groups)
        q = (self.attn.q_proj(h) * self.scale).unflatten(-1, (self.n_kv, self.rep, self.head_dim))
        k = self.attn.k_proj(h).unflatten(-1, (self.n_kv, 1, self.head_dim))
        v = self.attn.v_proj(h).unflatten(-1, (self.n_kv, 1, self.head_dim))
        return torch.cat([q, k, v], dim=-2)

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

    def __init__(self, model, *, fuse: bool | None = None, fold_norms: bool | None = None,
                 pack_weights: bool | None = None, complex_rope: bool | None = None,
                 dtype: torch.dtype | None = None, cache_dtype: torch.dtype | None = None):
        """Weight layouts, each redone on every ``new_cache`` (the policy changes between generations):

        - ``dtype``: the precision the decode runs in (weight copies, activations); ``None`` is the
          model's. A lower one than the model's (bfloat16 for a float32 policy) casts the fused
          copies, so the model being trained keeps its own precision; needs ``fuse``. Logits are
          returned in float32 either way.
        - ``cache_dtype``: the precision of the KV cache and of the decode steps' attention; ``None`` is
          ``dtype``, except on a CPU below float32, where it is float32: there bf16 batched matmuls of
          decode-attention shapes run at about half the speed of float32 ones (SmolLM2 at batch 32:
          795 vs 402 us per layer on a 2-core Xeon with AMX), and the attention has few FLOPs.
        - ``fuse``: one matmul for q/k/v and one for gate/up (copies the weights); ``None`` fuses
          models under ``FUSE_MAX_PARAMS`` parameters.
        - ``fold_norms``: fold the RMSNorm weights into the fused projections and the output head;
          ``None`` folds in float32 (in bf16 the norm is kept in float32, as transformers does).
          Needs ``fuse``.
        - ``pack_weights``: lay the weights out for oneDNN's CPU matmul (see :class:`_Linear`), those
          of at least ``PACK_MIN_NUMEL`` elements; ``None`` packs where that is supported and the
          projections are fused.
        - ``complex_rope``: rotate queries and keys by one complex multiplication, their head
          dimensions interleaved in the fused weights (see :class:`_LayerWeights`); ``None`` does so
          for float32 and float64 weights (torch has no bfloat16 complex type). Needs ``fuse``.
        """
        if not native_supported(model):
            raise ValueError(f"model type {model.config.model_type!r} is not supported by the native decoder")
        self.model = model
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.rep = self.n_heads // self.n_kv
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        rot = model.model.rotary_emb
        self.inv_freq = rot.inv_freq.float()
        self.rope_scale = float(getattr(rot, "attention_scaling", 1.0))
        self.embed = model.model.embed_tokens.weight
        self.final_norm = model.model.norm.weight
        self.lm_head = model.lm_head
        self.root_d_eps = torch.tensor((self.embed.shape[1] * self.eps) ** 0.5, device=self.embed.device)
        self.dtype = dtype or self.embed.dtype
        if not self.dtype.is_floating_point:
            raise ValueError(f"the decode dtype must be a floating-point type, got {self.dtype}")
        on_cpu_below_fp32 = self.dtype.itemsize < 4 and self.embed.device.type == "cpu"
        self.cache_dtype = cache_dtype or (torch.float32 if on_cpu_below_fp32 else self.dtype)
        cast = self.dtype != self.embed.dtype
        if fuse is None:
            fuse = cast or sum(p.numel() for p in model.parameters()) < FUSE_MAX_PARAMS
        if cast and not fuse:
            raise ValueError(f"decoding a {self.embed.dtype} model in {self.dtype} needs fuse: the weight "
                             "copies are what is cast")
        self.fuse = fuse
        if fold_norms and not fuse:
            raise ValueError("fold_norms needs fuse: the norms are folded into the fused weight copies")
        # folding happens in the model's precision, before any cast
        self.fold_norms = fuse and self.embed.dtype == torch.float32 if fold_norms is None else fold_norms
        supported = weight_packing_supported(self.dtype, self.embed.device)
        if pack_weights and not supported:
            raise ValueError(f"weight packing needs a CPU with oneDNN and fp32/bf16 weights, "
                             f"got {self.dtype} on {self.embed.device}")
        self.pack = supported and fuse if pack_weights is None else pack_weights
        if complex_rope and not fuse:
            raise ValueError("complex_rope needs fuse: the head dimensions are reordered in the fused weights")
        complex_dtypes = (torch.float32, torch.float64)
        self.complex_rope = fuse and self.dtype in complex_dtypes if complex_rope is None else complex_rope
        self.release()  # no generation yet: new_cache builds the weight snapshot

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """Buffers for one generation, plus a snapshot of the layer weights and a RoPE table."""
        with torch.no_grad():
            pack_rows = batch if self.pack else None
            self.layers = [
                _LayerWeights(layer, self.n_kv, self.rep, self.head_dim, fuse=self.fuse, fold_norms=self.fold_norms,
                              pack_rows=pack_rows, interleave=self.complex_rope, dtype=self.dtype)
                for layer in self.model.model.layers
            ]
            head = self.lm_head.weight
            self.head_norm = None if self.fold_norms else self.final_norm.to(self.dtype)  # None: folded into the head
            if self.fold_norms:
                head = head * (self.final_norm * self.embed.shape[1] ** 0.5)
            self.head = _Linear(head.to(self.dtype), _cast(self.lm_head.bias, self.dtype), pack_rows)
            self.rope_table = self._rope_table(max_len)
        return KVCache(len(self.layers), batch, self.n_kv, max_len, self.head_dim, self.cache_dtype, self.embed.device)

    def release(self) -> None:
        """Drop the weight snapshot and RoPE table of the last :meth:`new_cache` (fused and folded copies
        are as large as the model's own weights), so that nothing is held between generations."""
        self.layers, self.head, self.head_norm, self.rope_table = [], None, None, None

    def _rope_table(self, max_len: int) -> torch.Tensor:
        """Per position, the RoPE factors (arXiv 2104.09864, eq. 34) for the slots of a key/value-head
        group (:meth:`_LayerWeights.qkv_grouped`): queries and key rotated, the value slot passed through.

        Complex (``complex_rope``): (L_max, rep + 2, head_dim/2) of ``scale * exp(i * pos * freq)``,
        value slot 1, to multiply the interleaved pairs ``x[i] + i * x[i + hd/2]``. Real: (L_max, 2,
        rep + 2, head_dim) of cos and sin for ``x * cos + roll(x, hd/2) * sin'`` (value slot cos 1,
        sin 0), where ``sin'`` is the sine with its first half negated, so that
        ``rotate_half(x) * sin == roll(x, hd/2) * sin'``."""
        pos = torch.arange(max_len, device=self.embed.device, dtype=torch.float32)
        freqs = pos.unsqueeze(-1) * self.inv_freq.to(pos.device)  # (L_max, hd/2)
        if self.complex_rope:
            rotation = torch.polar(torch.full_like(freqs, self.rope_scale), freqs)  # (L_max, hd/2)
            table = torch.ones(max_len, self.rep + 2, self.head_dim // 2, dtype=rotation.dtype, device=pos.device)
            table[:, :-1] = rotation.unsqueeze(1)
            return table.to(torch.complex128 if self.dtype == torch.float64 else torch.complex64)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * self.rope_scale, emb.sin() * self.rope_scale  # (L_max, hd)
        half = self.head_dim // 2
        table = torch.zeros(max_len, 2, self.rep + 2, self.head_dim, device=pos.device)
        table[:, 0, :-1] = cos.unsqueeze(1)
        table[:, 0, -1] = 1.0
        table[:, 1, :-1] = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1).unsqueeze(1)
        return table.to(self.dtype)

    def _rope_factors(self, positions: torch.Tensor):
        """The table rows of ``positions`` (any shape P), shaped to broadcast against grouped q/k/v
        (*P, n_kv, rep + 2, head_dim): complex (*P, 1, rep + 2, hd/2), or real (cos, sin) each
        (*P, 1, rep + 2, hd)."""
        rows = self.rope_table.index_select(0, positions.flatten())
        if self.complex_rope:
            return rows.view(*positions.shape, 1, *rows.shape[1:])
        rows = rows.view(*positions.shape, *rows.shape[1:])
        return rows.narrow(-3, 0, 1), rows.narrow(-3, 1, 1)

    def _rotate(self, r: torch.Tensor, factors) -> torch.Tensor:
        """RoPE on grouped q/k/v ``r`` (..., n_kv, rep + 2, head_dim), value slot unchanged."""
        if self.complex_rope:  # one kernel: pairs (2i, 2i + 1) times exp(i * pos * freq_i)
            pairs = torch.view_as_complex(r.unflatten(-1, (self.head_dim // 2, 2)))
            return torch.view_as_real(pairs * factors).flatten(-2)
        cos, sin = factors
        return torch.addcmul(r * cos, r.roll(self.head_dim // 2, dims=-1), sin)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """RMSNorm, or (``weight`` None, folded into the next projection) the unit-scale one."""
        return _unit_rms_norm(x, self.root_d_eps) if weight is None else _rms_norm(x, weight, self.eps)

    def _forward(self, ids, positions, cache: KVCache, start: int, attn_mask, rows) -> torch.Tensor:
        """Run all layers on ``ids`` (B, L) written at cache ``rows``, columns ``start:start+L``; returns
        the final-norm hidden state of the last position (B, d). ``attn_mask`` is (B, 1, L, L).

        The last layer's keys and values are needed at every position, the rest of it (attention
        output, o_proj, MLP) only at the last one, whose logits are returned: it runs on that one."""
        B, L = ids.shape
        H, hd, rep = self.n_heads, self.head_dim, self.rep
        x = F.embedding(ids, self.embed).to(self.dtype)  # (B, L, d)
        rope = self._rope_factors(positions)  # shared by the kv heads
        end = start + L
        last = len(self.layers) - 1
        for i, w in enumerate(self.layers):
            r = self._rotate(w.qkv_grouped(self._norm(x, w.in_norm)), rope)  # (B, L, Hkv, rep + 2, hd)
            cache.kv[i][:, rows, :, start:end] = r[:, :, :, rep:].permute(3, 0, 2, 1, 4).to(cache.kv[i].dtype)  # (2, B, Hkv, L, hd)
            k, v = r[:, :, :, rep].transpose(1, 2), r[:, :, :, rep + 1].transpose(1, 2)  # (B, Hkv, L, hd)
            if i == last:  # from here on only the last position
                r, x, attn_mask = r[:, -1:], x[:, -1:], attn_mask[:, :, -1:]
            q = r[:, :, :, :rep].reshape(B, -1, H, hd).transpose(1, 2)  # (B, H, L or 1, hd), pre-scaled
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, scale=1.0, enable_gqa=self.n_kv != H
            )  # (B, H, L or 1, hd): a prompt attends to itself only
            x = w.o_proj.add_to(x, o.transpose(1, 2).reshape(B, -1, H * hd))
            x = w.down.add_to(x, w.gate_up_act(self._norm(x, w.post_norm)))
        return self._norm(x[:, -1], self.head_norm)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).float()  # (B, V)

    @torch.inference_mode()
    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cache: KVCache,
                rows: slice | torch.Tensor = slice(None), start: int = 0) -> torch.Tensor:
        """Encode left-padded prompts (n, L); returns next-token logits (n, V) float32.

        The prompts go to cache ``rows`` (a slice or n row indices) at columns ``start:start+L``, so
        that a batch can be prefilled in groups of similar length, each cut to its own longest prompt
        (``start`` > 0 for the shorter groups); the columns before ``start`` of those rows are zeroed
        and marked as padding.
        """
        n, L = prompt_ids.shape
        positions = (prompt_mask.long().cumsum(-1) - 1).clamp_min(0)  # (n, L)
        cache.key_bias[rows, :, :start] = float("-inf")
        bias = torch.where(prompt_mask, 0.0, float("-inf")).to(cache.key_bias.dtype)
        cache.key_bias[rows, :, start : start + L] = bias.unsqueeze(1)
        if start:  # never-written slots would feed garbage (possibly NaN) into the masked scores
            for kv in cache.kv:
                kv[:, rows, :, :start] = 0
        causal = torch.ones(L, L, dtype=torch.bool, device=prompt_ids.device).tril()
        mask = causal.unsqueeze(0) & prompt_mask.unsqueeze(1)  # (n, L, L)
        # a padded query row would attend to nothing (NaN); let it see itself, its output is unused
        mask = mask | torch.eye(L, dtype=torch.bool, device=prompt_ids.device).unsqueeze(0)
        hidden = self._forward(prompt_ids, positions, cache, start, mask.unsqueeze(1), rows)
        return self.logits(hidden)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, column: int) -> torch.Tensor:
        """Decode one token per row: ``tokens`` (B,) at ``positions`` (B,) into cache ``column``."""
        cache.key_bias[:, :, column] = 0.0
        return self.logits(self._decode(F.embedding(tokens, self.embed).to(self.dtype), positions, cache, column))

    @torch.inference_mode()
    def step_embeds(self, embeds: torch.Tensor, positions: torch.Tensor, cache: KVCache, column: int) -> torch.Tensor:
        """:meth:`step` fed input vectors ``embeds`` (B, d) instead of token ids (SwiReasoning's soft
        embeddings, arXiv 2510.05069); returns next-token logits (B, V) float32."""
        cache.key_bias[:, :, column] = 0.0
        return self.logits(self._decode(embeds.to(self.dtype), positions, cache, column))

    def _decode(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache, column: int) -> torch.Tensor:
        """The single-position forward of input vectors ``x`` (B, d), kept to a short, fixed list of kernels
        per layer on (B, d) activations: residual adds fused into the projections, queries, keys and values
        rotated in one pass (the value slot passes through), key and value written by one copy, and attention
        run as batched matmuls over (row, key/value head) pairs, the padding bias added inside the first."""
        B, H, Hkv, hd, rep = x.shape[0], self.n_heads, self.n_kv, self.head_dim, self.rep
        end = column + 1
        rope = self._rope_factors(positions)  # shared by the kv heads
        bias = cache.attention_bias(end)  # (B * Hkv, 1, end), shared by the layers
        attention_dtype = bias.dtype  # the cache's: float32 under a bf16 decode on a CPU (see __init__)
        exact_softmax = attention_dtype == torch.float32
        for i, w in enumerate(self.layers):
            r = self._rotate(w.qkv_grouped(self._norm(x, w.in_norm)), rope)  # (B, Hkv, rep + 2, hd)
            cache.kv[i][:, :, :, column] = r[:, :, rep:].permute(2, 0, 1, 3)  # (2, B, Hkv, hd)
            q = r[:, :, :rep].reshape(B * Hkv, rep, hd).to(attention_dtype)  # the query heads of each group
            keys, values = cache.keys_values(i, end)
            scores = torch.baddbmm(bias, q, keys.transpose(1, 2))  # (B * Hkv, rep, end)
            if exact_softmax:
                probs = torch.softmax(scores, dim=-1)
            else:
                probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(attention_dtype)
            x = w.o_proj.add_to(x, torch.bmm(probs, values).view(B, H * hd).to(x.dtype))
            x = w.down.add_to(x, w.gate_up_act(self._norm(x, w.post_norm)))
        return self._norm(x, self.head_norm)
