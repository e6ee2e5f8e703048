"""SAE metrics with fixed definitions (docs/sae.md repeats them; tests check them against direct numpy code).

FVU  = sum_t ||x_t - x_hat_t||^2 / sum_t ||x_t - mean(x)||^2, mean over the evaluation set, both sums in float64.
       Explained variance = 1 - FVU.
L0   = mean over tokens of the number of latents with activation > 0.
dead = latents never active (activation > 0) over the last N tokens evaluated (N is reported with the count).
dense = latents active on more than 10% of the evaluated tokens.

`Accumulator` computes them in one streaming pass over batches (the denominator with Chan's pairwise update of the
sum of squared deviations, so no second pass and no catastrophic cancellation); the plain functions are the
reference on arrays that fit in memory.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

DENSE_FRACTION = 0.10


def fvu(x, x_hat) -> float:
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    num = ((x - x_hat) ** 2).sum()
    den = ((x - x.mean(0)) ** 2).sum()
    return float(num / den)


def l0(acts) -> float:
    return float((np.asarray(acts) > 0).sum(-1).mean())


def frequencies(acts) -> np.ndarray:
    return (np.asarray(acts) > 0).mean(0)


def dead_latents(acts, last_n: Optional[int] = None) -> np.ndarray:
    """Indices of latents never active over the last `last_n` rows (all rows when None)."""
    a = np.asarray(acts)
    if last_n is not None:
        a = a[-last_n:]
    return np.flatnonzero(~(a > 0).any(0))


def dense_latents(acts, fraction: float = DENSE_FRACTION) -> np.ndarray:
    return np.flatnonzero(frequencies(acts) > fraction)


class Accumulator:
    """Streaming FVU / L0 / frequency / dead / dense over batches of (x, x_hat, acts), in float64."""

    def __init__(self, d_sae: int, dead_window: Optional[int] = None):
        self.n = 0
        self.err = 0.0          # sum ||x - x_hat||^2
        self.mean = None        # running mean of x (float64)
        self.m2 = 0.0           # sum ||x - mean||^2
        self.active = 0         # total number of (token, latent) activations
        self.counts = np.zeros(d_sae, dtype=np.int64)
        self.dead_window = dead_window
        self.last_seen = np.full(d_sae, -1, dtype=np.int64)  # index of the last token where each latent fired

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, acts: torch.Tensor) -> None:
        x64, xh64 = x.double(), x_hat.double()
        nb = x64.shape[0]
        if nb == 0:
            return
        self.err += float(((x64 - xh64) ** 2).sum())
        mb = x64.mean(0)
        m2b = float(((x64 - mb) ** 2).sum())
        if self.mean is None:
            self.mean, self.m2 = mb, m2b
        else:
            delta = mb - self.mean
            tot = self.n + nb
            self.m2 += m2b + float((delta ** 2).sum()) * self.n * nb / tot
            self.mean = self.mean + delta * (nb / tot)
        on = acts > 0
        self.active += int(on.sum())
        self.counts += on.sum(0).cpu().numpy()
        rows = torch.arange(nb, device=on.device)[:, None].expand_as(on)
        last = torch.where(on, rows, -1).max(0).values.cpu().numpy()
        fired = last >= 0
        self.last_seen[fired] = self.n + last[fired]
        self.n += nb

    def result(self) -> dict:
        n = max(self.n, 1)
        f = self.counts / n
        window = self.n if self.dead_window is None else min(self.dead_window, self.n)
        dead = np.flatnonzero(self.last_seen < self.n - window)
        value = self.err / self.m2 if self.m2 > 0 else float("nan")
        return {
            "tokens": self.n,
            "fvu": value,
            "explained_variance": 1.0 - value,
            "mse_per_token": self.err / n,
            "l0": self.active / n,
            "dead_window_tokens": int(window),
            "dead": int(dead.size),
            "dead_fraction": float(dead.size / len(f)) if len(f) else 0.0,
            "dense": int((f > DENSE_FRACTION).sum()),
            "dense_fraction": float((f > DENSE_FRACTION).mean()) if len(f) else 0.0,
            "dense_threshold": DENSE_FRACTION,
            "frequencies": f,
            "dead_latents": dead,
        }
