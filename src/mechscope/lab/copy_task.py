"""The encoder-decoder of `blocks` learning the copy task: read a random sequence, write it out again.

The decoder sees BOS followed by the sequence so far (teacher forcing) and predicts the next symbol; at test time
it decodes greedily, one symbol at a time, from BOS alone. It can only succeed by cross-attending to the right
source position, which the sinusoidal positional encoding lets it find.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention_np import sinusoidal_encoding
from .blocks import EncoderDecoder

BOS = 0  # token 0 starts the decoder's input; the symbols to copy are 1..n_symbols


class Seq2Seq(nn.Module):
    """Embedding + sinusoidal positions -> EncoderDecoder -> linear layer to the vocabulary."""

    def __init__(self, n_symbols: int = 10, d_model: int = 32, n_heads: int = 2, n_layers: int = 1,
                 d_ff: int = 64, norm_first: bool = False, max_len: int = 64):
        super().__init__()
        self.vocab = n_symbols + 1
        self.d_model = d_model
        self.embed = nn.Embedding(self.vocab, d_model)
        self.register_buffer("pe", torch.tensor(sinusoidal_encoding(max_len, d_model), dtype=torch.float32))
        self.transformer = EncoderDecoder(d_model, n_heads, n_layers, n_layers, d_ff, norm_first)
        self.out = nn.Linear(d_model, self.vocab)

    def embed_tokens(self, tokens):
        T = tokens.shape[1]
        return self.embed(tokens) + self.pe[:T]  # (B, T, D): both of unit scale per dimension

    def forward(self, src, tgt_in):
        """src (B, S), tgt_in (B, T) token ids -> logits (B, T, vocab)."""
        hidden = self.transformer(self.embed_tokens(src), self.embed_tokens(tgt_in))  # (B, T, D)
        return self.out(hidden)

    @torch.no_grad()
    def greedy(self, src, n_steps: int):
        """Decode n_steps symbols from BOS, each time appending the most likely next one. (B, S) -> (B, n_steps)."""
        memory = self.transformer.encode(self.embed_tokens(src))  # (B, S, D), computed once
        out = torch.full((src.shape[0], 1), BOS, dtype=torch.long)
        for _ in range(n_steps):
            hidden = self.transformer.decode(self.embed_tokens(out), memory)  # (B, t, D)
            out = torch.cat([out, self.out(hidden[:, -1]).argmax(-1, keepdim=True)], dim=1)
        return out[:, 1:]


def copy_batch(n: int, length: int, n_symbols: int, generator: torch.Generator):
    """(src, tgt_in, tgt_out): src (n, length) random symbols; tgt_in = BOS + src[:-1]; tgt_out = src."""
    src = torch.randint(1, n_symbols + 1, (n, length), generator=generator)
    tgt_in = torch.cat([torch.full((n, 1), BOS), src[:, :-1]], dim=1)
    return src, tgt_in, src


def train_copy(steps: int = 300, length: int = 5, n_symbols: int = 6, batch_size: int = 32, lr: float = 1e-2,
               seed: int = 0, norm_first: bool = False, **model_kw):
    """Train a Seq2Seq on the copy task with Adam, the learning rate falling linearly to 0; returns
    (model, losses)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Seq2Seq(n_symbols, norm_first=norm_first, **model_kw)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    losses = []
    for step in range(steps):
        src, tgt_in, tgt_out = copy_batch(batch_size, length, n_symbols, gen)
        logits = model(src, tgt_in)  # (B, T, vocab)
        loss = F.cross_entropy(logits.reshape(-1, model.vocab), tgt_out.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


def exact_copies(model: Seq2Seq, n: int = 256, length: int = 5, n_symbols: int = 6, seed: int = 1234) -> float:
    """Fraction of `n` fresh random sequences that greedy decoding copies exactly (every symbol right)."""
    src, _, _ = copy_batch(n, length, n_symbols, torch.Generator().manual_seed(seed))
    return float((model.greedy(src, length) == src).all(dim=1).float().mean())
