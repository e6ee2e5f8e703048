"""What every HTML page mechscope writes shares: escaping, token display, the page shell, a diverging colour scale.

Pages are self-contained (inline CSS, no script or font from outside) and every text they show goes through `esc`.
"""
from __future__ import annotations

import html
import json
from typing import Sequence

import numpy as np

from .jsonsafe import json_safe

BASE_CSS = (
    "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}"
    "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;font-size:13px}"
    "th{background:#f4f4f4}code,pre{font-family:ui-monospace,monospace;font-size:12px}"
    "h1{font-size:20px}h2{font-size:16px;margin-top:24px}.muted{color:#777}"
)


def esc(x) -> str:
    """HTML-escape any value's text (quotes included, so it is safe inside attributes too)."""
    return html.escape(str(x), quote=True)


def script_json(obj) -> str:
    """JSON for a `<script type="application/json">` block: '<', '>' and '&' escaped as \\u003c etc., so no text
    in it (a token such as '</script>') can end the block; read it back with JSON.parse(el.textContent)."""
    text = json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def show_piece(piece: str) -> str:
    """Token text made visible (spaces as '·', newlines/tabs escaped, '∅' if empty), then HTML-escaped."""
    return esc(piece.replace(" ", "\u00b7").replace("\n", "\\n").replace("\t", "\\t") if piece else "\u2205")


def page(title: str, body: str, css: str = "", head: str = "") -> str:
    """A whole self-contained HTML document."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{BASE_CSS}{css}</style>{head}</head><body>\n{body}\n</body></html>\n")


def diverging_colours(m: np.ndarray, cmap_name: str = "RdBu") -> tuple[list, float]:
    """Hex colours for a matrix on a diverging scale centred at 0 (non-finite cells white), and the scale's |max|."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    m = np.asarray(m, dtype=float)
    finite = m[np.isfinite(m)]
    v = float(np.abs(finite).max()) if finite.size else 1.0
    v = v or 1.0
    cmap = colormaps[cmap_name]
    return [[to_hex(cmap(0.5 + 0.5 * max(-1.0, min(1.0, (x if np.isfinite(x) else 0.0) / v)))) for x in row]
            for row in m], v


def table(rows: Sequence[tuple], head: Sequence[str] = ()) -> str:
    """A plain HTML table; every cell escaped."""
    h = "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in head) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{h}{body}</table>"
