"""attention.html: every shown layer x head in one self-contained page that makes no request.

Data: weights quantized to 8 bits (round(p * 255)), zlib-compressed, base64, one block per layer, inflated in the
browser (DecompressionStream) only when that layer is opened; the grid is drawn first from max-pooled thumbnails
(at most 64 x 64 per head) so the page paints before any full layer is decoded. Token text reaches the page only as
JSON (htmlkit.script_json) and is put on it with textContent, so it is always shown as text.
"""
from __future__ import annotations

import base64
import zlib

import numpy as np
import torch

from .. import htmlkit
from ..tokens import show_token
from .data import AttentionPatterns

THUMB = 64  # thumbnail side, in cells


def quantize(p: torch.Tensor) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 round(p * 255) (the page shows them back as q / 255)."""
    return (p.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def thumbnails(p: torch.Tensor, side: int = THUMB) -> torch.Tensor:
    """(heads, T, T) -> (heads, S, S), S = min(T, side): max over each block, so thin lines stay visible."""
    s = min(p.shape[-1], side)
    return torch.nn.functional.adaptive_max_pool2d(p[None], s)[0]  # (heads, S, S)


def _blob(a: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(a).tobytes(), 6)).decode("ascii")


def render(r: AttentionPatterns) -> str:
    """The whole page, as text."""
    t = len(r.ids)
    thumbs = np.stack([quantize(thumbnails(r.patterns[L])) for L in r.layers])  # (layers, heads, S, S)
    s = thumbs.shape[-1]
    meta = {"model": r.model, "T": t, "S": s, "layers": r.layers, "heads": r.heads, "causal": r.causal,
            "tokens": [show_token(p) for p in r.pieces], "ids": r.ids, "segments": r.segments}
    blocks = [f'<script type="application/json" id="meta">{htmlkit.script_json(meta)}</script>',
              f'<script type="text/plain" id="thumbs">{_blob(thumbs)}</script>']
    blocks += [f'<script type="text/plain" id="L{i}">{_blob(quantize(r.patterns[L]))}</script>'
               for i, L in enumerate(r.layers)]
    head_row = "".join(f"<span class=hh>H{h}</span>" for h in r.heads)
    rows = "".join(
        f"<div class=row data-layer='{L}'><span class=lab>L{L}</span>"
        + "".join(f"<canvas class=thumb data-li='{i}' data-hi='{j}' width={s} height={s} "
                  f"title='layer {L}, head {h}'></canvas>" for j, h in enumerate(r.heads))
        + "</div>" for i, L in enumerate(r.layers))
    options = "".join(f"<option value='{i}'>layer {L}</option>" for i, L in enumerate(r.layers))
    texts = f"<b>TEXT</b> <span class=txt>{htmlkit.esc(r.text)}</span>"
    if r.pair is not None:
        texts += f"<br><b>PAIR</b> <span class=txt>{htmlkit.esc(r.pair)}</span>"
    kind = "causal: a token attends to itself and earlier tokens" if r.causal else \
        "bidirectional: every token attends to every token"
    body = f"""<h1>Attention patterns: {htmlkit.esc(r.model)}</h1>
<p>{texts}</p>
<p class=muted>{t} tokens; {kind}. Rows of a pattern are queries (the attending token), columns keys. Weights are
stored with 8 bits (steps of 1/255); the exact float32 values are in patterns.safetensors.</p>
<div id=controls><label>Layer <select id=layer><option value='all'>all layers</option>{options}</select></label>
<label><input type=checkbox id=reverse> show what attends to the hovered token (instead of where it attends)</label>
</div>
<div id=main><div id=grid><div class=row><span class=lab></span>{head_row}</div>{rows}</div>
<div id=detail><div id=title></div><canvas id=big width={t} height={t}></canvas><div id=cell>&nbsp;</div></div></div>
<h2>Tokens</h2><p class=muted>Hover a token: the others are shaded by the weight it gives them in the selected
head (click a thumbnail to select one); tick the box above for the weights they give it instead.</p>
<div id=tokens></div><div id=weights>&nbsp;</div>
{''.join(blocks)}
<script>{_JS}</script>"""
    return htmlkit.page(f"mechscope attention: {r.model}", body, css=_CSS)


_CSS = """
.txt{font-family:ui-monospace,monospace;white-space:pre-wrap}#controls{margin:8px 0;display:flex;gap:24px}
#main{display:flex;gap:24px;align-items:flex-start}#grid{max-height:80vh;overflow:auto;padding-right:8px}
.row{display:flex;gap:3px;margin-bottom:3px;align-items:center}.lab{width:34px;font-size:12px;color:#555}
.hh{width:56px;font-size:11px;color:#555;text-align:center}
.thumb{width:56px;height:56px;image-rendering:pixelated;border:1px solid #ddd;cursor:pointer}
.thumb.sel{border-color:#d62728;outline:2px solid #d62728}
#big{width:480px;height:480px;image-rendering:pixelated;border:1px solid #ccc;cursor:crosshair}
#cell,#weights{font-family:ui-monospace,monospace;font-size:12px;min-height:1.4em;white-space:pre-wrap}
#tokens{line-height:2;font-family:ui-monospace,monospace;font-size:13px;max-width:1100px}
.tok{padding:2px 1px;border-radius:3px;cursor:default;white-space:pre}.tok.b{border-bottom:2px solid #ff7f0e}
.tok.hov{outline:2px solid #d62728}.sep{display:inline-block;width:18px}
"""

_JS = r"""
(function(){
'use strict';
var meta = JSON.parse(document.getElementById('meta').textContent);
var T = meta.T, S = meta.S, NH = meta.heads.length;
var PAL = new Uint8ClampedArray(256 * 4);
for (var v = 0; v < 256; v++) {  // white -> dark blue
  var f = v / 255;
  PAL[4*v] = 255 - 247*f; PAL[4*v+1] = 255 - 207*f; PAL[4*v+2] = 255 - 148*f; PAL[4*v+3] = 255;
}
function bytes(id) {
  var s = atob(document.getElementById(id).textContent), a = new Uint8Array(s.length);
  for (var i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
  return a;
}
function inflate(a) {
  var stream = new Blob([a]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Response(stream).arrayBuffer().then(function(b){ return new Uint8Array(b); });
}
var layers = {};
function layer(li) { if (!layers[li]) layers[li] = inflate(bytes('L' + li)); return layers[li]; }
function paint(canvas, data, offset, n, masked) {
  var ctx = canvas.getContext('2d'), img = ctx.createImageData(n, n), d = img.data;
  for (var q = 0; q < n; q++) for (var k = 0; k < n; k++) {
    var i = q * n + k, c = 4 * data[offset + i];
    if (masked && k > q) { d[4*i] = d[4*i+1] = d[4*i+2] = 238; d[4*i+3] = 255; continue; }
    d[4*i] = PAL[c]; d[4*i+1] = PAL[c+1]; d[4*i+2] = PAL[c+2]; d[4*i+3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
var sel = {li: 0, hi: 0}, hovered = null, big = document.getElementById('big');
function w(data, hi, q, k) { return data[(hi * T + q) * T + k] / 255; }
function name(i) { return JSON.stringify(meta.tokens[i]) + ' (' + i + ')'; }
function select(li, hi) {
  sel = {li: li, hi: hi};
  document.querySelectorAll('.thumb.sel').forEach(function(c){ c.classList.remove('sel'); });
  var th = document.querySelector('.thumb[data-li="' + li + '"][data-hi="' + hi + '"]');
  if (th) th.classList.add('sel');
  document.getElementById('title').textContent = 'layer ' + meta.layers[li] + ', head ' + meta.heads[hi];
  return layer(li).then(function(data){
    if (sel.li !== li || sel.hi !== hi) return;
    paint(big, data, hi * T * T, T, meta.causal);
    big.dataset.drawn = meta.layers[li] + ',' + meta.heads[hi];
    shade();
  });
}
big.addEventListener('mousemove', function(ev){
  var r = big.getBoundingClientRect();
  var q = Math.min(T - 1, Math.floor((ev.clientY - r.top) / r.height * T));
  var k = Math.min(T - 1, Math.floor((ev.clientX - r.left) / r.width * T));
  var li = sel.li, hi = sel.hi;
  layer(li).then(function(data){
    document.getElementById('cell').textContent = 'query ' + name(q) + ' -> key ' + name(k) + ': ' +
      (meta.causal && k > q ? 'masked' : w(data, hi, q, k).toFixed(3));
  });
});
var toks = document.getElementById('tokens'), spans = [];
meta.tokens.forEach(function(t, i){
  if (i > 0 && meta.segments[i] !== meta.segments[i-1]) {
    var gap = document.createElement('span'); gap.className = 'sep'; toks.appendChild(gap);
  }
  var s = document.createElement('span');
  s.className = 'tok' + (meta.segments[i] ? ' b' : '');
  s.textContent = t; s.dataset.i = i;
  s.addEventListener('mouseenter', function(){ hovered = i; shade(); });
  toks.appendChild(s); spans.push(s);
});
toks.addEventListener('mouseleave', function(){ hovered = null; shade(); });
var reverse = document.getElementById('reverse');
reverse.addEventListener('change', function(){ shade(); });
function shade() {
  var li = sel.li, hi = sel.hi, at = hovered, rev = reverse.checked;
  if (at === null) {
    spans.forEach(function(s){ s.style.background = ''; s.classList.remove('hov'); s.title = ''; });
    document.getElementById('weights').textContent = '\u00a0';
    return;
  }
  layer(li).then(function(data){
    if (at !== hovered || li !== sel.li || hi !== sel.hi) return;
    var ws = [];
    spans.forEach(function(s, j){
      var x = rev ? w(data, hi, j, at) : w(data, hi, at, j);
      ws.push([x, j]);
      s.style.background = 'rgba(8,48,107,' + (0.85 * x).toFixed(3) + ')';
      s.style.color = x > 0.5 ? '#fff' : '';
      s.title = x.toFixed(3); s.classList.toggle('hov', j === at);
    });
    ws.sort(function(a, b){ return b[0] - a[0]; });
    var lines = ['layer ' + meta.layers[li] + ', head ' + meta.heads[hi] + ': ' +
      (rev ? 'what attends to ' : 'where ') + name(at) + (rev ? '' : ' attends')];
    ws.slice(0, 8).forEach(function(p){ if (p[0] > 0) lines.push('  ' + name(p[1]) + ' ' + p[0].toFixed(3)); });
    document.getElementById('weights').textContent = lines.join('\n');
  });
}
document.getElementById('layer').addEventListener('change', function(){
  var v = this.value;
  document.querySelectorAll('#grid .row[data-layer]').forEach(function(row, i){
    row.style.display = (v === 'all' || String(i) === v) ? '' : 'none';
  });
  if (v !== 'all') select(Number(v), sel.hi);
});
document.querySelectorAll('.thumb').forEach(function(c){
  c.addEventListener('click', function(){ select(Number(c.dataset.li), Number(c.dataset.hi)); });
});
inflate(bytes('thumbs')).then(function(th){
  var thumbs = document.querySelectorAll('.thumb');
  thumbs.forEach(function(c){
    var li = Number(c.dataset.li), hi = Number(c.dataset.hi);
    paint(c, th, (li * NH + hi) * S * S, S, false);
  });
  requestAnimationFrame(function(){
    window.__firstPaint = performance.now();
    document.body.dataset.painted = '1';
  });
  return select(0, 0);
}).then(function(){ document.body.dataset.ready = '1'; });
})();
"""
