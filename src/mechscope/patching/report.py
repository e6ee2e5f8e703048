"""Writing a sweep's outputs: result.json, result.csv, heatmap.png, report.html (one self-contained file).

The report needs no network: the heatmap is an HTML table (colours computed here) whose cells carry their layer,
column, token and value as data attributes; a few lines of inline JavaScript show them on hover (via textContent,
so token text is never parsed as HTML). The PNG is embedded as a data URI. Every piece of text is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from ..jsonsafe import json_safe
from .sweep import PatchResult


def write_outputs(result: PatchResult, out_dir) -> dict:
    """Write every output file into out_dir (created); return {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    paths["result.json"] = out / "result.json"
    paths["result.json"].write_text(json.dumps(json_safe(result.to_json()), indent=2, ensure_ascii=False))
    paths["result.csv"] = out / "result.csv"
    paths["result.csv"].write_text(result.to_csv())
    paths["heatmap.png"] = out / "heatmap.png"
    result.plot(paths["heatmap.png"])
    if result.verify:
        paths["verify.json"] = out / "verify.json"
        paths["verify.json"].write_text(json.dumps(
            {"correlation": result.verify_correlation, "cells": result.verify}, indent=2))
    for i, pair in enumerate(result.pairs):  # each pair of a spec: the same files under pairs/NN/
        write_outputs(pair, out / "pairs" / f"{i:02d}")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(render_html(result, png=paths["heatmap.png"].read_bytes()), encoding="utf-8")
    return paths


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _show(piece: str) -> str:
    """Token text made visible: spaces as '·', newlines/tabs escaped; then HTML-escaped."""
    return _e(piece.replace(" ", "\u00b7").replace("\n", "\\n").replace("\t", "\\t") if piece else "\u2205")


def _colours(m: np.ndarray) -> tuple:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    finite = m[np.isfinite(m)]
    v = float(np.abs(finite).max()) if finite.size else 1.0
    v = v or 1.0
    cmap = colormaps["RdBu"]
    return [[to_hex(cmap(0.5 + 0.5 * max(-1.0, min(1.0, (x if np.isfinite(x) else 0.0) / v)))) for x in row]
            for row in m], v


def _top_table(rows: list) -> str:
    body = "".join(f"<tr><td>{r['rank']}</td><td>{r['id']}</td><td class=tok>{_show(r['text'])}</td>"
                   f"<td>{r['prob']:.4f}</td></tr>" for r in rows)
    return ("<table class=top><thead><tr><th>Position</th><th>Token index</th><th>Token</th><th>Probability</th>"
            f"</tr></thead><tbody>{body}</tbody></table>")


def _heat_table(r: PatchResult) -> str:
    m = np.asarray(r.matrix, dtype=float)
    colours, v = _colours(m)
    kind = r.column_kind
    def label(j):
        if r.site == "z":
            return _e(r.column_label(j))
        c = r.columns[j]
        text = _show(r.tokens[c]["text"])
        if r.corrupt_tokens and r.corrupt_tokens[c]["id"] != r.tokens[c]["id"]:
            text += "/" + _show(r.corrupt_tokens[c]["text"])
        return f"{c}: {text}"

    head = "".join(f"<th class=col title='{_e(r.column_label(j))}'>{label(j)}</th>" for j in range(len(r.columns)))
    body = []
    for i, L in enumerate(r.layers):
        cells = []
        for j, c in enumerate(r.columns):
            x = m[i, j]
            tok = "" if r.site == "z" else r.tokens[c]["text"]
            dark = abs(x) > 0.6 * v if np.isfinite(x) else False
            cells.append(
                f"<td class=cell style='background:{colours[i][j]};color:{'#fff' if dark else '#000'}' "
                f"data-layer='{L}' data-kind='{kind}' data-col='{c}' data-token='{_e(tok)}' "
                f"data-value='{x:.6g}'>{x:.2f}</td>")
        body.append(f"<tr><th class=row>{L}</th>{''.join(cells)}</tr>")
    return (f"<table id=heat><thead><tr><th>layer \\ {kind}</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 5px;text-align:center}
#heat td.cell{min-width:3.2em;cursor:crosshair}#heat th.col{white-space:nowrap;font-weight:normal}
.tok{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre}
#tip{position:fixed;display:none;background:#111;color:#fff;padding:4px 8px;border-radius:4px;font-size:13px;
pointer-events:none;z-index:10;font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre}
pre{background:#f5f5f5;padding:.6em;overflow-x:auto;white-space:pre-wrap}dt{font-weight:bold}dd{margin:0 0 .4em 1em}
.tables{display:flex;gap:2em;flex-wrap:wrap}img{max-width:100%}
"""

_JS = """
(function(){
  var tip = document.getElementById('tip'), shown = document.getElementById('hovered');
  function show(td, ev){
    var d = td.dataset;
    var text = 'layer ' + d.layer + ', ' + d.kind + ' ' + d.col +
      (d.kind === 'position' ? ', token ' + JSON.stringify(d.token) : '') + ', value ' + d.value;
    tip.textContent = text; shown.textContent = text; tip.style.display = 'block';
    if (ev) { tip.style.left = (ev.clientX + 14) + 'px'; tip.style.top = (ev.clientY + 14) + 'px'; }
  }
  var cells = document.querySelectorAll('#heat td.cell');
  for (var i = 0; i < cells.length; i++) {
    cells[i].addEventListener('mouseenter', function(ev){ show(this, ev); });
    cells[i].addEventListener('mousemove', function(ev){ show(this, ev); });
    cells[i].addEventListener('mouseleave', function(){ tip.style.display = 'none'; });
  }
})();
"""


def render_html(r: PatchResult, png: bytes = None) -> str:
    if png is None:
        buf = io.BytesIO()
        r.plot().savefig(buf, format="png", dpi=130)
        png = buf.getvalue()
    clean = r.clean if isinstance(r.clean, list) else [r.clean]
    corrupt = r.corrupt if isinstance(r.corrupt, list) else [r.corrupt]
    mt = r.metric_tokens if r.metric_tokens and isinstance(r.metric_tokens[0], dict) else r.metric_tokens[0]
    pairs = "".join(f"<dt>clean{'' if len(clean) == 1 else f' {i}'}</dt><dd class=tok>{_e(c)}</dd>"
                    f"<dt>corrupted{'' if len(clean) == 1 else f' {i}'}</dt><dd class=tok>{_e(k)}</dd>"
                    for i, (c, k) in enumerate(zip(clean, corrupt)))
    toks = ", ".join(f"{t['role']} = <span class=tok>{_show(t['text'])}</span> (id {t['id']})" for t in mt)
    what = ("metric averaged over %d pairs; " % len(r.pairs)) if r.pairs else ""
    verify = ""
    if r.verify:
        rows = "".join(f"<tr><td>{v['layer']}</td><td>{v['column']}</td><td>{v['attribution']:.4f}</td>"
                       f"<td>{v['exact']:.4f}</td></tr>" for v in r.verify)
        corr = "n/a" if r.verify_correlation is None else f"{r.verify_correlation:.4f}"
        verify = (f"<h2>Attribution vs exact ({len(r.verify)} strongest cells; correlation {corr})</h2>"
                  f"<table><thead><tr><th>layer</th><th>{r.column_kind}</th><th>attribution</th><th>exact</th></tr>"
                  f"</thead><tbody>{rows}</tbody></table>")
    toklist = "".join(f"<tr><td>{t['index']}</td><td>{t['id']}</td><td class=tok>{_show(t['text'])}</td>"
                      f"<td>{ck['id']}</td><td class=tok>{_show(ck['text'])}</td>"
                      f"<td>{'differs' if ck['id'] != t['id'] else ''}</td></tr>"
                      for t, ck in zip(r.tokens, r.corrupt_tokens or r.tokens))
    z_note = ""
    if r.site == "z":
        z_note = f"<p>Columns are heads; patched positions: {_e(r.positions)}.</p>"
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>mechscope patching: {_e(r.site)} / {_e(r.metric)}</title>
<style>{_CSS}</style></head><body>
<h1>Activation patching: {_e(r.direction)} {_e(r.site)} ({_e(r.method)})</h1>
<dl><dt>model</dt><dd>{_e(r.model)}</dd>{pairs}
<dt>metric</dt><dd>{_e(r.metric)} at the last position; tokens {toks}</dd>
<dt>values</dt><dd>{what}clean run {r.clean_value:.4f}, corrupted run {r.corrupt_value:.4f}; sweep took
{r.seconds:.2f} s (mechscope {_e(r.mechscope_version)})</dd></dl>
<p>Each cell: the metric of the {'corrupted' if r.direction == 'denoise' else 'clean'} run with that one activation
replaced by the {'clean' if r.direction == 'denoise' else 'corrupted'} run's. Hover a cell for its layer,
{r.column_kind}, token and value.</p>{z_note}
<p>Hovered: <span id=hovered class=tok>(none)</span></p>
{_heat_table(r)}
<div id=tip></div>
{verify}
<h2>Next-token predictions (top 20)</h2>
<div class=tables><div><h3>clean run</h3>{_top_table(r.clean_top)}</div>
<div><h3>corrupted run</h3>{_top_table(r.corrupt_top)}</div></div>
<h2>Tokens</h2>
<table><thead><tr><th>index</th><th>clean id</th><th>clean token</th><th>corrupt id</th><th>corrupt token</th><th></th>
</tr></thead><tbody>{toklist}</tbody></table>
<h2>Heatmap (PNG)</h2><img alt="heatmap" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Reproduce</h2><pre id=command>{_e(r.command)}</pre>
<script>{_JS}</script>
</body></html>
"""
