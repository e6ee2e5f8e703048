"""The two small causal language models the lab compares: a Transformer and an LSTM.

Both map token ids (B, T) to next-token logits (B, T, V), and both generate one token at a time through
`step(ids, state) -> (logits, state)`:

- the Transformer keeps every past key and value (a KV cache that grows with the context),
- the LSTM keeps a fixed-size state (h, c), whatever the context length.

`lstm_matching(...)` picks the LSTM hidden size whose parameter count is closest to a given Transformer's.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention_np import sinusoidal_encoding


class KVCache:
    """Preallocated keys and values for every layer: (B, H, max_len, head_dim) each, filled up to `length`."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, max_len: int, head_dim: int):
        shape = (batch, n_heads, max_len, head_dim)
        self.k = [torch.zeros(shape) for _ in range(n_layers)]
        self.v = [torch.zeros(shape) for _ in range(n_layers)]
        self.length = 0

    def nbytes(self) -> int:
        """Bytes the cache holds for the positions filled so far (what a cache of exactly this length needs)."""
        per_pos = sum(t[:, :, :1].nelement() * t.element_size() for t in self.k + self.v)
        return per_pos * self.length


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def attend(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        if cache is None:  # training / scoring: the whole sequence at once, causal mask
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # generation: write this step's keys/values, attend to everything cached so far
            start, end = cache.length, cache.length + T
            cache.k[layer][:, :, start:end] = k
            cache.v[layer][:, :, start:end] = v
            k, v = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]
            mask = None
            if T > 1:  # prefill: query i (absolute start+i) sees keys 0..start+i
                mask = torch.ones(T, end, dtype=torch.bool).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(y)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attend(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class CausalTransformer(nn.Module):
    """Token embedding + sinusoidal positions, `n_layers` pre-norm blocks, final LayerNorm, linear head."""

    def __init__(self, vocab: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, max_len: int = 1024):
        super().__init__()
        self.d_model, self.n_layers, self.n_heads, self.max_len = d_model, n_layers, n_heads, max_len
        self.embed = nn.Embedding(vocab, d_model)
        pe = torch.from_numpy(sinusoidal_encoding(max_len, d_model)).float()  # (max_len, D), the lab's NumPy table
        self.register_buffer("pos", pe, persistent=False)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T = ids.shape
        start = 0 if cache is None else cache.length
        if start + T > self.max_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than max_len={self.max_len}")
        x = self.embed(ids) + self.pos[start:start + T]  # (B, T, D)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += T
        return self.head(self.ln_f(x))  # (B, T, V)

    def new_state(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        return KVCache(self.n_layers, batch, self.n_heads, max_len or self.max_len, self.d_model // self.n_heads)

    def step(self, ids: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Logits for `ids` (B, T) given everything in the cache; the cache is extended in place."""
        return self(ids, state), state


class LSTMLM(nn.Module):
    """Token embedding, a stacked `nn.LSTM`, linear head."""

    def __init__(self, vocab: int, d_embed: int = 64, hidden: int = 64, n_layers: int = 2):
        super().__init__()
        self.hidden, self.n_layers = hidden, n_layers
        self.embed = nn.Embedding(vocab, d_embed)
        self.lstm = nn.LSTM(d_embed, hidden, n_layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor, state=None) -> torch.Tensor:
        return self.step(ids, state)[0]

    def new_state(self, batch: int = 1, max_len: int | None = None):
        return None  # nn.LSTM starts from zeros

    def step(self, ids: torch.Tensor, state):
        """Logits for `ids` (B, T) continuing from `state` ((h, c), each (layers, B, hidden), or None)."""
        out, state = self.lstm(self.embed(ids), state)  # (B, T, hidden)
        return self.head(out), state


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lstm_n_params(vocab: int, d_embed: int, hidden: int, n_layers: int) -> int:
    """Parameters of `LSTMLM(vocab, d_embed, hidden, n_layers)`: embedding, 4 gates per layer (two biases), head."""
    first = 4 * hidden * (d_embed + hidden) + 8 * hidden
    rest = (n_layers - 1) * (4 * hidden * (2 * hidden) + 8 * hidden)
    return vocab * d_embed + first + rest + hidden * vocab + vocab


def lstm_matching(target: int, vocab: int, d_embed: int, n_layers: int) -> int:
    """The hidden size whose LSTMLM has the parameter count closest to `target`."""
    return min(range(4, 4096), key=lambda h: abs(lstm_n_params(vocab, d_embed, h, n_layers) - target))


def build_pair(vocab: int, d_model: int, n_layers: int, n_heads: int, max_len: int, seed: int):
    """A Transformer and a parameter-matched LSTM (same depth and embedding width), initialised from `seed`."""
    torch.manual_seed(seed)
    tf = CausalTransformer(vocab, d_model, n_layers, n_heads, max_len)
    hidden = lstm_matching(n_params(tf), vocab, d_model, n_layers)
    torch.manual_seed(seed)
    return tf, LSTMLM(vocab, d_model, hidden, n_layers)
