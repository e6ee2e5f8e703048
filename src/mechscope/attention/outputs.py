"""`mechscope attention`'s outputs: attention.html, patterns.safetensors, tokens.json, grid.png (each written
atomically, after everything has been computed)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .. import fsio
from ..errors import ConfigError
from .data import AttentionPatterns, Indices, attention_patterns
from .viewer import render, thumbnails

OUTPUTS = ("attention.html", "patterns.safetensors", "tokens.json", "grid.png")


def check_out(out: Union[str, Path], overwrite: bool) -> Path:
    """The output folder, refused when it already holds files and `overwrite` is off (checked before any work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file, not a folder. Choose a folder for the outputs.", "out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {str(out)!r} is not empty (an earlier result?). Pass --overwrite to replace its "
                          f"{', '.join(OUTPUTS)}, or choose a new folder.", "out")
    return out


def plot_grid(r: AttentionPatterns):
    """All shown layers x heads as one image (thumbnails, max-pooled to at most 64 x 64), one matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tiles = [thumbnails(r.patterns[L]).numpy() for L in r.layers]  # each (heads, S, S)
    s, gap = tiles[0].shape[-1], max(1, tiles[0].shape[-1] // 8)
    nl, nh = len(r.layers), len(r.heads)
    grid = np.full((nl * (s + gap) - gap, nh * (s + gap) - gap), np.nan)
    for i, t in enumerate(tiles):
        for j in range(nh):
            grid[i * (s + gap):i * (s + gap) + s, j * (s + gap):j * (s + gap) + s] = t[j]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * nh, 0.8 + 0.8 * nl))
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="white")
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    centres = lambda n: [k * (s + gap) + (s - 1) / 2 for k in range(n)]
    ax.set_xticks(centres(nh), [f"H{h}" for h in r.heads], fontsize=8)
    ax.set_yticks(centres(nl), [f"L{L}" for L in r.layers], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"attention patterns ({len(r.ids)} tokens; rows: queries, columns: keys)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    return fig


def write_outputs(r: AttentionPatterns, out: Union[str, Path], overwrite: bool = False) -> dict:
    """Write the four outputs into `out`; returns {file name: path}."""
    from safetensors.torch import save

    out = check_out(out, overwrite)
    tensors = {r.site(L): r.patterns[L].float().contiguous() for L in r.layers}  # (heads, T, T)
    meta = {"model": r.model, "heads": json.dumps(r.heads), "layers": json.dumps(r.layers),
            "axes": "head, query position, key position"}
    paths = {"patterns.safetensors": fsio.write_bytes(out / "patterns.safetensors", save(tensors, metadata=meta)),
             "tokens.json": fsio.write_json(out / "tokens.json", r.tokens_json())}
    import matplotlib.pyplot as plt

    fig = plot_grid(r)
    try:
        paths["grid.png"] = fsio.save_figure(fig, out / "grid.png", dpi=110)
    finally:
        plt.close(fig)
    paths["attention.html"] = fsio.write_text(out / "attention.html", render(r))
    return paths


def view(model, text: str, out: Union[str, Path] = "out/attention", layers: Indices = None, heads: Indices = None,
         pair: Optional[str] = None, overwrite: bool = False) -> dict:
    """`mechscope attention`: patterns of `layers` x `heads` on `text` (and `pair`), written into `out`.

    Returns {"result": AttentionPatterns, "paths": {file name: path}}."""
    check_out(out, overwrite)
    r = attention_patterns(model, text, layers=layers, heads=heads, pair=pair)
    return {"result": r, "paths": write_outputs(r, out, overwrite=True)}
