"""Attention patterns only where they are asked for.

HF models call their attention kernel through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`. We register
one implementation, `mechscope_sdpa`, that runs PyTorch's fused SDPA kernel (what HF uses by default) for every
attention module, except modules carrying a `_mechscope_pattern` callable: those compute the probabilities
explicitly (as HF's eager path does), hand them to the callable (capture or patch), and apply the result to V.
So `hook_pattern` at layer 5 makes only layer 5 eager, and only during that run.
"""
from __future__ import annotations

import torch

IMPL = "mechscope_sdpa"
PATTERN_ATTR = "_mechscope_pattern"


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
    hook = getattr(module, PATTERN_ATTR, None)
    if hook is None:
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
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, H, Tq, Tk)
    pattern = hook(pattern)
    if dropout and module.training:
        pattern = torch.nn.functional.dropout(pattern, p=dropout)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()  # (B, Tq, H, D)
    return out, pattern


def install(hf_model) -> None:
    """Route the model's attention through `mechscope_attention` (idempotent; numerically the same as sdpa)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPL, mechscope_attention)
    AttentionMaskInterface.register(IMPL, sdpa_mask)
    configs = [hf_model.config] + [m.config for m in hf_model.modules() if hasattr(m, "config")]
    for cfg in {id(c): c for c in configs}.values():
        cfg._attn_implementation = IMPL
