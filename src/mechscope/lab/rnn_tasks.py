"""Three synthetic tasks that separate a Transformer from an LSTM, as next-token prediction.

Every task returns `(ids, targets)`, both (B, T) int64: the model reads `ids` and is scored (trained and
evaluated) only where `targets` is not IGNORE. One length per batch, so there is no padding.

- copy across a lag: m symbols, `lag` blanks, a GO token, then the m symbols again (teacher-forced). The
  distance the model must carry each symbol over is m + lag + 1 positions.
- induction: n random tokens, then the same n tokens again; tokens 2..n of the repeat are predictable only by
  looking back at the first copy.
- running parity: a bit string; at every position the target is the parity (XOR) of the bits so far.
"""
from __future__ import annotations

import torch

IGNORE = -100


def copy_batch(gen: torch.Generator, batch: int, lag: int, n_symbols: int = 8, m: int = 3):
    """Copy m symbols across `lag` blanks. Vocabulary: symbols 0..n_symbols-1, BLANK = n_symbols, GO = +1."""
    blank, go = n_symbols, n_symbols + 1
    sym = torch.randint(0, n_symbols, (batch, m), generator=gen)  # (B, m)
    pad = torch.full((batch, lag), blank, dtype=torch.long)
    goes = torch.full((batch, 1), go, dtype=torch.long)
    ids = torch.cat([sym, pad, goes, sym[:, :-1]], dim=1)  # (B, m + lag + 1 + m - 1)
    targets = torch.full_like(ids, IGNORE)
    targets[:, m + lag:] = sym  # at GO predict the 1st symbol, then each next one
    return ids, targets


def copy_vocab(n_symbols: int = 8) -> int:
    return n_symbols + 2


def induction_batch(gen: torch.Generator, batch: int, n: int, vocab: int = 32):
    """n random tokens repeated once; scored on the repeat's tokens 2..n (the first one is unpredictable)."""
    first = torch.randint(0, vocab, (batch, n), generator=gen)  # (B, n)
    ids = torch.cat([first, first], dim=1)  # (B, 2n)
    targets = torch.full_like(ids, IGNORE)
    targets[:, n:2 * n - 1] = first[:, 1:]  # position n + j reads first[j] and must say first[j + 1]
    return ids, targets


def parity_batch(gen: torch.Generator, batch: int, length: int):
    """Bits 0/1; the target at position t is bits[0] ^ ... ^ bits[t]."""
    bits = torch.randint(0, 2, (batch, length), generator=gen)  # (B, T)
    return bits, torch.cumsum(bits, dim=1) % 2


# name -> (batch function, vocabulary size, what the length argument means)
TASKS = {
    "copy": (copy_batch, copy_vocab(), "lag"),
    "induction": (induction_batch, 32, "n"),
    "parity": (parity_batch, 2, "length"),
}


def make_batch(task: str, gen: torch.Generator, batch: int, size: int):
    fn = TASKS[task][0]
    return fn(gen, batch, size)


def max_len(task: str, size: int) -> int:
    """Sequence length of one example of `task` at `size` (lag, n or length)."""
    return {"copy": 3 + size + 1 + 2, "induction": 2 * size, "parity": size}[task]
