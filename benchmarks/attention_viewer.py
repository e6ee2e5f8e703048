"""Benchmark: `mechscope attention`'s page against a BertViz-style JSON-text encoding, in one run.

    python benchmarks/attention_viewer.py [--tokens 512] [--baseline-tokens 128] [--work DIR] [--device cpu]

On the embedded model (SmolLM2-135M: 30 layers x 9 heads), every layer and head:

  mechscope   attention.html as `mechscope attention` writes it: 8-bit weights, zlib + base64, one block per layer
              (inflated in the browser on demand), grid drawn from max-pooled 64 x 64 thumbnails
  json-text   the way BertViz embeds patterns: every probability as JSON text (json.dumps of the float32 values'
              Python floats) in a script, parsed by the page, the same thumbnails then drawn from it

Recorded: file size, bytes per attention value (file size / (layers x heads x T x T)), time to first paint in headless
Chromium (navigation start to the grid drawn, the page's own `performance.now()`), and for mechscope the time to
open the last layer's head (inflate + draw) and to answer a token hover there. The JSON-text page is built and opened
at --baseline-tokens (at 512 tokens it would be one string longer than V8's limit of 2^29 - 24 characters; its size at
--tokens is computed exactly, layer by layer, and reported). Not a test: nothing is asserted about time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

TEXT = ("The history of the city begins with a small settlement on the river, where traders stopped to rest. Over "
        "the centuries it grew into a market town, then a centre of learning, with a university, a cathedral and a "
        "busy port. ")
V8_MAX_STRING = 2 ** 29 - 24
CHROMIUM = os.environ.get("MECHSCOPE_CHROMIUM", "/usr/bin/chromium")

_BASELINE_JS = """
var S = %d;
function draw(){
  var cs = document.querySelectorAll('canvas');
  var k = 0;
  for (var l = 0; l < ATTN.length; l++) for (var h = 0; h < ATTN[l].length; h++) {
    var a = ATTN[l][h], T = a.length, c = cs[k++], ctx = c.getContext('2d'), img = ctx.createImageData(S, S);
    for (var i = 0; i < S; i++) for (var j = 0; j < S; j++) {
      var m = 0, q0 = Math.floor(i * T / S), q1 = Math.ceil((i + 1) * T / S);
      var k0 = Math.floor(j * T / S), k1 = Math.ceil((j + 1) * T / S);
      for (var q = q0; q < q1; q++) for (var kk = k0; kk < k1; kk++) if (a[q][kk] > m) m = a[q][kk];
      var p = 4 * (i * S + j), v = Math.round(255 * (1 - m));
      img.data[p] = v; img.data[p+1] = v; img.data[p+2] = 255; img.data[p+3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }
  requestAnimationFrame(function(){ window.__firstPaint = performance.now(); document.body.dataset.painted = '1'; });
}
draw();
"""


def prompt_of(model, n_tokens: int) -> str:
    """A text of about n_tokens tokens (the repeated paragraph, cut at a token boundary)."""
    ids = model.encode(TEXT * (n_tokens // 40 + 2))[:n_tokens]
    return model.tokenizer.decode(ids, skip_special_tokens=True)


def json_text_page(r, path: Path) -> int:
    """BertViz's encoding (probabilities as JSON numbers) in a page that draws the same thumbnail grid."""
    s = min(len(r.ids), 64)
    canvases = "".join(f"<canvas width={s} height={s}></canvas>" for _ in r.layers for _ in r.heads)
    with open(path, "w") as fh:
        fh.write(f"<!DOCTYPE html><html><head><meta charset=utf-8></head><body>{canvases}<script>var ATTN = ")
        fh.write("[")
        for i, L in enumerate(r.layers):
            fh.write(("," if i else "") + json.dumps(r.patterns[L].tolist()))
        fh.write("];" + _BASELINE_JS % s + "</script></body></html>")
    return path.stat().st_size


def json_text_bytes(r) -> int:
    return sum(len(json.dumps(r.patterns[L].tolist())) + 1 for L in r.layers) + 1


def open_page(path: Path, hover: bool) -> dict:
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            requests = []
            page.on("request", lambda q: requests.append(q.url))
            t0 = time.perf_counter()
            page.goto(path.as_uri(), timeout=600_000)
            page.wait_for_selector("body[data-painted='1']", timeout=600_000)
            out["first_paint_s"] = page.evaluate("window.__firstPaint") / 1000
            out["wall_to_paint_s"] = time.perf_counter() - t0
            out["requests"] = len(requests)
            if hover:
                page.wait_for_selector("body[data-ready='1']", timeout=600_000)
                n = page.evaluate("document.querySelectorAll('.row[data-layer]').length")
                t0 = time.perf_counter()
                page.click(f".thumb[data-li='{n - 1}'][data-hi='0']")
                page.wait_for_function("document.getElementById('big').dataset.drawn.startsWith("
                                       f"document.querySelectorAll('.row[data-layer]')[{n - 1}].dataset.layer + ',')")
                out["open_last_layer_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                page.hover("#tokens .tok[data-i='100']")
                page.wait_for_function("document.getElementById('weights').textContent.includes('(100)')")
                out["hover_s"] = time.perf_counter() - t0
        finally:
            browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--baseline-tokens", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None, help="folder for the pages (default: a temporary one)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import mechscope
    from mechscope.attention import attention_patterns, write_outputs

    model = mechscope.load(device=args.device)
    work = Path(args.work or tempfile.mkdtemp(prefix="attn-bench-"))
    rows = {}
    for n in sorted({args.baseline_tokens, args.tokens}):
        t0 = time.perf_counter()
        r = attention_patterns(model, prompt_of(model, n))
        forward_s = time.perf_counter() - t0
        t = len(r.ids)
        values = len(r.layers) * len(r.heads) * t * t
        t0 = time.perf_counter()
        html = write_outputs(r, work / f"mechscope-{t}", overwrite=True)["attention.html"]
        write_s = time.perf_counter() - t0
        size = html.stat().st_size
        row = {"tokens": t, "values": values, "forward_s": forward_s, "write_s": write_s,
               "mechscope": {"bytes": size, "bytes_per_value": size / values, **open_page(html, hover=t > 100)}}
        if n == args.baseline_tokens:
            jpath = work / f"json-text-{t}.html"
            jsize = json_text_page(r, jpath)
            row["json_text"] = {"bytes": jsize, "bytes_per_value": jsize / values, **open_page(jpath, hover=False)}
        else:
            jsize = json_text_bytes(r)
            row["json_text"] = {"bytes": jsize, "bytes_per_value": jsize / values,
                                "opens": jsize < V8_MAX_STRING, "note": "size computed; page not built"}
        row["size_ratio"] = row["json_text"]["bytes"] / size
        rows[t] = row
        print(json.dumps(row, indent=1))
    info = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
            "model": model.name, "layers": model.cfg.n_layers, "heads": model.cfg.n_heads}
    print(json.dumps(info))


if __name__ == "__main__":
    main()
