"""The score types of `heads` and their target masks (which key positions count for each query position).

A leaf of mechscope.attention: heads.py scores against these masks, verify.py reads the induction mask for its loss
positions (docs/heads.md).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

SCORE_TYPES = ("previous_token", "current_token", "first_token", "duplicate_token", "induction")


def target_masks(tokens: Sequence[int], t: Optional[int] = None) -> torch.Tensor:
    """(5, T, T) float: the target mask of each score type (SCORE_TYPES order) for one sequence, zero-padded to t."""
    ids = torch.as_tensor(list(tokens), dtype=torch.long)
    n = len(ids)
    t = n if t is None else t
    m = torch.zeros(len(SCORE_TYPES), t, t)
    i = torch.arange(1, n)
    m[0, i, i - 1] = 1  # previous_token
    m[1, i, i] = 1      # current_token
    m[2, i, 0] = 1      # first_token
    same = ids[:, None] == ids[None, :]  # (T, T): token[i] == token[j]
    earlier = torch.ones(n, n, dtype=torch.bool).tril(-1)  # j < i
    m[3, :n, :n] = (same & earlier).float()  # duplicate_token
    ind = torch.zeros(n, n, dtype=torch.bool)
    ind[:, 1:] = same[:, :-1]  # token[j-1] == token[i]
    m[4, :n, :n] = (ind & earlier).float()  # induction
    return m
