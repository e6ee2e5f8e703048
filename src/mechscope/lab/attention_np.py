"""Attention and positional encoding in plain NumPy: scaled dot-product attention, multi-head attention and the
sinusoidal positional encoding of "Attention Is All You Need".

Conventions: a sequence is a (T, d) array, or (B, T, d) for a batch; weights act on the right (`x @ W`, W of shape
(d_in, d_out)), as on a blackboard. Masks are boolean with True meaning "may attend" (the convention of
`torch.nn.functional.scaled_dot_product_attention`). Everything here is checked against PyTorch in the tests.
"""
from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)), computed stably (subtracting the max changes nothing mathematically)."""
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def causal_mask(t_q: int, t_k: int | None = None) -> np.ndarray:
    """(Tq, Tk) bool: query i may attend to keys 0..i (lower triangle)."""
    return np.tril(np.ones((t_q, t_q if t_k is None else t_k), dtype=bool))


def padding_mask(lengths, t: int) -> np.ndarray:
    """(B, 1, T) bool: True on the first `lengths[b]` keys of sequence b (the real tokens), False on padding.
    The middle axis of size 1 broadcasts over the queries."""
    return (np.arange(t)[None, :] < np.asarray(lengths)[:, None])[:, None, :]


def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False):
    """softmax(Q K^T / sqrt(d_k)) V.

    q (..., Tq, d_k), k (..., Tk, d_k), v (..., Tk, d_v); mask: bool, broadcastable to (..., Tq, Tk), True where
    a query may attend to a key. Returns (output (..., Tq, d_v), weights (..., Tq, Tk)); each row of weights sums
    to 1. A row whose every key is masked has no defined weights (NaN), as in PyTorch.
    """
    d_k = q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(d_k)  # (..., Tq, Tk)
    if causal:
        scores = np.where(causal_mask(q.shape[-2], k.shape[-2]), scores, -np.inf)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = softmax(scores, axis=-1)  # (..., Tq, Tk)
    return weights @ v, weights


def split_heads(x: np.ndarray, n_heads: int) -> np.ndarray:
    """(B, T, d_model) -> (B, H, T, d_head)."""
    b, t, d = x.shape
    return x.reshape(b, t, n_heads, d // n_heads).transpose(0, 2, 1, 3)  # (B, H, T, d_head)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, H, T, d_head) -> (B, T, H * d_head): heads side by side again."""
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)  # (B, T, d_model)


def multi_head_attention(x_q, x_kv, params: dict, n_heads: int, mask=None, causal: bool = False):
    """Multi-head attention: project, split into heads, attend in each head, merge, project back.

    x_q (B, Tq, d_model) are the queries' inputs; x_kv (B, Tk, d_model) the keys' and values' (x_q itself for
    self-attention, the encoder's output for cross-attention). params: W_q, W_k, W_v, W_o of shape
    (d_model, d_model) and optional biases b_q, b_k, b_v, b_o of shape (d_model,). Returns
    (output (B, Tq, d_model), weights (B, H, Tq, Tk)).
    """
    def proj(x, name):
        return x @ params[f"W_{name}"] + params.get(f"b_{name}", 0.0)

    q = split_heads(proj(x_q, "q"), n_heads)  # (B, H, Tq, d_head)
    k = split_heads(proj(x_kv, "k"), n_heads)  # (B, H, Tk, d_head)
    v = split_heads(proj(x_kv, "v"), n_heads)  # (B, H, Tk, d_head)
    if mask is not None and np.ndim(mask) == 3:
        mask = np.asarray(mask)[:, None]  # (B, 1, Tq|1, Tk): the same mask for every head
    z, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)
    return proj(merge_heads(z), "o"), weights


def mha_params_from_torch(mha) -> dict:
    """The weights of a `torch.nn.MultiheadAttention` (packed in_proj) as NumPy arrays in x @ W form."""
    d = mha.embed_dim
    w_in = mha.in_proj_weight.detach().cpu().numpy()  # (3 d, d), rows: q then k then v
    params = {"W_q": w_in[:d].T, "W_k": w_in[d:2 * d].T, "W_v": w_in[2 * d:].T,
              "W_o": mha.out_proj.weight.detach().cpu().numpy().T}
    if mha.in_proj_bias is not None:
        b_in = mha.in_proj_bias.detach().cpu().numpy()
        params.update(b_q=b_in[:d], b_k=b_in[d:2 * d], b_v=b_in[2 * d:], b_o=mha.out_proj.bias.detach().cpu().numpy())
    return params


def sinusoidal_encoding(n_positions: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """(n_positions, d_model): PE[p, 2i] = sin(p * w_i), PE[p, 2i+1] = cos(p * w_i), w_i = base^(-2i / d_model).

    Each pair of columns (2i, 2i+1) is a point turning round the unit circle at its own frequency w_i, so moving
    k positions on is the same rotation by the angle k * w_i whatever the start (see `offset_rotation`), and
    PE[p] . PE[p + k] = sum_i cos(k * w_i) depends only on the distance k.
    """
    if d_model % 2:
        raise ValueError(f"d_model={d_model} must be even: sines and cosines come in pairs.")
    positions = np.arange(n_positions)[:, None]  # (P, 1)
    freqs = frequencies(d_model, base)[None, :]  # (1, d_model / 2)
    pe = np.zeros((n_positions, d_model))
    pe[:, 0::2] = np.sin(positions * freqs)
    pe[:, 1::2] = np.cos(positions * freqs)
    return pe


def frequencies(d_model: int, base: float = 10000.0) -> np.ndarray:
    """(d_model / 2,): the angular frequency w_i = base^(-2i / d_model) of each sine/cosine pair."""
    return base ** (-np.arange(0, d_model, 2) / d_model)


def offset_rotation(k: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """(d_model, d_model) block-diagonal M with PE[p + k] = PE[p] @ M for every p: one 2x2 rotation by k * w_i per
    frequency pair (sin(a+b) = sin a cos b + cos a sin b, cos(a+b) = cos a cos b - sin a sin b)."""
    m = np.zeros((d_model, d_model))
    for i, w in enumerate(frequencies(d_model, base)):
        c, s = np.cos(k * w), np.sin(k * w)
        m[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[c, -s], [s, c]]  # row vector (sin, cos) @ this block
    return m


def toy_self_attention(words: list, d_model: int = 16, seed: int = 0, causal: bool = False):
    """Self-attention by hand on a few words: each distinct word gets a random unit vector x (the same word, the
    same vector), and Q = K = V = X with no projections, so a word attends most to itself and to its repeats.
    Returns (output (T, d_model), weights (T, T))."""
    rng = np.random.default_rng(seed)
    vocab = {w: rng.standard_normal(d_model) for w in dict.fromkeys(words)}
    x = np.stack([vocab[w] / np.linalg.norm(vocab[w]) for w in words]) * np.sqrt(d_model)  # (T, d_model)
    return scaled_dot_product_attention(x, x, x, causal=causal)
