"""Fewer launches per Llama/Qwen2 decoder layer for the graph decoder: fused projections and small kernels.

A decoding step of a small batch is a long chain of launches (HF's Llama layer is about 30 of them:
eight per RMSNorm, ten for the rotary embedding, four for the cache update, three q/k/v and two gate/up
projections, ...), and in a CUDA graph each still costs microseconds. :func:`fuse_llama` replaces, in
place and with the same weights:

* every RMSNorm with :class:`~specattn.gpu.rmsnorm.FusedRMSNorm` (one launch);
* every attention module with :class:`FusedAttention`: one q/k/v projection (the three weights
  concatenated, and their biases where the model has them: Qwen2), one launch that rotates q and k and writes k and v into the decoder's static cache
  (:func:`specattn.gpu.kernels.fused_llama.rope_into_cache`), the decoder's attention
  (:func:`specattn.hooks.graph_attention.graph_attention`), the output projection;
* every MLP with :class:`FusedMLP`: one gate/up projection, one ``silu(gate) * up`` launch, the down
  projection;
* every decoder layer with :class:`FusedDecoderLayer`: the two residual adds inside the output and down
  projections (cuBLAS's ``beta = 1``; :func:`project_onto`; with ``down_split`` the down projection is
  :func:`specattn.gpu.kernels.skinny_gemm.skinny_linear`, its ``K`` in that many ranges in one launch where cuBLAS
  runs a split-K GEMM and a reduction).

A layer is then about 10 launches. ``fuse_llama(model, fold_norms=True)`` takes two more off: each layer's two
RMSNorms are folded into the projection after them (its weight times the norm's, ``W diag(g)``, rounded once to
the model's dtype; the projection then reads the norm's input), and the kernel after the projection (the rotary
+ cache write, the SiLU-mul) scales each row by its ``rsqrt(mean(x^2) + eps)`` and adds the q/k/v bias after:
the same function, rounded at other places (``experiment.fold_norms``: decode_real's and decode_bench's default
since the twenty-eighth session, 0.5 ms off every 32K batch-16 step on an H100, 0.9 ms at batch 1).

The fused modules serve only the graph decoder (its :class:`~specattn.decode.kv_cache.SequenceKVCache` and
``specattn_graph`` plans). On the CPU or in float32 they compute with HF's own functions
(``apply_rotary_pos_emb``, the cache's ``update``, ``silu``; a folded norm's scale in float32), so a fused model
gives the unfused model's output there (to float32 rounding where the norms are folded).
"""

from __future__ import annotations

import torch
from torch import nn

from ..gpu.rmsnorm import KERNEL_DTYPES, fuse_rmsnorms

MAX_EPILOGUE_ROWS = 32  # the most rows a one-launch projection takes (specattn.gpu.kernels.projection_epilogues)
#: the one-launch q/k/v projection's ((HB, BLOCK_K, stages, warps), K ranges): the H100's best at the draft's 16 rows
#: (scripts/gpu/profile_gemm.py epilogues, thirty-fourth session: 5.59 us against the two launches' 6.42)
QKV_EPILOGUE = ((32, 128, 4, 4), 8)
MAX_DOWN_SPLIT = 32  # the most K ranges of the one-launch down projection (skinny_gemm.MAX_SPLIT)
MAX_DOWN_ROWS = 128  # the most rows it takes (skinny_gemm.MAX_ROWS; more: cuBLAS)
DOWN_CONFIG = (16, 128, 4, 4)  # its (BLOCK_N, BLOCK_K, stages, warps)


def _use_kernels(x: torch.Tensor) -> bool:
    from ..gpu.kernels import available

    return available(x.device) and x.dtype in KERNEL_DTYPES


def _cache(kwargs: dict):
    """The decoder's cache, passed as ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    cache = kwargs.pop("cache", None)
    legacy = kwargs.pop("past_key_values", None)
    return cache if cache is not None else legacy


class FusedAttention(nn.Module):
    """A Llama attention module with one q/k/v projection and a fused rotary + cache write."""

    def __init__(self, attention: nn.Module, norm: nn.Module | None = None, epilogue_rows: int = 0):
        """``norm``: the RMSNorm before the attention, folded into the q/k/v projection (the module's input is
        then the norm's input). ``epilogue_rows``: forwards of at most this many rows (``B * T``, up to 32) run the
        projection, the rotary and the cache write in one launch
        (:func:`specattn.gpu.kernels.projection_epilogues.qkv_rope_into_cache` at :data:`QKV_EPILOGUE`) where the
        kernels run and the head size takes it; 0: two."""
        super().__init__()
        self.epilogue_rows = epilogue_rows_checked(epilogue_rows)
        self._qkv_workspace = None  # made at the first one-launch projection (the decoder's eager warm-up)
        for name in ("config", "layer_idx", "head_dim", "num_key_value_groups", "scaling"):
            setattr(self, name, getattr(attention, name))
        self.heads = attention.config.num_attention_heads
        self.kv_heads = attention.config.num_key_value_heads
        projections = [attention.q_proj, attention.k_proj, attention.v_proj]
        self.qkv = folded(torch.cat([p.weight for p in projections]), norm)
        self.norm_eps = None if norm is None else float(norm.variance_epsilon)
        biases = [p.bias for p in projections]
        if any(b is not None for b in biases) and not all(b is not None for b in biases):
            raise ValueError("fuse_llama: some but not all of q/k/v have a bias")
        self.qkv_bias = None if biases[0] is None else nn.Parameter(torch.cat(biases).detach(), requires_grad=False)
        self.o_proj = attention.o_proj

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, residual=None, **kwargs):
        """``residual`` (B, T, H): return ``residual + o_proj(attention)`` instead, the add fused into the output
        projection where the kernels run (``residual`` is updated in place and returned)."""
        from .graph_attention import graph_attention

        cache = _cache(kwargs)
        b, t, _ = hidden_states.shape
        query, keys, values = self.project(hidden_states, position_embeddings, cache)
        out, _ = graph_attention(self, query, keys, values, attention_mask, self.scaling, **kwargs)
        return project_onto(out.reshape(b, t, -1), self.o_proj.weight, residual), None

    def project(self, hidden_states, position_embeddings, cache):
        """The rotated query ``(B, Hq, T, D)`` of ``hidden_states (B, T, H)`` and the cache's keys and values of this
        layer with this forward's written at its lengths."""
        b, t, _ = hidden_states.shape
        fold = self.norm_eps is not None  # the bias is added after the folded norm's row scale
        cos, sin = position_embeddings
        if b * t <= self.epilogue_rows and _use_kernels(hidden_states) and _qkv_rope_fits(b * t, self.head_dim):
            from ..gpu.kernels.projection_epilogues import qkv_rope_into_cache, qkv_rope_workspace

            config, split = QKV_EPILOGUE
            if split > 1 and self._qkv_workspace is None:
                self._qkv_workspace = qkv_rope_workspace(MAX_EPILOGUE_ROWS, self.heads, self.kv_heads,
                                                         self.head_dim, split, config, hidden_states.device)
            keys, values = cache.keys[self.layer_idx], cache.values[self.layer_idx]
            query = qkv_rope_into_cache(hidden_states, self.qkv, cos, sin, cache.lengths, self.heads, self.kv_heads,
                                        keys, values, self.norm_eps, self.qkv_bias, config=config, split_k=split,
                                        workspace=self._qkv_workspace)
            return query, keys, values
        qkv = nn.functional.linear(hidden_states, self.qkv, None if fold else self.qkv_bias)  # (B, T, (Hq+2Hkv) D)
        if _use_kernels(qkv):
            from ..gpu.kernels.fused_llama import rope_into_cache

            keys, values = cache.keys[self.layer_idx], cache.values[self.layer_idx]
            query = rope_into_cache(qkv, cos, sin, cache.lengths, self.heads, self.kv_heads, keys, values,
                                    hidden_states if fold else None, self.norm_eps or 0.0,
                                    self.qkv_bias if fold else None)
        else:
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

            if fold:
                qkv = rms_scaled(qkv, hidden_states, self.norm_eps, self.qkv_bias)
            q, k, v = qkv.view(b, t, -1, self.head_dim).transpose(1, 2).split(
                [self.heads, self.kv_heads, self.kv_heads], dim=1)
            query, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys, values = cache.update(k, v, self.layer_idx)
        return query, keys, values


class FusedMLP(nn.Module):
    """A Llama MLP with one gate/up projection and one ``silu(gate) * up`` launch (the two in one launch,
    :func:`specattn.gpu.kernels.projection_epilogues.gate_up_silu`, is slower on the H100 at the draft's rows: 14.6
    us against 11.1, thirty-fourth session, so it is not taken here)."""

    def __init__(self, mlp: nn.Module, norm: nn.Module | None = None, down_split: int = 0):
        """``norm``: the RMSNorm before the MLP, folded into the gate/up projection (``x`` is then its input).
        ``down_split``: forwards of at most :data:`MAX_DOWN_ROWS` rows onto a residual run the down projection and
        the add in one launch, its ``K`` in this many ranges (:func:`specattn.gpu.kernels.skinny_gemm.skinny_linear`,
        :data:`DOWN_CONFIG`) where the kernels run; 0: cuBLAS (:func:`project_onto`)."""
        super().__init__()
        self.down_split = down_split_checked(down_split)
        self.gate_up = folded(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), norm)
        self.norm_eps = None if norm is None else float(norm.variance_epsilon)
        self.down_proj = mlp.down_proj
        self._down_workspace = None  # made at the first one-launch down projection (the decoder's eager warm-up)

    def forward(self, x, residual=None):
        """``residual``: return ``residual + mlp(x)``, as :class:`FusedAttention`."""
        fold = self.norm_eps is not None
        gate_up = nn.functional.linear(x, self.gate_up)
        if _use_kernels(gate_up):
            from ..gpu.kernels.fused_llama import silu_mul

            return self.down(silu_mul(gate_up, x if fold else None, self.norm_eps or 0.0), residual)
        if fold:
            gate_up = rms_scaled(gate_up, x, self.norm_eps)
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up, residual)

    def down(self, h: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """``h (B, T, I)`` down-projected, onto ``residual (B, T, H)`` if given (in place where the kernels run)."""
        rows = h.numel() // h.shape[-1]
        if not (self.down_split and residual is not None and 0 < rows <= MAX_DOWN_ROWS and _use_kernels(h)
                and residual.is_contiguous() and residual.dtype == h.dtype):
            return project_onto(h, self.down_proj.weight, residual)
        from ..gpu.kernels.skinny_gemm import skinny_linear, splitk_workspace

        weight = self.down_proj.weight
        if self.down_split > 1 and self._down_workspace is None:
            self._down_workspace = splitk_workspace(MAX_DOWN_ROWS, weight.shape[0], self.down_split, DOWN_CONFIG[0],
                                                    h.device)
        flat = residual.view(-1, residual.shape[-1])
        skinny_linear(h.reshape(-1, h.shape[-1]), weight, residual=flat, out=flat, config=DOWN_CONFIG,
                      split_k=self.down_split, workspace=self._down_workspace)
        return residual


def _qkv_rope_fits(rows: int, head_dim: int) -> bool:
    from ..gpu.kernels.projection_epilogues import qkv_rope_fits

    return qkv_rope_fits(rows, head_dim, QKV_EPILOGUE[0])


def epilogue_rows_checked(rows: int) -> int:
    """``rows`` if it is a row count the one-launch projections take (0: off, up to
    :data:`MAX_EPILOGUE_ROWS`, their kernels' ``MAX_ROWS``: checked here without importing Triton)."""
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= MAX_EPILOGUE_ROWS:
        raise ValueError(f"epilogue_rows={rows!r}: 0 (off) to {MAX_EPILOGUE_ROWS} rows")
    return rows


def down_split_checked(split: int) -> int:
    """``split`` if it is a number of ``K`` ranges the one-launch down projection takes (0: off, cuBLAS; 1 to
    :data:`MAX_DOWN_SPLIT`)."""
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split <= MAX_DOWN_SPLIT:
        raise ValueError(f"down_split={split!r}: 0 (off: cuBLAS) to {MAX_DOWN_SPLIT} K ranges")
    return split


def folded(weight: torch.Tensor, norm: nn.Module | None) -> nn.Parameter:
    """A projection's ``weight (N, H)``, times an RMSNorm's weight ``(H,)`` along H if ``norm`` is given (float32,
    rounded once to the weight's dtype): ``W diag(g)``, so that ``W (g * y) = (W diag(g)) y``."""
    weight = weight.detach()
    if norm is not None:
        weight = (weight.float() * norm.weight.detach().float()).to(weight.dtype)
    return nn.Parameter(weight, requires_grad=False)


def rms_scaled(y: torch.Tensor, x: torch.Tensor, eps: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The folded norm's arithmetic without the kernels: ``y (..., N)`` (the projection of ``x (..., H)`` by a
    folded weight) times each row's ``rsqrt(mean(x_f32^2) + eps)``, plus ``bias (N,)``, in float32, rounded once."""
    scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    out = y.float() * scale
    return (out if bias is None else out + bias.float()).to(y.dtype)


def project_onto(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """``x (B, T, K) @ weight.T (K, H)``, plus ``residual (B, T, H)`` if given. Where the kernels run, the add is
    the GEMM's own (cuBLAS with beta = 1 into ``residual``, updated in place: one launch, not two; the sum rounds
    once, from float32); elsewhere HF's ``residual + linear(x)``."""
    if residual is None:
        return nn.functional.linear(x, weight)
    if _use_kernels(x) and residual.is_contiguous() and residual.dtype == x.dtype:
        flat = residual.view(-1, residual.shape[-1])
        return flat.addmm_(x.reshape(-1, x.shape[-1]), weight.t()).view(residual.shape)
    return residual + nn.functional.linear(x, weight)


class FusedDecoderLayer(nn.Module):
    """A Llama/Qwen2 decoder layer whose two residual adds run inside the output and down projections
    (:func:`project_onto`): the same modules (``input_layernorm``, ``self_attn``, ``post_attention_layernorm``,
    ``mlp``), two launches fewer. Its input is overwritten where the kernels run (the graph decoder keeps no
    layer's input)."""

    def __init__(self, layer: nn.Module, fold_norms: bool = False, epilogue_rows: int = 0, down_split: int = 0):
        """``fold_norms``: the two RMSNorms folded into the projections after them (``input_layernorm`` and
        ``post_attention_layernorm`` become identities: no launch of their own); ``epilogue_rows``: the attention's
        (:class:`FusedAttention`); ``down_split``: the MLP's (:class:`FusedMLP`)."""
        super().__init__()
        for name, value in vars(layer).items():  # plain attributes the model's loop may read (attention_type)
            if not name.startswith("_") and name != "training":
                setattr(self, name, value)
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        self.self_attn = FusedAttention(layer.self_attn, norms[0] if fold_norms else None, epilogue_rows)
        self.mlp = FusedMLP(layer.mlp, norms[1] if fold_norms else None, down_split)
        self.input_layernorm, self.post_attention_layernorm = (nn.Identity(), nn.Identity()) if fold_norms else norms

    def forward(self, hidden_states, **kwargs):
        x, _ = self.self_attn(self.input_layernorm(hidden_states), residual=hidden_states, **kwargs)
        return self.mlp(self.post_attention_layernorm(x), residual=x)


def fuse_llama(model: nn.Module, fold_norms: bool = False, epilogue_rows: int = 0, down_split: int = 0) -> int:
    """Replace the norms, attention and MLP modules of a Llama-family ``model`` (Llama, Mistral, Qwen2:
    q/k/v biases allowed, no output-projection bias, SiLU MLP, no sliding window) in place; returns the
    number of decoder layers fused. ``fold_norms``: each layer's RMSNorms folded into its projections (the
    model's final norm stays); ``epilogue_rows``: forwards of at most this many rows run the q/k/v projection with
    the rotary and cache write in one launch (:mod:`specattn.gpu.kernels.projection_epilogues`, :data:`QKV_EPILOGUE`;
    0: off); ``down_split``: the down projection and its residual
    add in one launch, ``K`` in this many ranges (:meth:`FusedMLP.down`; 0: cuBLAS). Only for the graph decoder."""
    layers = model.model.layers
    for layer in layers:
        attention = layer.self_attn
        if attention.o_proj.bias is not None:
            raise ValueError("fuse_llama: an output projection with a bias is not supported")
        if attention.config.hidden_act != "silu":
            raise ValueError("fuse_llama: only SiLU MLPs are supported")
        if getattr(attention.config, "use_sliding_window", False):
            raise ValueError("fuse_llama: sliding-window attention is not supported")
    fuse_rmsnorms(model)
    for i, layer in enumerate(layers):
        layers[i] = FusedDecoderLayer(layer, fold_norms, epilogue_rows, down_split)
    return len(layers)
