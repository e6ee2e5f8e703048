"""Patching metrics, evaluated on the last position's logits of a (patched) run.

A `Metric` says which vocabulary columns it needs (`columns`: the ids of A and B, or None for the full row) so the
exact engine unembeds only those, and computes one float per row from them:

  logit_diff  logit(A) - logit(B)
  normalized  (logit_diff - corrupt) / (clean - corrupt): 0 = the corrupted run, 1 = the clean run
  logprob     log p(A)
  prob        p(A)
  kl          KL(clean || patched) over the full next-token distribution
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import MechscopeError

METRICS = ("logit_diff", "logprob", "prob", "kl", "normalized")


def _f(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass
class Metric:
    name: str
    a: int                         # token id of A
    b: Optional[int]               # token id of B (logit_diff, normalized)
    clean_logits: torch.Tensor     # (V,) last-position logits of the clean run
    corrupt_logits: torch.Tensor   # (V,) last-position logits of the corrupted run

    @property
    def columns(self) -> Optional[list[int]]:
        """Vocabulary ids the metric reads, or None when it needs the whole row."""
        if self.name in ("logit_diff", "normalized"):
            return [self.a, self.b]
        return None

    def _ld(self, logits: torch.Tensor) -> torch.Tensor:
        return _f(logits[..., self.a] - logits[..., self.b])

    def from_columns(self, cols: torch.Tensor) -> torch.Tensor:
        """cols (N, len(columns)) or (N, V) when columns is None -> (N,) float."""
        if self.name in ("logit_diff", "normalized"):
            ld = _f(cols[..., 0] - cols[..., 1])
            if self.name == "logit_diff":
                return ld
            lo, hi = self._ld(self.corrupt_logits), self._ld(self.clean_logits)
            return (ld - lo) / (hi - lo)
        return self.from_logits(cols)

    def from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (..., V) -> (...,) float."""
        if self.name == "logit_diff":
            return self._ld(logits)
        if self.name == "normalized":
            lo, hi = self._ld(self.corrupt_logits), self._ld(self.clean_logits)
            return (self._ld(logits) - lo) / (hi - lo)
        logp = torch.log_softmax(_f(logits), dim=-1)
        if self.name == "logprob":
            return logp[..., self.a]
        if self.name == "prob":
            return logp[..., self.a].exp()
        if self.name == "kl":
            ref = torch.log_softmax(_f(self.clean_logits), dim=-1)
            return (ref.exp() * (ref - logp)).sum(-1)
        raise AssertionError(self.name)

    @property
    def clean_value(self) -> float:
        return float(self.from_logits(self.clean_logits))

    @property
    def corrupt_value(self) -> float:
        return float(self.from_logits(self.corrupt_logits))


def make_metric(name: str, a: int, b: Optional[int], clean_logits: torch.Tensor,
                corrupt_logits: torch.Tensor) -> Metric:
    if name not in METRICS:
        raise MechscopeError(f"Unknown metric {name!r}. Choose one of: {', '.join(METRICS)}.")
    if name in ("logit_diff", "normalized") and b is None:
        raise MechscopeError(f"Metric {name!r} needs two tokens A and B (--tokens A B).")
    m = Metric(name, a, b, _f(clean_logits.detach()), _f(corrupt_logits.detach()))
    if name == "normalized":
        gap = float(m._ld(m.clean_logits) - m._ld(m.corrupt_logits))
        if abs(gap) < 1e-6:
            raise MechscopeError(
                "Metric 'normalized' divides by logit_diff(clean) - logit_diff(corrupt), which is 0 for these prompts "
                "(the two runs agree on A vs B). Use --metric logit_diff, or prompts whose answers differ.")
    return m
