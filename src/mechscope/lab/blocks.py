"""Transformer blocks in plain PyTorch: multi-head attention, the encoder block, the decoder block (masked
self-attention, cross-attention, feed-forward, each followed by add & norm) and the full encoder-decoder.

Post-norm is the textbook form ("Attention Is All You Need": x = LayerNorm(x + sublayer(x))); `norm_first=True`
gives pre-norm (x = x + sublayer(LayerNorm(x))), which most models trained since use. Each class loads the
weights of its `torch.nn` counterpart (`from_torch`) and then computes the same function: the tests check
EncoderBlock == nn.TransformerEncoderLayer, DecoderBlock == nn.TransformerDecoderLayer and
EncoderDecoder == nn.Transformer. There is no dropout here (the torch layers are compared in eval mode).
Shapes are batch first: (B, T, d_model).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be a multiple of n_heads"
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x, context=None, causal: bool = False, key_padding=None):
        """x (B, T, D) queries; context (B, S, D) keys and values (x itself when None: self-attention).
        key_padding (B, S) bool, True on padding keys. Returns (output (B, T, D), weights (B, H, T, S))."""
        context = x if context is None else context
        B, T, D = x.shape
        S = context.shape[1]
        q = self.q(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, d_head)
        k = self.k(context).view(B, S, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, S, d_head)
        v = self.v(context).view(B, S, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, S, d_head)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, H, T, S)
        if causal:
            future = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(1)  # (T, S) True above the diagonal
            scores = scores.masked_fill(future, float("-inf"))
        if key_padding is not None:
            scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, H, T, S)
        z = (weights @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, H * d_head)
        return self.o(z), weights

    def load_torch(self, mha: nn.MultiheadAttention) -> None:
        """Copy the weights of an nn.MultiheadAttention (its packed in_proj holds q, k, v stacked)."""
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        for lin, w, b in ((self.q, w_q, b_q), (self.k, w_k, b_k), (self.v, w_v, b_v),
                          (self.o, mha.out_proj.weight, mha.out_proj.bias)):
            lin.weight.data.copy_(w)
            lin.bias.data.copy_(b)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str = "relu"):
        super().__init__()
        self.up, self.down = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.act = {"relu": F.relu, "gelu": F.gelu}[activation]

    def forward(self, x):
        return self.down(self.act(self.up(x)))  # (B, T, d_ff) in the middle


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each with a residual connection and a LayerNorm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, norm_first: bool = False, activation: str = "relu",
                 eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.attn, self.ff = MultiHeadAttention(d_model, n_heads), FeedForward(d_model, d_ff, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model, eps=eps), nn.LayerNorm(d_model, eps=eps)

    def forward(self, x, src_padding=None):
        """x (B, S, D); src_padding (B, S) bool, True on padding."""
        if self.norm_first:  # pre-norm: normalize what goes into each sublayer
            x = x + self.attn(self.norm1(x), key_padding=src_padding)[0]
            return x + self.ff(self.norm2(x))
        x = self.norm1(x + self.attn(x, key_padding=src_padding)[0])  # post-norm: normalize after each add
        return self.norm2(x + self.ff(x))

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> "EncoderBlock":
        block = cls(layer.linear1.in_features, layer.self_attn.num_heads, layer.linear1.out_features,
                    layer.norm_first, _activation(layer), layer.norm1.eps)
        block.attn.load_torch(layer.self_attn)
        _load_ff(block.ff, layer)
        _load_norms((block.norm1, block.norm2), (layer.norm1, layer.norm2))
        return block


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention over the encoder's output (the memory), feed-forward; each with a
    residual connection and a LayerNorm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, norm_first: bool = False, activation: str = "relu",
                 eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn, self.cross_attn = MultiHeadAttention(d_model, n_heads), MultiHeadAttention(d_model, n_heads)
        self.ff = FeedForward(d_model, d_ff, activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model, eps=eps) for _ in range(3))

    def forward(self, x, memory, memory_padding=None, tgt_padding=None):
        """x (B, T, D) the target so far; memory (B, S, D) the encoder's output. Self-attention is causal."""
        def self_attn(h):
            return self.self_attn(h, causal=True, key_padding=tgt_padding)[0]

        def cross_attn(h):
            return self.cross_attn(h, context=memory, key_padding=memory_padding)[0]

        if self.norm_first:
            x = x + self_attn(self.norm1(x))
            x = x + cross_attn(self.norm2(x))
            return x + self.ff(self.norm3(x))
        x = self.norm1(x + self_attn(x))
        x = self.norm2(x + cross_attn(x))
        return self.norm3(x + self.ff(x))

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> "DecoderBlock":
        block = cls(layer.linear1.in_features, layer.self_attn.num_heads, layer.linear1.out_features,
                    layer.norm_first, _activation(layer), layer.norm1.eps)
        block.self_attn.load_torch(layer.self_attn)
        block.cross_attn.load_torch(layer.multihead_attn)
        _load_ff(block.ff, layer)
        _load_norms((block.norm1, block.norm2, block.norm3), (layer.norm1, layer.norm2, layer.norm3))
        return block


class EncoderDecoder(nn.Module):
    """The full Transformer on embedded sequences: N encoder blocks, then N decoder blocks reading the encoder's
    output; a final LayerNorm after each stack (as nn.Transformer has)."""

    def __init__(self, d_model: int = 512, n_heads: int = 8, n_encoder: int = 6, n_decoder: int = 6,
                 d_ff: int = 2048, norm_first: bool = False, activation: str = "relu", eps: float = 1e-5):
        super().__init__()
        self.encoder = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff, norm_first, activation, eps)
                                     for _ in range(n_encoder))
        self.decoder = nn.ModuleList(DecoderBlock(d_model, n_heads, d_ff, norm_first, activation, eps)
                                     for _ in range(n_decoder))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(d_model, eps=eps), nn.LayerNorm(d_model, eps=eps)

    def encode(self, src, src_padding=None):
        for block in self.encoder:
            src = block(src, src_padding)
        return self.encoder_norm(src)  # (B, S, D): the memory

    def decode(self, tgt, memory, memory_padding=None, tgt_padding=None):
        for block in self.decoder:
            tgt = block(tgt, memory, memory_padding, tgt_padding)
        return self.decoder_norm(tgt)  # (B, T, D)

    def forward(self, src, tgt, src_padding=None, tgt_padding=None):
        """src (B, S, D), tgt (B, T, D) embedded sequences -> (B, T, D)."""
        return self.decode(tgt, self.encode(src, src_padding), src_padding, tgt_padding)

    @classmethod
    def from_torch(cls, model: nn.Transformer) -> "EncoderDecoder":
        enc, dec = model.encoder.layers, model.decoder.layers
        first = enc[0]
        out = cls(first.linear1.in_features, first.self_attn.num_heads, len(enc), len(dec),
                  first.linear1.out_features, first.norm_first, _activation(first), first.norm1.eps)
        out.encoder = nn.ModuleList(EncoderBlock.from_torch(layer) for layer in enc)
        out.decoder = nn.ModuleList(DecoderBlock.from_torch(layer) for layer in dec)
        _load_norms((out.encoder_norm, out.decoder_norm), (model.encoder.norm, model.decoder.norm))
        return out


def _activation(layer) -> str:
    act = layer.activation
    name = getattr(act, "__name__", type(act).__name__).lower()
    if name not in ("relu", "gelu"):
        raise ValueError(f"activation {act!r} is not supported: use 'relu' or 'gelu'")
    return name


def _load_ff(ff: FeedForward, layer) -> None:
    for mine, theirs in ((ff.up, layer.linear1), (ff.down, layer.linear2)):
        mine.weight.data.copy_(theirs.weight)
        mine.bias.data.copy_(theirs.bias)


def _load_norms(mine, theirs) -> None:
    for a, b in zip(mine, theirs):
        a.weight.data.copy_(b.weight)
        a.bias.data.copy_(b.bias)
