"""Ready-made patch functions for `Model.run(patch={site: fn})`.

Each helper returns a function `activation -> activation`. Positions index the sequence axis (axis 1 of every site
except hook_pattern, where they index query positions, axis 2); heads index axis 2 of `attn.hook_z` (B, T, H, D)
and axis 1 of `attn.hook_pattern` (B, H, T, T).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Index = Union[int, Sequence[int], slice, None]


def _sel(index: Index):
    if index is None:
        return slice(None)
    return [index] if isinstance(index, int) else index


def _region(act: torch.Tensor, positions: Index, heads: Index):
    """An indexing tuple for (batch, pos[, head]) on an activation."""
    if heads is None:
        return (slice(None), _sel(positions))
    if act.ndim != 4:
        raise ValueError("heads= needs a per-head site (attn.hook_z or attn.hook_pattern)")
    pos, hd = _sel(positions), _sel(heads)
    if isinstance(pos, list) and isinstance(hd, list):  # outer product of positions x heads
        return (slice(None), torch.tensor(pos)[:, None], torch.tensor(hd)[None, :])
    return (slice(None), pos, hd)


def replace(source: torch.Tensor, positions: Index = None, heads: Index = None):
    """Copy `source` (same shape as the activation, e.g. a clean run's cache entry) at the given positions/heads."""
    def fn(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        idx = _region(act, positions, heads)
        out[idx] = source.to(act.device, act.dtype).expand_as(act)[idx]
        return out
    return fn


def add(vector: torch.Tensor, positions: Index = None, scale: float = 1.0):
    """Steering: add `scale * vector` (d,) or a broadcastable tensor at the given positions."""
    def fn(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        idx = (slice(None), _sel(positions))
        out[idx] = out[idx] + scale * vector.to(act.device, act.dtype)
        return out
    return fn


def zero_ablate(positions: Index = None, heads: Index = None):
    """Set the activation to zero at the given positions/heads (all of them by default)."""
    def fn(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        out[_region(act, positions, heads)] = 0
        return out
    return fn


def mean_ablate(mean: torch.Tensor, positions: Index = None, heads: Index = None):
    """Replace by `mean` (e.g. a dataset mean over batch and positions, shaped like one position's activation)."""
    def fn(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        idx = _region(act, positions, heads)
        out[idx] = mean.to(act.device, act.dtype).expand_as(out[idx])
        return out
    return fn


def mean_over_tokens(act: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of a (B, T, ...) activation over real tokens: the usual input of `mean_ablate`."""
    if attention_mask is None:
        return act.flatten(0, 1).mean(0)
    return act[attention_mask.bool()].mean(0)
