"""Attention patterns only where they are asked for.

HF models call their attention kernel through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`. We register
one implementation, `mechscope_sdpa`, that runs PyTorch's fused SDPA kernel (what HF uses by default) for every
attention module. A module may carry `_mechscope_hooks`, {kind: callable} set by `hooks.install` for one run:
  rot_q, rot_k   the rotated queries / keys the kernel receives, as (B, T, heads, d_head); the fused kernel stays
  attn_scores    the scaled, masked scores (B, H, Tq, Tk) before the softmax  } that module computes its attention
  pattern        the probabilities (B, H, Tq, Tk) after it                     } explicitly, as HF's eager path does
So `hook_pattern` at layer 5 makes only layer 5 eager, and only during that run.
"""
from __future__ import annotations

import contextlib

import torch

from .errors import MechscopeError

IMPL = "mechscope_sdpa"
HOOKS_ATTR = "_mechscope_hooks"
SEGMENTS_ATTR = "_mechscope_segments"  # on the HF config, during a packed forward only (see `segments`)


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h_kv, t, d = x.shape
    return x[:, :, None].expand(b, h_kv, n_rep, t, d).reshape(b, h_kv * n_rep, t, d)  # (B, H, T, D)


def _additive_mask(attention_mask, is_causal: bool, q_len: int, k_len: int, dtype, device):
    """HF-eager-style additive mask (0 where allowed, dtype min where not), or None."""
    neg = torch.finfo(dtype).min
    if attention_mask is None:
        if not is_causal or q_len == 1:
            return None
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)  # (Tq, Tk)
        return torch.zeros((), dtype=dtype, device=device).masked_fill(~allowed, neg)[None, None]
    if attention_mask.dtype == torch.bool:
        return torch.zeros((), dtype=dtype, device=device).masked_fill(~attention_mask[..., :k_len], neg)
    return attention_mask[..., :k_len].to(dtype)


def mechscope_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                        **kwargs):
    """query (B, H, Tq, D), key/value (B, H_kv, Tk, D) -> (attn_output (B, Tq, H, D), weights or None)."""
    hooks = getattr(module, HOOKS_ATTR, None) or {}
    if "rot_q" in hooks:  # (B, H, T, D) <-> (B, T, H, D), the site's layout
        query = hooks["rot_q"](query.transpose(1, 2)).transpose(1, 2)
    if "rot_k" in hooks:
        key = hooks["rot_k"](key.transpose(1, 2)).transpose(1, 2)
    eager = "attn_scores" in hooks or "pattern" in hooks
    segs = getattr(getattr(module, "config", None), SEGMENTS_ATTR, None)
    if segs is not None:
        if eager:
            raise MechscopeError("Attention scores and patterns (hook_attn_scores, hook_pattern) cannot be read from "
                                 "a packed batch (several sequences in one row). Run the prompts as an ordinary "
                                 "padded batch.")
        return _segmented(module, query, key, value, segs, dropout, scaling, **kwargs)
    if not eager:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Tq, Tk)
    mask = _additive_mask(attention_mask, causal, query.shape[2], key.shape[2], scores.dtype, scores.device)
    if mask is not None:
        scores = scores + mask
    if "attn_scores" in hooks:
        scores = hooks["attn_scores"](scores)
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, H, Tq, Tk)
    if "pattern" in hooks:
        pattern = hooks["pattern"](pattern)
    if dropout and module.training:
        pattern = torch.nn.functional.dropout(pattern, p=dropout)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()  # (B, Tq, H, D)
    return out, pattern


def _segmented(module, query, key, value, segs, dropout, scaling, **kwargs):
    """Several documents packed into one row (B == 1): causal SDPA within each document, nothing across them.

    The same kernel call as a forward of each document on its own, so no padding and no (T, T) mask is ever built.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs.pop("position_ids", None)
    outs, start = [], 0
    for n in segs:
        sl = slice(start, start + n)
        out, _ = sdpa_attention_forward(module, query[:, :, sl], key[:, :, sl], value[:, :, sl], None,
                                        dropout=dropout, scaling=scaling, is_causal=True, **kwargs)
        outs.append(out)  # (1, n, H, D)
        start += n
    return torch.cat(outs, dim=1), None  # (1, T, H, D)


def _configs(hf_model) -> list:
    """The model's config and every distinct sub-config its modules hold (attention modules read their own)."""
    configs = [hf_model.config] + [m.config for m in hf_model.modules() if hasattr(m, "config")]
    return list({id(c): c for c in configs}.values())


@contextlib.contextmanager
def segments(hf_model, lengths):
    """During the block, attention treats the single row as consecutive sequences of `lengths` (None: a no-op)."""
    if lengths is None:
        yield
        return
    configs = _configs(hf_model)
    try:
        for cfg in configs:
            setattr(cfg, SEGMENTS_ATTR, tuple(int(n) for n in lengths))
        yield
    finally:
        for cfg in configs:
            if hasattr(cfg, SEGMENTS_ATTR):
                delattr(cfg, SEGMENTS_ATTR)


def _mask(*args, **kwargs):
    """HF's sdpa mask, except in a packed forward, where `_segmented` needs none."""
    from transformers.masking_utils import sdpa_mask

    if getattr(kwargs.get("config"), SEGMENTS_ATTR, None) is not None:
        return None
    return sdpa_mask(*args, **kwargs)


def install(hf_model) -> None:
    """Route the model's attention through `mechscope_attention` (idempotent; numerically the same as sdpa)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPL, mechscope_attention)
    AttentionMaskInterface.register(IMPL, _mask)
    for cfg in _configs(hf_model):
        cfg._attn_implementation = IMPL
