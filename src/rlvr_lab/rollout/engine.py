"""The batched sampling engine: prompts in, a :class:`~rlvr_lab.types.Generation` out.

Every response token is marked *sampled* (by the policy) or *forced* (injected by an
environment); the trainer derives ``loss_mask`` from that mark alone. Sequences that finish
early are dropped from the batch as it runs, so the others do not pay for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rlvr_lab.rollout.native import KVCache, NativeDecoder, native_supported
from rlvr_lab.rollout.sampling import SamplingParams, sample_next, tempered_entropy
from rlvr_lab.types import Generation

# Compact the batch when at most this share of its rows is still running.
COMPACT_AT = 0.75

# Adaptive sampler: raw next-token logits (N, V) of the rows still decoding -> their temperatures (N,).
TemperatureFn = Callable[[torch.Tensor], torch.Tensor]
# Called as soon as a row stops (EOS or stop string) with its row index and sampled token ids, while the
# other rows keep decoding: a tool environment starts the tool call there (multi-turn rollouts).
FinishFn = Callable[[int, list[int]], None]


class _HFCache:
    """The generic path's cache: a transformers ``DynamicCache`` plus which key slots are real."""

    def __init__(self, batch: int, max_len: int, device):
        from transformers import DynamicCache

        self.kv = DynamicCache()
        self.key_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)

    def select(self, rows: torch.Tensor) -> None:
        self.kv.batch_select_indices(rows)
        self.key_valid = self.key_valid.index_select(0, rows)


def cache_kwarg(module) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` in 5.x; the name ``module.forward`` takes."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def distinct_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(first (U,), inverse (B,))`` of the distinct rows of ``x`` (B, L), or None when all differ.

    ``first[u]`` is the first row holding distinct row ``u`` and ``x[first[inverse]] == x``. Applied to
    left-padded prompts, it finds the prompt a GRPO group repeats G times.
    """
    _, inverse = torch.unique(x, dim=0, return_inverse=True)  # (B,)
    B = x.shape[0]
    n_distinct = int(inverse.max()) + 1 if B else 0
    if n_distinct == B:
        return None
    first = torch.full((n_distinct,), B, dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inverse, torch.arange(B, device=x.device), reduce="amin")
    return first, inverse


class HFDecoder:
    """Any causal LM through its own ``forward`` with a KV cache (slower, fully general)."""

    def __init__(self, model):
        self.model = model
        self.cache_arg = cache_kwarg(model)
        self.dtype = next(model.parameters()).dtype  # decodes the model as it is

    def new_cache(self, batch: int, max_len: int) -> _HFCache:
        return _HFCache(batch, max_len, self.model.device)

    def release(self) -> None:
        """Nothing to drop: this path keeps no state between generations."""

    def _logits(self, ids, positions, cache: _HFCache, end: int, embeds=None) -> torch.Tensor:
        inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
        out = self.model(
            **inputs,
            attention_mask=cache.key_valid[:, :end].long(),
            position_ids=positions,
            use_cache=True,
            **{self.cache_arg: cache.kv},
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def prefill(self, prompt_ids, prompt_mask, cache: _HFCache) -> torch.Tensor:
        cache.key_valid[:, : prompt_ids.shape[1]] = prompt_mask
        positions = (prompt_mask.long().cumsum(-1) - 1).clamp_min(0)
        return self._logits(prompt_ids, positions, cache, prompt_ids.shape[1])

    @torch.inference_mode()
    def step(self, tokens, positions, cache: _HFCache, column: int) -> torch.Tensor:
        cache.key_valid[:, column] = True
        return self._logits(tokens.unsqueeze(-1), positions.unsqueeze(-1), cache, column + 1)

    @torch.inference_mode()
    def step_embeds(self, embeds, positions, cache: _HFCache, column: int) -> torch.Tensor:
        """:meth:`step` fed input vectors ``embeds`` (B, d) instead of token ids (SwiReasoning's soft
        embeddings, arXiv 2510.05069)."""
        cache.key_valid[:, column] = True
        embeds = embeds.to(self.model.get_input_embeddings().weight.dtype).unsqueeze(1)  # (B, 1, d)
        return self._logits(None, positions.unsqueeze(-1), cache, column + 1, embeds=embeds)


class _StopChecker:
    """End-of-sequence ids and stop strings (checked on the decoded tail of each sequence)."""

    def __init__(self, tokenizer, eos_ids: Sequence[int], stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long)
        self.stop_strings = tuple(stop_strings)
        # A stop string needs at most one token per character (+1 for a token that straddles it).
        self.window = max((len(s) for s in self.stop_strings), default=0) + 1

    def done(self, tokens: torch.Tensor, history: torch.Tensor, rows: torch.Tensor, step: int) -> torch.Tensor:
        """tokens (N,) just sampled for original ``rows`` (N,); history (B, T) all sampled ids."""
        done = torch.isin(tokens, self.eos.to(tokens.device))
        if self.stop_strings:
            lo = max(0, step + 1 - self.window)
            for j in (~done).nonzero().flatten().tolist():
                tail = self.tokenizer.decode(history[rows[j], lo : step + 1].tolist())
                if any(s in tail for s in self.stop_strings):
                    done[j] = True
        return done

    def cut(self, text: str) -> str:
        return cut_at_stop(text, self.stop_strings)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """Cut decoded text just after the first stop string (unchanged when none occurs)."""
    ends = [text.find(s) + len(s) for s in stop_strings if s in text]
    return text[: min(ends)] if ends else text


def eos_token_ids(model, tokenizer) -> list[int]:
    """EOS ids from the tokenizer and the model's generation config (which may list several)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    extra = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
    if isinstance(extra, int):
        ids.append(extra)
    elif extra:
        ids.extend(int(i) for i in extra)
    return sorted(set(ids))


# A prefill call costs about as much as this many padding tokens (per-call overhead, smaller matmuls).
GROUP_CALL_TOKENS = 64


def length_groups(lengths: Sequence[int], width: int,
                  call_tokens: int = GROUP_CALL_TOKENS) -> list[tuple[torch.Tensor, int]]:
    """Split prompts into groups of similar length for prefill: ``[(rows, start), ...]``.

    ``lengths`` are the real token counts of left-padded prompts of ``width`` columns; each group is
    encoded from column ``start = width - (its longest prompt)``. The split of the prompts sorted by
    length minimises the encoded tokens (rows x group width) plus ``call_tokens`` per group (exact
    dynamic programme, O(n^2) for n prompts).
    """
    n = len(lengths)
    order = sorted(range(n), key=lambda i: -lengths[i])
    sorted_len = [lengths[i] for i in order]
    # best[j]: least cost of the first j sorted prompts; cut[j]: where the last group starts
    best, cut = [0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + (j - i) * sorted_len[i] + call_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        i = cut[j]
        groups.append((torch.tensor(order[i:j], dtype=torch.long), width - sorted_len[i]))
        j = i
    return groups[::-1]


class RolloutEngine:
    """Batched sampling with a KV cache for one model and tokenizer.

    The native decoder (preallocated cache, lean forward) is used for Llama-family models; any
    other causal LM goes through its own ``forward``. ``backend="hf"`` forces the generic path.
    Built with a SwiReasoning config, it decodes with :mod:`rlvr_lab.rollout.swireasoning` on the same
    decoder and cache (both decoders also take input vectors: ``step_embeds``).
    """

    def __init__(self, model, tokenizer, *, backend: str = "auto", swireasoning=None,
                 dtype: torch.dtype | None = None):
        """``swireasoning``, a :class:`~rlvr_lab.rollout.swireasoning.SwirConfig`, makes every
        :meth:`generate` call decode with SwiReasoning (arXiv 2510.05069) instead of plain sampling.
        ``dtype`` decodes in another precision than the model's (bfloat16 for a float32 policy) on cast
        copies of the weights; the model itself is not changed. It needs the native decoder."""
        if backend not in ("auto", "native", "hf"):
            raise ValueError(f"backend must be 'auto', 'native' or 'hf', got {backend!r}")
        self.model = model
        self.tokenizer = tokenizer
        use_native = backend == "native" or (backend == "auto" and native_supported(model))
        model_dtype = next(model.parameters()).dtype
        if dtype is not None and dtype != model_dtype and not use_native:
            raise ValueError(f"decoding a {model_dtype} model in {dtype} needs the native decoder (Llama-family "
                             f"models, backend 'auto' or 'native'); this one runs on the generic path")
        self.decoder = NativeDecoder(model, dtype=dtype) if use_native else HFDecoder(model)
        self.backend = "native" if use_native else "hf"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.swir = None
        if swireasoning is not None:  # imported here: the module builds on this one
            from rlvr_lab.rollout.swireasoning import SwiReasoning

            self.swir = SwiReasoning(swireasoning, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of already-rendered prompt strings (chat templates applied by the caller)."""
        return [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]

    def generate_text(self, prompts: Sequence[str], params: SamplingParams, *, seed: int = 0) -> Generation:
        return self.generate(self.encode(prompts), params, seed=seed)

    def left_pad(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        lp = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), lp), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(prompts), lp, dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, lp - len(p) :] = torch.as_tensor(p, dtype=torch.long)
            mask[i, lp - len(p) :] = True
        return ids.to(self.device), mask.to(self.device)

    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                max_len: int) -> tuple[torch.Tensor, KVCache | _HFCache]:
        """Next-token logits (B, V) and a cache of B rows for the left-padded prompts.

        A prompt repeated in the batch (a GRPO group asks for G responses to one prompt) is encoded
        once; its cache rows and logits are then copied to every row that repeats it. With the native
        decoder, prompts of very different lengths are encoded in groups of similar length
        (:func:`length_groups`), so that short prompts do not pay for the longest one's padding.
        """
        shared = distinct_rows(prompt_ids)
        first, inverse = shared if shared is not None else (None, None)
        if first is not None:
            prompt_ids, prompt_mask = prompt_ids[first], prompt_mask[first]
        n, width = prompt_ids.shape
        cache = self.decoder.new_cache(n, max_len)
        groups = (length_groups(prompt_mask.sum(-1).tolist(), width, GROUP_CALL_TOKENS)
                  if self.backend == "native" else None)
        if groups is None or len(groups) == 1:
            logits = self.decoder.prefill(prompt_ids, prompt_mask, cache)
        else:  # each group is written straight to its prompts' cache rows: no reordering afterwards
            logits = None
            for rows, start in groups:
                rows = rows.to(prompt_ids.device)
                part = self.decoder.prefill(prompt_ids[rows, start:], prompt_mask[rows, start:], cache, rows, start)
                if logits is None:
                    logits = part.new_empty(n, part.shape[-1])
                logits[rows] = part
        if inverse is None:
            return logits, cache
        # cache row u holds distinct prompt u: copy it to every output row that repeats it
        cache.select(inverse)
        return logits.index_select(0, inverse), cache

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, *, seed: int = 0,
        temperature_fn: TemperatureFn | None = None, on_finish: FinishFn | None = None,
    ) -> Generation:
        """Sample one continuation per prompt (repeat a prompt G times for a group).

        Reproducible: the same prompts, parameters and seed give the same tokens.
        ``temperature_fn`` turns on an adaptive sampler (HAPO, arXiv 2509.16591 section 8.5): at every
        decoding step it maps the raw logits of the rows still running to one temperature each; the
        ``sampler_logprobs`` are then those of each row's own tempered distribution.
        ``on_finish(row, ids)`` is called for each row that stops before ``max_new_tokens``, at the
        step it stops (rows cut by the length limit are not reported: the caller has them all at the end).
        """
        if temperature_fn is not None and params.greedy:
            raise ValueError("an adaptive temperature needs sampling (temperature > 0), not greedy decoding")
        if self.swir is not None and (temperature_fn is not None or on_finish is not None):
            raise ValueError("SwiReasoning decoding takes neither an adaptive temperature nor an on_finish "
                             "callback (multi-turn tool rollouts)")
        try:
            if self.swir is not None:
                return self.swir.generate(self, prompts, params, seed=seed)
            return self._generate(prompts, params, seed, temperature_fn, on_finish)
        finally:  # the decoder's per-call weight snapshot is not kept between calls
            self.decoder.release()

    def _generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, seed: int,
                  temperature_fn: TemperatureFn | None, on_finish: FinishFn | None) -> Generation:
        prompt_ids, prompt_mask = self.left_pad(prompts)
        B, Lp = prompt_ids.shape
        T = params.max_new_tokens
        max_pos = getattr(self.model.config, "max_position_embeddings", None)
        if max_pos is not None and Lp + T > max_pos:
            raise ValueError(f"prompt ({Lp}) + max_new_tokens ({T}) exceeds the model's {max_pos} positions")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        stopper = _StopChecker(self.tokenizer, self.eos_ids, params.stop_strings)

        out_ids = torch.full((B, T), self.pad_id, dtype=torch.long, device=self.device)
        out_logp = torch.zeros(B, T, dtype=torch.float32, device=self.device)
        out_ent = torch.zeros(B, T, dtype=torch.float32, device=self.device) if params.report_entropy else None
        out_valid = torch.zeros(B, T, dtype=torch.bool, device=self.device)
        truncated = torch.ones(B, dtype=torch.bool, device=self.device)

        logits, cache = self.prefill(prompt_ids, prompt_mask, Lp + T)
        rows = torch.arange(B, device=self.device)  # original row of each cache row
        alive = torch.ones(B, dtype=torch.bool, device=self.device)
        positions = prompt_mask.sum(-1)  # (B,) next position of each row
        n_alive, all_alive = B, True  # host-side counts: no device sync beyond one per step
        compacted = False  # whether finished rows were dropped from the cache (rows is then not 0..B-1)
        for step in range(T):
            live = None if all_alive else alive.nonzero().flatten()
            temps = None
            if temperature_fn is not None:  # finished rows keep T0; only running rows are adapted
                temps = torch.full((logits.shape[0],), params.temperature, device=logits.device)
                running = logits if live is None else logits[live]
                temps[slice(None) if live is None else live] = temperature_fn(running).to(temps.dtype)
            tokens, logp = sample_next(logits, params, generator, temps)
            r, tok, lp = (rows, tokens, logp) if live is None else (rows[live], tokens[live], logp[live])
            # until a row finishes, cache row i is output row i: plain slices write faster than indices
            at = slice(None) if live is None and not compacted else r
            out_ids[at, step] = tok
            out_logp[at, step] = lp
            if out_ent is not None:
                ent = tempered_entropy(logits, params, temps)
                out_ent[at, step] = ent if live is None else ent[live]
            out_valid[at, step] = True
            done = stopper.done(tok, out_ids, r, step)
            n_done = int(done.sum())
            if n_done:
                truncated[r[done]] = False
                if on_finish is not None:
                    for row in r[done].tolist():
                        on_finish(row, out_ids[row, : step + 1][out_valid[row, : step + 1]].tolist())
                alive[(torch.arange(len(alive), device=alive.device) if live is None else live)[done]] = False
                n_alive, all_alive = n_alive - n_done, False
            if n_alive == 0 or step == T - 1:
                break
            if n_alive <= COMPACT_AT * alive.numel():
                keep = alive.nonzero().flatten()
                cache.select(keep)
                rows, tokens, positions = rows[keep], tokens[keep], positions[keep]
                compacted = True
                alive = torch.ones(n_alive, dtype=torch.bool, device=self.device)
                all_alive = True
            logits = self.decoder.step(tokens, positions, cache, Lp + step)
            positions = positions + 1

        width = int(out_valid.sum(-1).max())
        out_ids, out_logp, out_valid = out_ids[:, :width], out_logp[:, :width], out_valid[:, :width]
        if out_ent is not None:
            out_ent = out_ent[:, :width]
        texts = [
            stopper.cut(self.tokenizer.decode(out_ids[i][out_valid[i]].tolist(), skip_special_tokens=True))
            for i in range(B)
        ]
        return Generation(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=out_ids,
            response_mask=out_valid,
            sampled_mask=out_valid.clone(),
            sampler_logprobs=out_logp,
            truncated=truncated,
            texts=texts,
            sampler_entropy=out_ent,
        )
