"""The heatmap PNG: layers on y, tokens (with their index) or heads on x, diverging colormap centred at 0."""
from __future__ import annotations

import numpy as np

from ..fsio import save_figure


def _escape_mpl(text: str) -> str:
    """Token text shown literally by matplotlib (no mathtext from '$', visible spaces/newlines)."""
    return text.replace("\\", "\\\\").replace("$", r"\$").replace("\n", "\\n").replace("\t", "\\t")


def _short(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def plot_heatmap(result, path=None, ax=None):
    """The sweep's heatmap as a matplotlib figure; saved (atomically) to `path` when given, then closed."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(result.matrix, dtype=float)
    rows, cols = m.shape
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.75 * cols), max(4.0, 1.5 + 0.32 * rows)))
    finite = m[np.isfinite(m)]
    v = float(np.abs(finite).max()) if finite.size else 1.0
    v = v or 1.0
    im = ax.imshow(m, cmap="RdBu", vmin=-v, vmax=v, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(rows), [str(L) for L in result.layers])
    ax.set_xticks(range(cols), [_escape_mpl(_short(result.column_label(j))) for j in range(cols)], rotation=60,
                  ha="right", rotation_mode="anchor")
    ax.set_ylabel("layer")
    ax.set_xlabel("head" if result.kind == "z" else "position: token (clean/corrupt where they differ)")
    if rows * cols <= 900:
        size = 7 if rows * cols <= 400 else 5
        for i in range(rows):
            for j in range(cols):
                x = m[i, j]
                ax.text(j, i, f"{x:.2f}", ha="center", va="center", fontsize=size,
                        color="white" if abs(x) > 0.6 * v else "black")
    toks = " vs ".join(_escape_mpl(repr(t["token"])) for t in result.first_answers())
    what = {"logit_diff": f"logit diff {toks}", "normalized": f"normalized logit diff {toks}",
            "logprob": f"log p {toks}", "prob": f"p {toks}", "kl": "KL(clean || patched)"}[result.metric]
    ax.set_title(f"{result.direction} patching of {result.kind} ({result.method}): {what}\n"
                 f"clean {result.clean_value:.3f}, corrupted {result.corrupt_value:.3f}", fontsize=10)
    (fig or ax.figure).colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    if fig is not None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig.tight_layout()
        if path is not None:
            save_figure(fig, path, dpi=130)
            plt.close(fig)
    return fig or ax.figure


def heatmap(result, path=None, ax=None):
    """Deprecated name of `plot_heatmap`."""
    return plot_heatmap(result, path=path, ax=ax)
