"""Evaluating a SAE: reconstruction metrics on held-out rows, and the splice test (Model.run with a patch).

Splice test: the model reads held-out text three times, through `Model.run(..., patch={site: fn})`:
clean; with the site replaced by the SAE's reconstruction; with the site zero-ablated. CE is the mean next-token
cross-entropy (nats) over real tokens that have a real next token (padding never counts).
    ce_increase        = CE_sae - CE_clean
    loss_recovered     = (CE_zero - CE_sae) / (CE_zero - CE_clean)   (1 = as good as the clean model, 0 = as bad as
                                                                       zero-ablation)
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .. import fsio
from ..errors import MechscopeError
from ..jsonsafe import json_safe
from .data import iter_rows, open_dataset, split_rows
from .metrics import Accumulator
from .model import SAE


def _as_sae(sae, device="cpu") -> SAE:
    return sae if isinstance(sae, SAE) else SAE.load(sae, device=device)


def heldout_range(sae: SAE, ds) -> tuple[int, int]:
    """The rows the SAE did not train on: its recorded held-out rows when the dataset has the length it was trained
    on, else the dataset's last ~5% (a different dataset is unseen as a whole, but we keep the rule simple)."""
    data = (sae.cfg.extra or {}).get("data") or {}
    if data.get("rows") == len(ds) and data.get("heldout_rows"):
        a, b = data["heldout_rows"]
        return int(a), int(b)
    if data:  # trained on another dataset: all of this one is held out
        return 0, len(ds)
    return split_rows(ds)


@torch.no_grad()
def reconstruction_metrics(sae: SAE, ds, site: Optional[str] = None, rows: Optional[tuple] = None,
                           max_tokens: Optional[int] = None, batch_size: int = 8192, device="cpu",
                           dead_window: Optional[int] = None) -> dict:
    """FVU, explained variance, L0, dead and dense latents over rows [a, b) of the dataset (see metrics.py).
    Dead = never active over the last `dead_window` evaluated tokens (default: all of them)."""
    site = site or sae.cfg.site
    a, b = rows if rows is not None else heldout_range(sae, ds)
    if max_tokens is not None:
        b = min(b, a + max_tokens)
    if b <= a:
        raise MechscopeError(f"No rows to evaluate on (rows {a}..{b}).")
    if int(ds.d(site)) != sae.cfg.d_in:
        raise MechscopeError(f"The dataset's {site} has d={ds.d(site)}, the SAE expects d_in={sae.cfg.d_in}.")
    acc = Accumulator(sae.cfg.d_sae, dead_window=dead_window)
    sae = sae.to(device)
    for _, x in iter_rows(ds, site, a, b, batch_size):
        x = x.to(device)
        acts = sae.encode(x)
        acc.update(x, sae.decode(acts), acts)
    res = acc.result()
    res["rows"] = [a, b]
    return res


def _token_rows(model, texts: Sequence[str], max_length: Optional[int]) -> list[list[int]]:
    n_ctx = model.cfg.n_ctx or 1 << 30
    limit = min(n_ctx, max_length or n_ctx)
    rows = []
    for t in texts:
        if t and t.strip():
            ids = model.encode(t)[:limit]
            if len(ids) >= 2:
                rows.append(ids)
    if not rows:
        raise MechscopeError("No usable text for the splice test (every text was empty or a single token).")
    return rows


@torch.no_grad()
def _ce(model, rows: list, patch: Optional[dict], batch_size: int) -> tuple[float, int]:
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        logits, cache = model.run(rows[i:i + batch_size], patch=patch)
        ids, mask = cache.input_ids, cache.attention_mask
        lp = torch.log_softmax(logits[:, :-1].double(), -1)
        nll = -lp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        ok = mask[:, 1:] & mask[:, :-1]
        total += float(nll[ok].sum())
        count += int(ok.sum())
    return total / max(count, 1), count


def splice_test(model, sae, texts: Sequence[str], site: Optional[str] = None, batch_size: int = 8,
                max_length: Optional[int] = 256) -> dict:
    """Cross-entropy of `model` on `texts` clean, with `site` replaced by the SAE reconstruction, and zero-ablated."""
    sae = _as_sae(sae)
    site = site or sae.cfg.site
    if site is None:
        raise MechscopeError("The SAE does not record its site: pass site= (--site).")
    sae = sae.to(model.device)
    rows = _token_rows(model, texts, max_length)
    t0 = time.perf_counter()
    clean, n = _ce(model, rows, None, batch_size)
    def reconstruct(act):  # per-head sites (B, T, H, D) were stored flattened to H * D
        return sae(act.flatten(-2)).view_as(act) if act.ndim == 4 else sae(act)

    spliced, _ = _ce(model, rows, {site: reconstruct}, batch_size)
    zero, _ = _ce(model, rows, {site: lambda act: torch.zeros_like(act)}, batch_size)
    den = zero - clean
    return {"site": site, "texts": len(rows), "tokens": n, "ce_clean": clean, "ce_sae": spliced, "ce_zero": zero,
            "ce_increase": spliced - clean,
            "loss_recovered": (zero - spliced) / den if abs(den) > 1e-12 else float("nan"),
            "seconds": time.perf_counter() - t0}


def heldout_texts(ds, rows: tuple, limit: int = 32) -> list[str]:
    """Texts of the documents behind the held-out rows (for the splice test), in order, at most `limit`."""
    return [t for _, t in heldout_documents(ds, rows, limit)]


def heldout_documents(ds, rows: tuple, limit: int = 32) -> list[tuple]:
    """(doc_id, text) of the documents behind rows [a, b), in order, at most `limit`; a document that also has rows
    before `a` (it straddles the train / held-out cut) is left out."""
    if not hasattr(ds, "document_text"):
        return []
    a, b = rows
    docs = np.asarray(ds.doc_ids[a:b])
    before = int(ds.doc_ids[a - 1]) if a > 0 else None
    out, seen = [], set()
    for d in docs:
        d = int(d)
        if d in seen or d == before:
            continue
        seen.add(d)
        try:
            text = ds.document_text(d)
        except Exception:  # noqa: BLE001 - a missing text only shrinks the sample
            continue
        if text and text.strip():
            out.append((d, text))
        if len(out) >= limit:
            break
    return out


def dataset_max_length(sae: SAE, ds) -> tuple:
    """(max_length, where it came from): the dataset's, else the one recorded when the SAE was trained, else 256."""
    man = getattr(ds, "manifest", None) or {}
    if man.get("max_length"):
        return int(man["max_length"]), "the dataset's max_length"
    data = (sae.cfg.extra or {}).get("data") or {}
    if data.get("max_length"):
        return int(data["max_length"]), "the max_length of the dataset the SAE was trained on"
    return 256, "default: the dataset records no max_length"


def _splice(model, sae: SAE, ds, texts, site, rows, splice_docs: int, max_length, device) -> Optional[dict]:
    if texts is None:
        docs = heldout_documents(ds, tuple(rows), splice_docs)
        texts = [t for _, t in docs]
        source = (f"{len(docs)} held-out document(s) of the dataset (doc ids {docs[0][0]}..{docs[-1][0]})" if docs
                  else None)
    else:
        source = f"{len(texts)} given text(s)"
    if not texts:
        return None
    if max_length is None:
        max_length, how = dataset_max_length(sae, ds)
    else:
        how = "as asked"
    if model is None or isinstance(model, str):
        from ..loading import load

        model = load(model or sae.cfg.model or "default", device=device)
    res = splice_test(model, sae, texts, site, max_length=max_length)
    res.update(max_length=max_length, max_length_source=how, text_source=source)
    return res


def read_log(path: Path) -> list[dict]:
    """The entries of a train_log.jsonl; a last line cut short by a kill is skipped."""
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return [e for e in entries if isinstance(e, dict) and "step" in e]


def evaluate(sae, data, *, model=None, texts: Optional[Sequence[str]] = None, site: Optional[str] = None,
             max_tokens: Optional[int] = None, splice_docs: int = 32, out=None, device: str = "cpu",
             max_length: Optional[int] = None, dead_window: Optional[int] = None) -> dict:
    """All metrics of `mechscope sae eval`: reconstruction on held-out rows and (with a model) the splice test.

    `model` is a mechscope Model (or a name to load; None: the model recorded in the SAE, when `texts` or the
    dataset's documents are available). The splice test reads the held-out documents of the dataset (or `texts`),
    cut at the dataset's max_length (the positions the SAE was trained on) unless `max_length` is given; the result
    says which. Writes metrics.json and report.html into `out` when given."""
    sae_obj = _as_sae(sae, device=device)
    ds = open_dataset(data)
    site = site or sae_obj.cfg.site
    metrics = reconstruction_metrics(sae_obj, ds, site, max_tokens=max_tokens, device=device, dead_window=dead_window)
    freqs, dead_ids = metrics.pop("frequencies"), metrics.pop("dead_latents")
    result = {"site": site, "sae": str(sae) if not isinstance(sae, SAE) else None, "arch": sae_obj.cfg.arch,
              "d_in": sae_obj.cfg.d_in, "d_sae": sae_obj.cfg.d_sae, "k": sae_obj.cfg.k, "reconstruction": metrics}
    if model is not False:
        splice = _splice(model, sae_obj, ds, texts, site, metrics["rows"], splice_docs, max_length, device)
        if splice is not None:
            result["splice"] = splice
    if out is not None:
        out = Path(out)
        fsio.write_json(out / "metrics.json", json_safe(result, skip_private=True))
        from .report import report_html

        log = None
        if not isinstance(sae, SAE) and (Path(sae) / "train_log.jsonl").exists():
            entries = read_log(Path(sae) / "train_log.jsonl")
            log = sorted({e["step"]: e for e in entries}.values(), key=lambda e: e["step"])  # resumed runs repeat
        fsio.write_text(out / "report.html", report_html(result, freqs, sae_obj.cfg, log))
    result["_frequencies"] = freqs
    result["_dead_latents"] = dead_ids
    return result
