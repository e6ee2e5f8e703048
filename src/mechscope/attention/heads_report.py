"""The outputs of `heads`: heads.json, heads.png (one heatmap per score type) and report.html (self-contained).

Every file is written atomically (fsio); an existing output is replaced only with overwrite=True. The page needs no
network: heatmaps are HTML tables whose cells carry their values in a `title`, every text is escaped (htmlkit), and
the PNG is embedded as a data URI.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import fsio, htmlkit
from ..errors import ConfigError
from .targets import SCORE_TYPES

if TYPE_CHECKING:  # annotations only: heads.py imports this module to save its result
    from .heads import HeadsResult

OUTPUTS = ("heads.json", "heads.png", "report.html")


def check_out(out_dir, overwrite: bool = False) -> Path:
    """Refuse an output folder that already holds a result (before any work), unless `overwrite`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={str(out)!r} is a file, not a folder. Choose a folder for heads.json, heads.png "
                          "and report.html.", "out")
    found = [n for n in OUTPUTS if (out / n).exists()]
    if found and not overwrite:
        raise ConfigError(f"out={str(out)!r} already holds {', '.join(found)} from an earlier run. Choose another "
                          "folder, or pass --overwrite (overwrite=True) to replace them.", "out")
    return out


def plot_heads(result: HeadsResult, path) -> Path:
    """One heatmap per score type (layers on y, heads on x, colour = score in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(SCORE_TYPES)
    L, H = np.asarray(result.scores[SCORE_TYPES[0]]).shape
    fig, axes = plt.subplots(1, n, figsize=(2.2 + 0.35 * H * n, 1.6 + 0.22 * L), squeeze=False)
    for ax, kind in zip(axes[0], SCORE_TYPES):
        im = ax.imshow(np.asarray(result.scores[kind], dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        base = float(np.nanmean(np.asarray(result.baseline[kind], dtype=float)))
        ax.set_title(f"{kind}\n(baseline mean {base:.2f})", fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(H))
        ax.set_yticks(range(L))
        ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="score")
    fig.suptitle(f"Head scores: {result.model}", fontsize=10)
    try:
        return fsio.save_figure(fig, path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def _heat(result: HeadsResult, kind: str) -> str:
    s = np.asarray(result.scores[kind], dtype=float)
    b = np.asarray(result.baseline[kind], dtype=float)
    sd = np.asarray(result.spread[kind], dtype=float)
    colours, _ = htmlkit.diverging_colours(np.nan_to_num(s), "RdBu")
    head = "<tr><th>layer \\ head</th>" + "".join(f"<th>{h}</th>" for h in range(s.shape[1])) + "</tr>"
    rows = []
    for L in range(s.shape[0]):
        cells = "".join(
            f"<td class=cell style=\"background:{colours[L][h]}\" data-layer={L} data-head={h} title=\""
            f"{htmlkit.esc(f'{kind} L{L}H{h}: {s[L, h]:.3f} ± {sd[L, h]:.3f} (baseline {b[L, h]:.3f})')}\">"
            f"{s[L, h]:.2f}</td>" for h in range(s.shape[1]))
        rows.append(f"<tr><th>{L}</th>{cells}</tr>")
    return f"<table class=heat id=\"heat-{kind}\">{head}{''.join(rows)}</table>"


def _top(result: HeadsResult, kind: str, k: int = 5) -> str:
    rows = []
    for L, h, v in result.top(kind, k):
        rows.append((f"L{L}H{h}", f"{v:.3f}", f"{result.spread[kind][L][h]:.3f}",
                     f"{result.baseline[kind][L][h]:.3f}", f"{result.baseline_spread[kind][L][h]:.3f}"))
    return htmlkit.table(rows, ("head", "score", "spread (std)", "baseline", "baseline spread"))


def _verify_html(v: dict) -> str:
    if not v:
        return "<p class=muted>No causal check was run (use --verify K).</p>"
    rows = [("top-%d induction heads" % v["k"], ", ".join(f"L{a}H{b}" for a, b in v["top_heads"]),
             f"{v['loss_before']:.4f}", f"{v['loss_after']:.4f}", f"{v['increase']:+.4f}")]
    rows += [(f"random draw {i + 1}", ", ".join(f"L{a}H{b}" for a, b in r["heads"]), f"{v['loss_before']:.4f}",
              f"{r['loss_after']:.4f}", f"{r['increase']:+.4f}") for i, r in enumerate(v["random"])]
    return (f"<p>{htmlkit.esc(v['ablation'])} ablation of <code>attn.hook_z</code>; {htmlkit.esc(v['loss'])}.</p>"
            + htmlkit.table(rows, ("ablated", "heads", "loss before", "loss after", "increase")))


def _inputs_html(result: HeadsResult, tokenizer=None, show: int = 3) -> str:
    inp = result.inputs
    if inp.kind == "repeated":
        text = (f"{len(inp.tokens)} sequences [BOS] + r + r, r = {inp.seq_len} distinct random tokens (seed "
                f"{inp.seed}); baseline on [BOS] + r + r' (r' fresh random tokens, no repeat).")
        return f"<p>{htmlkit.esc(text)}</p>"
    items = "".join(f"<li><code>{htmlkit.esc(t)}</code></li>" for t in (inp.texts or [])[:20])
    more = f"<p class=muted>and {len(inp.texts) - 20} more</p>" if len(inp.texts or []) > 20 else ""
    return (f"<p>{len(inp.tokens)} prompts; baseline on the same tokens shuffled (seed {inp.seed}).</p>"
            f"<ul id=prompts>{items}</ul>{more}")


CSS = ".heat td.cell{width:34px;text-align:center;font-size:11px}.heat th{font-size:11px}"


def render_html(result: HeadsResult, png: bytes = b"") -> str:
    parts = [f"<h1>Head scores: {htmlkit.esc(result.model)}</h1>", _inputs_html(result),
             "<p class=muted>score = mean over query positions of the attention on the type's target positions "
             "(definitions: docs/heads.md); spread = standard deviation over sequences; baseline = the same "
             "statistic on the control sequences. Hover a cell for its values.</p>"]
    if result.command:
        parts.append(f"<pre id=command>{htmlkit.esc(result.command)}</pre>")
    parts.append("<h2>Causal check</h2>" + _verify_html(result.verify))
    for kind in SCORE_TYPES:
        parts.append(f"<h2>{htmlkit.esc(kind)}</h2>{_top(result, kind)}{_heat(result, kind)}")
    if png:
        parts.append(f"<h2>All types</h2><img alt=\"heatmaps\" style=\"max-width:100%\" "
                     f"src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">")
    return htmlkit.page(f"mechscope heads: {result.model}", "\n".join(parts), css=CSS)


def write_outputs(result: HeadsResult, out_dir, overwrite: bool = False) -> dict:
    """Write heads.json, heads.png and report.html into out_dir; return {name: path}."""
    out = check_out(out_dir, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"heads.json": fsio.write_json(out / "heads.json", result.to_json())}
    paths["heads.png"] = plot_heads(result, out / "heads.png")
    paths["report.html"] = fsio.write_text(out / "report.html",
                                           render_html(result, paths["heads.png"].read_bytes()))
    return paths
