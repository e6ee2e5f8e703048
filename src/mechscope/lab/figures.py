"""The lab's pictures, as matplotlib figures (the CLI saves them as PNG with `mechscope.fsio.save_figure`)."""
from __future__ import annotations

import numpy as np


def _pyplot():
    import os

    import matplotlib

    if not os.environ.get("MPLBACKEND"):  # a notebook's kernel sets its inline backend there: keep it
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def pe_figure(pe: np.ndarray, base: float = 10000.0):
    """Heatmap of a positional encoding (positions down, dimensions across) and, beside it, PE[p] . PE[p + k]
    against the distance k for a few starting positions p (the curves coincide: only the distance matters)."""
    plt = _pyplot()
    n_pos, d = pe.shape
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    im = ax.imshow(pe, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("dimension (even: sin, odd: cos; frequency falls to the right)")
    ax.set_ylabel("position")
    ax.set_title(f"Sinusoidal positional encoding ({n_pos} positions, d_model={d}, base={base:g})")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ks = np.arange(n_pos // 2)
    for p, style in zip((0, n_pos // 8, n_pos // 4), ("-", "--", ":")):
        ax2.plot(ks, [pe[p] @ pe[p + k] for k in ks], style, label=f"p = {p}", lw=2)
    ax2.set_xlabel("distance k")
    ax2.set_ylabel("PE[p] . PE[p + k]")
    ax2.set_title("Dot product depends only on the distance")
    ax2.legend()
    fig.tight_layout()
    return fig


def attention_figure(tokens: list, weights: np.ndarray, title: str = "Attention weights"):
    """Heatmap of one attention pattern (Tq, Tk): row = query token, column = key token, each row sums to 1."""
    plt = _pyplot()
    n = len(tokens)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    im = ax.imshow(weights, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), tokens, rotation=45, ha="right")
    ax.set_yticks(range(n), tokens)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    for i in range(n):
        for j in range(n):
            if weights[i, j] >= 0.005:
                ax.text(j, i, f"{weights[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if weights[i, j] > 0.6 else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
