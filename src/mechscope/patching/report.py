"""Saving a sweep: result.json, result.csv, heatmap.png, verify.json, report.html (one self-contained file).

The report needs no network: the heatmap is an HTML table (colours computed here) whose cells carry their layer,
column, token and value as data attributes; a few lines of inline JavaScript show them on hover (via textContent,
so token text is never parsed as HTML). The PNG is embedded as a data URI. Every piece of text is HTML-escaped.
Every file is written atomically; an earlier result in the folder is only replaced with `overwrite=True`.
"""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..fsio import save_figure, write_bytes, write_json, write_text
from ..htmlkit import diverging_colours, esc as _e, show_piece as _show
from .plot import plot_heatmap
from .result import PatchResult

OUTPUTS = ("result.json", "result.csv", "heatmap.png", "verify.json", "report.html", "pairs")


def check_out_dir(out_dir, overwrite: bool = False) -> Path:
    """Refuse a folder that already holds a sweep's outputs unless `overwrite` (checked before any work)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir={str(out)!r} is a file, not a folder. Choose a folder for the outputs.", "out_dir")
    found = [n for n in OUTPUTS if (out / n).exists()]
    if found and not overwrite:
        raise ConfigError(
            f"out_dir={str(out)!r} already holds a patching result ({', '.join(found)}). Nothing was run or "
            "changed. Choose another folder, or pass overwrite=True (--overwrite) to replace it.", "out_dir")
    return out


def save_result(result: PatchResult, out_dir, overwrite: bool = False) -> dict:
    """Write every output file into out_dir (created); return {name: path}. Each file is written atomically;
    with `overwrite`, the outputs of an earlier result there (a spec's pairs/ too) are replaced."""
    out = check_out_dir(out_dir, overwrite)
    if overwrite and (out / "pairs").is_dir():  # pair folders an earlier, longer spec left behind
        for old in (out / "pairs").iterdir():
            if old.is_dir() and not (old.name.isdigit() and int(old.name) < len(result.pairs)):
                shutil.rmtree(old)
    if overwrite and not result.verify and (out / "verify.json").exists():
        (out / "verify.json").unlink()
    paths = {"result.json": write_json(out / "result.json", result.to_json()),
             "result.csv": write_text(out / "result.csv", result.to_csv())}
    fig = plot_heatmap(result)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    _close(fig)
    png = buf.getvalue()
    paths["heatmap.png"] = write_bytes(out / "heatmap.png", png)
    if result.verify:
        paths["verify.json"] = write_json(out / "verify.json", {
            "correlation": result.verify_correlation, "covers": result.verify_scope, "cells": result.verify})
    for i, pair in enumerate(result.pairs):  # each pair of a spec: the same files under pairs/NN/
        save_result(pair, out / "pairs" / f"{i:02d}", overwrite=True)
    paths["report.html"] = write_text(out / "report.html", render_html(result, png=png))
    return paths


def save_pair(result: PatchResult, out_dir, i: int) -> None:
    """One pair of a spec, saved as soon as it is done (under pairs/NN/), so it is kept if a later pair fails."""
    save_result(result, Path(out_dir) / "pairs" / f"{i:02d}", overwrite=True)


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def write_outputs(result: PatchResult, out_dir) -> dict:
    """Deprecated name of `save_result(result, out_dir, overwrite=True)`."""
    return save_result(result, out_dir, overwrite=True)


def _colours(m: np.ndarray) -> tuple:
    return diverging_colours(m)


def _top_table(rows: list) -> str:
    body = "".join(f"<tr><td>{r['rank']}</td><td>{r['id']}</td><td class=tok>{_show(r['token'])}</td>"
                   f"<td>{r.get('logit', float('nan')):.3f}</td><td>{r['prob']:.4f}</td></tr>" for r in rows)
    return ("<table class=top><thead><tr><th>rank</th><th>id</th><th>token</th><th>logit</th><th>prob</th>"
            f"</tr></thead><tbody>{body}</tbody></table>")


def _heat_table(r: PatchResult) -> str:
    m = np.asarray(r.matrix, dtype=float)
    colours, v = _colours(m)
    kind = r.column_kind

    def label(j):
        if r.kind == "z":
            return _e(r.column_label(j))
        c = r.columns[j]
        text = _show(r.tokens[c]["token"])
        if r.corrupt_tokens and r.corrupt_tokens[c]["id"] != r.tokens[c]["id"]:
            text += "/" + _show(r.corrupt_tokens[c]["token"])
        return f"{c}: {text}"

    head = "".join(f"<th class=col title='{_e(r.column_label(j))}'>{label(j)}</th>" for j in range(len(r.columns)))
    body = []
    for i, L in enumerate(r.layers):
        cells = []
        for j, c in enumerate(r.columns):
            x = m[i, j]
            tok = "" if r.kind == "z" else r.tokens[c]["token"]
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
        fig = plot_heatmap(r)
        fig.savefig(buf, format="png", dpi=130)
        _close(fig)
        png = buf.getvalue()
    clean = r.clean if isinstance(r.clean, list) else [r.clean]
    corrupt = r.corrupt if isinstance(r.corrupt, list) else [r.corrupt]
    mt = r.first_answers()
    pairs = "".join(f"<dt>clean{'' if len(clean) == 1 else f' {i}'}</dt><dd class=tok>{_e(c)}</dd>"
                    f"<dt>corrupted{'' if len(clean) == 1 else f' {i}'}</dt><dd class=tok>{_e(k)}</dd>"
                    for i, (c, k) in enumerate(zip(clean, corrupt)))
    toks = ", ".join(f"{t['role']} = <span class=tok>{_show(t['token'])}</span> (id {t['id']})" for t in mt)
    what = ("metric averaged over %d pairs; " % len(r.pairs)) if r.pairs else ""
    verify = ""
    if r.verify:
        rows = "".join(f"<tr><td>{v['layer']}</td><td>{v['column']}</td><td>{v['attribution']:.4f}</td>"
                       f"<td>{v['exact']:.4f}</td></tr>" for v in r.verify)
        corr = "n/a" if r.verify_correlation is None else f"{r.verify_correlation:.4f}"
        verify = (f"<h2>Attribution vs exact (correlation {corr} over {_e(r.verify_scope)})</h2>"
                  f"<table><thead><tr><th>layer</th><th>{r.column_kind}</th><th>attribution</th><th>exact</th></tr>"
                  f"</thead><tbody>{rows}</tbody></table>")
    toklist = "".join(f"<tr><td>{t['position']}</td><td>{t['id']}</td><td class=tok>{_show(t['token'])}</td>"
                      f"<td>{ck['id']}</td><td class=tok>{_show(ck['token'])}</td>"
                      f"<td>{'differs' if ck['id'] != t['id'] else ''}</td></tr>"
                      for t, ck in zip(r.tokens, r.corrupt_tokens or r.tokens))
    notes = "".join(f"<li>{_e(w)}</li>" for w in r.warnings)
    notes = f"<h2>Warnings</h2><ul id=warnings>{notes}</ul>" if notes else ""
    raw = ""
    if r.raw:
        raw = (f"<p>Raw logit differences (what the normalized values are computed from): clean run "
               f"{r.raw['clean_value']:.4f}, corrupted run {r.raw['corrupt_value']:.4f}; result.json keeps the raw "
               "matrix under <code>raw</code>.</p>")
    z_note = ""
    if r.kind == "z":
        z_note = f"<p>Columns are heads; patched positions: {_e(r.positions)}.</p>"
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>mechscope patching: {_e(r.kind)} / {_e(r.metric)}</title>
<style>{_CSS}</style></head><body>
<h1>Activation patching: {_e(r.direction)} {_e(r.kind)} ({_e(r.method)})</h1>
<dl><dt>model</dt><dd>{_e(r.model)}</dd>{pairs}
<dt>metric</dt><dd>{_e(r.metric)} at the last position; tokens {toks}</dd>
<dt>values</dt><dd>{what}clean run {r.clean_value:.4f}, corrupted run {r.corrupt_value:.4f}; sweep took
{r.seconds:.2f} s (mechscope {_e(r.mechscope_version)})</dd></dl>
<p>Each cell: the metric of the {'corrupted' if r.direction == 'denoise' else 'clean'} run with that one activation
replaced by the {'clean' if r.direction == 'denoise' else 'corrupted'} run's. Hover a cell for its layer,
{r.column_kind}, token and value.</p>{z_note}{raw}{notes}
<p>Hovered: <span id=hovered class=tok>(none)</span></p>
{_heat_table(r)}
<div id=tip></div>
{verify}
<h2>Next-token predictions (top 20)</h2>
<div class=tables><div><h3>clean run</h3>{_top_table(r.clean_top)}</div>
<div><h3>corrupted run</h3>{_top_table(r.corrupt_top)}</div></div>
<h2>Tokens</h2>
<table><thead><tr><th>position</th><th>clean id</th><th>clean token</th><th>corrupt id</th><th>corrupt token</th><th></th>
</tr></thead><tbody>{toklist}</tbody></table>
<h2>Heatmap (PNG)</h2><img alt="heatmap" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Reproduce</h2><pre id=command>{_e(r.command)}</pre>
<script>{_JS}</script>
</body></html>
"""
