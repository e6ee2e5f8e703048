"""What SAE latents respond to: activation frequency and top-activating contexts, as one self-contained HTML page.

One pass over the dataset rows keeps, for every latent, its activation count and its `n_examples` largest
activations (value, row). A context is the `window` tokens on each side of that row within the same document (the
dataset's stored token ids, so no re-tokenisation), each token shaded by the latent's activation on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .. import fsio
from ..errors import MechscopeError
from .data import iter_rows, open_dataset
from .model import SAE
from .report import esc, page


def parse_latents(spec, d_sae: int) -> Optional[list[int]]:
    """'0-99,120,200-210' -> indices; None -> None."""
    if spec is None or isinstance(spec, (list, tuple, range)):
        out = None if spec is None else [int(i) for i in spec]
    else:
        out = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    a, b = part.split("-", 1)
                    out += list(range(int(a), int(b) + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise MechscopeError(f"--latents {spec!r} is not valid: use indices and ranges like "
                                     "0-99,120.") from None
    if out is not None:
        bad = [i for i in out if not 0 <= i < d_sae]
        if bad:
            raise MechscopeError(f"Latent {bad[0]} is out of range: this SAE has latents 0..{d_sae - 1}.")
    return out


@torch.no_grad()
def scan(sae: SAE, ds, site: str, n_examples: int = 10, max_tokens: Optional[int] = None,
         batch_size: int = 4096, device="cpu"):
    """(counts (d_sae,), n_tokens, top_vals (d_sae, n), top_rows (d_sae, n)) over the first max_tokens rows."""
    n = len(ds) if max_tokens is None else min(len(ds), max_tokens)
    m = sae.cfg.d_sae
    counts = torch.zeros(m, dtype=torch.long)
    best_v = torch.full((m, n_examples), -float("inf"))
    best_r = torch.full((m, n_examples), -1, dtype=torch.long)
    sae = sae.to(device)
    for rows, x in iter_rows(ds, site, 0, n, batch_size):
        acts = sae.encode(x.to(device)).cpu()
        counts += (acts > 0).sum(0)
        kk = min(n_examples, acts.shape[0])
        v, i = acts.T.topk(kk, dim=1)
        r = torch.as_tensor(rows)[i]
        allv, allr = torch.cat([best_v, v], 1), torch.cat([best_r, r], 1)
        v2, j = allv.topk(n_examples, dim=1)
        best_v, best_r = v2, allr.gather(1, j)
    return counts.numpy(), n, best_v.numpy(), best_r.numpy()


def context_rows(ds, row: int, window: int) -> np.ndarray:
    """Rows around `row` in the same document with consecutive positions."""
    n = len(ds)
    lo, hi = max(0, row - window), min(n, row + window + 1)
    rows = np.arange(lo, hi)
    docs = np.asarray(ds.doc_ids[lo:hi])
    pos = np.asarray(ds.positions[lo:hi]).astype(np.int64)
    p0 = int(ds.positions[row])
    keep = (docs == ds.doc_ids[row]) & (pos - p0 == rows - row)
    return rows[keep]


def token_decoder(ds, tokenizer=None) -> Callable[[int], str]:
    """A function token id -> text piece: the given tokenizer (or Model), else the dataset's, else '<id>'."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    if tok is None:
        man = getattr(ds, "manifest", None) or {}
        name = man.get("tokenizer")
        if isinstance(name, dict):
            name = name.get("name_or_path") or name.get("path") or name.get("name")
        from .data import manifest_model

        for cand in [name, manifest_model(ds)]:
            if not cand:
                continue
            try:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(cand, local_files_only=True)
                break
            except Exception:  # noqa: BLE001 - fall back on ids
                tok = None
    if tok is None:
        return lambda i: f"<{int(i)}>"
    cache: dict = {}

    def dec(i):
        i = int(i)
        if i not in cache:
            cache[i] = tok.decode([i])
        return cache[i]

    return dec


def features(sae, data, latents=None, *, top: Optional[int] = None, out=None, n_examples: int = 10,
             window: int = 8, max_tokens: Optional[int] = None, tokenizer=None, site: Optional[str] = None,
             device: str = "cpu") -> dict:
    """Frequencies and top contexts for `latents` ('0-99', a list, or None with `top`: the `top` most frequent;
    default: the 100 most frequent). Writes features.html and features.json into `out` when given."""
    sae = sae if isinstance(sae, SAE) else SAE.load(sae, device=device)
    ds = open_dataset(data)
    site = site or sae.cfg.site
    if int(ds.d(site)) != sae.cfg.d_in:
        raise MechscopeError(f"The dataset's {site} has d={ds.d(site)}, the SAE expects d_in={sae.cfg.d_in}.")
    chosen = parse_latents(latents, sae.cfg.d_sae)
    counts, n, best_v, best_r = scan(sae, ds, site, n_examples, max_tokens, device=device)
    freq = counts / max(n, 1)
    if chosen is None:
        chosen = [int(i) for i in np.argsort(-freq, kind="stable")[: (top or 100)]]
    dec = token_decoder(ds, tokenizer)
    token_ids = ds.token_ids
    items = []
    with torch.no_grad():
        for lat in chosen:
            examples = []
            for v, r in zip(best_v[lat], best_r[lat]):
                if r < 0 or not v > 0:
                    continue
                rows = context_rows(ds, int(r), window)
                acts = sae.encode(torch.from_numpy(np.require(ds.read(site, rows), np.float32, ["C", "W"])).to(device))
                a = acts[:, lat].cpu().numpy()
                examples.append({"row": int(r), "doc": int(ds.doc_ids[int(r)]), "position": int(ds.positions[int(r)]),
                                 "activation": float(v),
                                 "tokens": [{"id": int(token_ids[int(q)]), "text": dec(token_ids[int(q)]),
                                             "act": float(x), "max": int(q) == int(r)} for q, x in zip(rows, a)]})
            items.append({"latent": lat, "frequency": float(freq[lat]), "count": int(counts[lat]),
                          "max_activation": float(best_v[lat][0]) if best_v[lat][0] > 0 else 0.0,
                          "examples": examples})
    result = {"site": site, "tokens_scanned": int(n), "window": window, "latents": items}
    if out is not None:
        out = Path(out)
        fsio.write_json(out / "features.json", result)
        fsio.write_text(out / "features.html", features_html(result, sae))
    return result


def _tok_html(t: dict, peak: float) -> str:
    alpha = 0.0 if peak <= 0 else max(0.0, min(1.0, t["act"] / peak))
    cls = "tok max" if t["max"] else "tok"
    return (f'<span class="{cls}" style="background:rgba(255,120,0,{alpha:.2f})" '
            f'title="{esc(repr(t["text"]))} id={t["id"]} act={t["act"]:.3g}">{esc(t["text"])}</span>')


def features_html(result: dict, sae: SAE) -> str:
    c = sae.cfg
    rows = [(f'<a href="#l{it["latent"]}">{it["latent"]}</a>', it["frequency"], it["max_activation"])
            for it in result["latents"]]
    index = ("<table><tr><th>latent</th><th>frequency</th><th>max activation</th></tr>"
             + "".join(f"<tr><td>{a}</td><td>{b:.4g}</td><td>{m:.4g}</td></tr>" for a, b, m in rows) + "</table>")
    blocks = []
    for it in result["latents"]:
        ex = []
        for e in it["examples"]:
            peak = max([t["act"] for t in e["tokens"]] + [e["activation"]])
            ex.append(f'<div class="ctx"><span class="muted">{e["activation"]:.3g} · doc {e["doc"]} pos '
                      f'{e["position"]} ·</span> ' + "".join(_tok_html(t, peak) for t in e["tokens"]) + "</div>")
        # The index links to the contexts inside the (closed) <details>, not to the <details> itself: navigating to
        # an element inside a closed <details> opens it (HTML's ancestor-details revealing), so a click on a latent
        # in the index shows its contexts; the scroll margin keeps the summary line in view above them.
        blocks.append(f'<details><summary><b>latent {it["latent"]}</b> — frequency '
                      f'{it["frequency"]:.4g} ({it["count"]} tokens), max {it["max_activation"]:.4g}</summary>'
                      f'<div id="l{it["latent"]}" class="ctxs" style="scroll-margin-top:3em">'
                      + ("".join(ex) or "<p class=muted>Never active on the scanned tokens.</p>") + "</div></details>")
    head = (f"<h1>SAE features: {esc(result['site'])}</h1><p class=muted>{esc(c.arch)}, d_sae={c.d_sae}, "
            f"{result['tokens_scanned']} tokens scanned, contexts of ±{result['window']} tokens; shading = the "
            "latent's activation relative to the context's peak; the outlined token is the one the context was "
            "chosen for (its activation is the number on the left).</p>")
    return page(f"SAE features {result['site']}", head + "<h2>Latents</h2>" + index + "<h2>Contexts</h2>"
                + "\n".join(blocks))


__all__ = ["features", "parse_latents", "scan", "context_rows", "features_html"]
