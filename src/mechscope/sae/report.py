"""Self-contained HTML (no scripts, no external files): the evaluation report and shared bits for feature pages."""
from __future__ import annotations

import html
import math
from typing import Optional, Sequence

import numpy as np

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f3f3f3} .muted{color:#777} code{background:#f3f3f3;padding:0 3px}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;line-height:1.7;margin:2px 0}
.tok{border-radius:2px;padding:0 1px} .max{outline:1.5px solid #c00}
details{border:1px solid #ddd;border-radius:4px;padding:.4em .8em;margin:.4em 0} summary{cursor:pointer}
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return esc(v)


def table(rows: Sequence[tuple], head: Optional[Sequence[str]] = None) -> str:
    h = "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in head) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{h}{body}</table>"


def svg_line(xs, ys, width=520, height=180, label="", logy=False) -> str:
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y) and (not logy or y > 0)]
    if len(pts) < 2:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    f = (lambda v: math.log10(v)) if logy else (lambda v: v)
    y0, y1 = min(f(p[1]) for p in pts), max(f(p[1]) for p in pts)
    y1 = y1 if y1 > y0 else y0 + 1
    m = 36
    sx = lambda v: m + (v - x0) / max(x1 - x0, 1e-12) * (width - 2 * m)  # noqa: E731
    sy = lambda v: height - m + -(f(v) - y0) / (y1 - y0) * (height - 2 * m)  # noqa: E731
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    lo, hi = (10 ** y0, 10 ** y1) if logy else (y0, y1)
    return (f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">'
            f'<title>{esc(label)}</title><rect width="100%" height="100%" fill="#fff" stroke="#ddd"/>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{path}"/>'
            f'<text x="{m}" y="14" font-size="12">{esc(label)}</text>'
            f'<text x="2" y="{m}" font-size="10">{hi:.3g}</text>'
            f'<text x="2" y="{height - m}" font-size="10">{lo:.3g}</text>'
            f'<text x="{m}" y="{height - 8}" font-size="10">{x0:.3g}</text>'
            f'<text x="{width - m - 30}" y="{height - 8}" font-size="10">{x1:.3g}</text></svg>')


def svg_hist(values: np.ndarray, width=520, height=180, bins=40, label="") -> str:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return ""
    counts, edges = np.histogram(v, bins=bins)
    m, top = 36, max(int(counts.max()), 1)
    bw = (width - 2 * m) / bins
    bars = "".join(
        f'<rect x="{m + i * bw:.1f}" y="{height - m - c / top * (height - 2 * m):.1f}" width="{max(bw - 1, 1):.1f}" '
        f'height="{c / top * (height - 2 * m):.1f}" fill="#1f77b4"><title>{edges[i]:.3g}..{edges[i + 1]:.3g}: {c}'
        f'</title></rect>' for i, c in enumerate(counts))
    return (f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">'
            f'<title>{esc(label)}</title><rect width="100%" height="100%" fill="#fff" stroke="#ddd"/>{bars}'
            f'<text x="{m}" y="14" font-size="12">{esc(label)}</text>'
            f'<text x="{m}" y="{height - 8}" font-size="10">{edges[0]:.3g}</text>'
            f'<text x="{width - m - 30}" y="{height - 8}" font-size="10">{edges[-1]:.3g}</text>'
            f'<text x="2" y="{m}" font-size="10">{top}</text></svg>')


def report_html(result: dict, freqs: np.ndarray, cfg, log: Optional[list] = None) -> str:
    rec = result["reconstruction"]
    parts = [f"<h1>SAE evaluation: {esc(result['site'])}</h1>",
             f"<p class=muted>{esc(cfg.arch)}, d_in={cfg.d_in}, d_sae={cfg.d_sae}"
             + (f", k={cfg.k}" if cfg.k else "") + f", model {esc(cfg.model or '?')}</p>",
             "<h2>Reconstruction (held-out rows)</h2>",
             table([("tokens", rec["tokens"]), ("rows", f"{rec['rows'][0]}..{rec['rows'][1]}"),
                    ("FVU", rec["fvu"]), ("explained variance", rec["explained_variance"]), ("L0", rec["l0"]),
                    (f"dead latents (never active over the last {rec['dead_window_tokens']} tokens)",
                     f"{rec['dead']} ({rec['dead_fraction']:.2%})"),
                    (f"dense latents (active on > {rec['dense_threshold']:.0%} of tokens)",
                     f"{rec['dense']} ({rec['dense_fraction']:.2%})")], ("metric", "value")),
             "<p class=muted>FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the held-out tokens (float64); "
             "L0 = mean number of active latents per token.</p>"]
    sp = result.get("splice")
    if sp:
        parts += ["<h2>Splice test</h2>",
                  table([("texts / tokens", f"{sp['texts']} / {sp['tokens']}"), ("CE clean (nats)", sp["ce_clean"]),
                         ("CE with SAE reconstruction", sp["ce_sae"]), ("CE with site zero-ablated", sp["ce_zero"]),
                         ("CE increase", sp["ce_increase"]), ("fraction of loss recovered", sp["loss_recovered"])],
                        ("quantity", "value")),
                  f"<p class=muted>Text: {esc(sp.get('text_source', 'given texts'))}; contexts of at most "
                  f"{esc(sp.get('max_length'))} tokens ({esc(sp.get('max_length_source', 'argument'))}). "
                  "loss recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean).</p>"]
    f = np.asarray(freqs)
    live = f[f > 0]
    parts += ["<h2>Latent frequencies</h2>",
              svg_hist(np.log10(live), label="log10 activation frequency of live latents") if live.size else
              "<p>No latent was active.</p>"]
    if log:
        steps = [e["tokens"] for e in log]
        parts += ["<h2>Training</h2>", svg_line(steps, [e.get("fvu") for e in log], label="batch FVU vs tokens"),
                  svg_line(steps, [e.get("l0") for e in log], label="L0 vs tokens"),
                  svg_line(steps, [e.get("dead") for e in log], label="dead fraction vs tokens")]
    return page(f"SAE report {result['site']}", "\n".join(parts))
