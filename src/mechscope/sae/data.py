"""Reading an activation dataset for SAE training: the held-out split and a shuffled, resumable row stream.

The trainer needs only a small protocol from the dataset (what `mechscope.ActivationDataset` provides):
`len(ds)`, `ds.d(site)`, `ds.read(site, rows) -> float32 (len(rows), d)`, and the (N,) arrays `ds.doc_ids`,
`ds.token_ids`, `ds.positions`; optional `ds.manifest`, `ds.sites`, `ds.document_text(doc_id)`.

Shuffling without loading everything: the training rows are cut into chunks of `chunk` consecutive rows; each epoch
visits the chunks in a seeded random order, `window` chunks at a time; the rows of a window are read (sorted, so
reads are mostly sequential) and permuted in memory. Batch i is rows [i*B, (i+1)*B) of that endless sequence, so
any step can be regenerated on its own, which is what makes `--resume` exact. The next window is read by a
background thread while the current one is being trained on.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError, MechscopeError


def open_dataset(data):
    """A dataset object from a path (ActivationDataset) or the object itself."""
    if isinstance(data, (str, Path)):
        from ..extract import ActivationDataset
        from ..extract.storage import MANIFEST, RUN

        path = Path(data).expanduser()
        fix = (f"Write one with `mechscope extract --sites SITE --input CORPUS --out {path}` (or point --data at "
               "the --out folder of an earlier extract).")
        if not path.exists():
            raise DataError(f"data={str(path)!r}: no such folder, so no activation dataset. {fix}", "data")
        if not path.is_dir():
            raise DataError(f"data={str(path)!r} is a file; an activation dataset is a folder written by "
                            f"`mechscope extract`. {fix}", "data")
        if not (path / MANIFEST).exists() and not (path / RUN).exists():
            raise DataError(f"data={str(path)!r} is a folder but not an activation dataset (no {MANIFEST}). {fix}",
                            "data")
        return ActivationDataset(path)
    return data


def probe(ds, site: str) -> None:
    """Read the first and last rows of `site` once, so a truncated or corrupt file fails before anything is written."""
    n = len(ds)
    if n:
        ds.read(site, [0, n - 1] if n > 1 else [0])


def check_site(ds, site: Optional[str]) -> str:
    sites = list(getattr(ds, "sites", []) or [])
    if site is None:
        if len(sites) == 1:
            return sites[0]
        raise MechscopeError(f"The dataset holds several sites ({', '.join(sites)}): choose one with --site.")
    if sites and site not in sites:
        from ..errors import suggest

        raise MechscopeError(f"Site {site!r} is not in this dataset. {suggest(site, sites)}")
    return site


def manifest_model(ds) -> Optional[str]:
    man = getattr(ds, "manifest", None) or {}
    model = man.get("model") or man.get("model_id")
    if isinstance(model, dict):
        model = model.get("model") or model.get("id") or model.get("name") or model.get("path")
    if model is None:
        return None
    from ..loading import DEFAULT_NAME

    return "default" if str(model) == DEFAULT_NAME else str(model)  # the embedded model loads as "default"


def split_rows(ds, heldout: Optional[int] = None) -> tuple[int, int]:
    """(n_train, n_total): the last ~5% of rows (at most 100k, at least 1), moved to a document boundary, are held out
    for evaluation; training reads rows [0, n_train)."""
    n = len(ds)
    if n < 2:
        raise MechscopeError(f"The dataset has {n} token(s): too few to train a SAE.")
    h = heldout if heldout is not None else min(max(n // 20, 1), 100_000)
    cut = max(1, n - h)
    docs = np.asarray(ds.doc_ids[cut - 1:])
    moved = np.flatnonzero(docs[1:] != docs[:-1])
    if moved.size and cut + moved[0] < n and heldout is None:
        cut = cut + int(moved[0])
    return int(cut), n


class RowStream:
    """Deterministic shuffled batches over rows [0, n_rows) of one site, scaled by `scale`."""

    def __init__(self, ds, site: str, n_rows: int, batch_size: int, seed: int = 0, *, scale: float = 1.0,
                 chunk: int = 4096, buffer_tokens: int = 1 << 18, device="cpu", prefetch: bool = True):
        self.ds, self.site, self.n, self.bs, self.seed, self.scale = ds, site, n_rows, batch_size, seed, scale
        self.chunk = max(1, min(chunk, n_rows))
        self.n_chunks = math.ceil(n_rows / self.chunk)
        self.per_window = max(1, min(self.n_chunks, buffer_tokens // self.chunk))
        self.n_windows = math.ceil(self.n_chunks / self.per_window)
        self.device = torch.device(device)
        self._epochs: dict = {}
        self._windows: dict = {}
        self._pool = cf.ThreadPoolExecutor(1) if prefetch else None
        self._pending: dict = {}

    # ---- the endless sequence --------------------------------------------------------------------------------------
    def _epoch(self, e: int):
        if e not in self._epochs:
            order = np.random.default_rng([self.seed, e, 7]).permutation(self.n_chunks)
            sizes = np.minimum(self.chunk, self.n - order * self.chunk)
            win = [sizes[w * self.per_window:(w + 1) * self.per_window].sum() for w in range(self.n_windows)]
            self._epochs = {e: (order, np.concatenate([[0], np.cumsum(win)]))}
        return self._epochs[e]

    def _rows(self, e: int, w: int) -> np.ndarray:
        order, _ = self._epoch(e)
        ids = order[w * self.per_window:(w + 1) * self.per_window]
        rows = np.concatenate([np.arange(c * self.chunk, min((c + 1) * self.chunk, self.n)) for c in ids])
        return rows

    def _load(self, e: int, w: int) -> torch.Tensor:
        rows = np.sort(self._rows(e, w))
        perm = np.random.default_rng([self.seed, e, w, 11]).permutation(len(rows))
        x = torch.from_numpy(np.ascontiguousarray(self.ds.read(self.site, rows), dtype=np.float32)[perm])
        if self.scale != 1.0:
            x.mul_(self.scale)
        return x.to(self.device, non_blocking=True)

    def _next_key(self, e: int, w: int):
        return (e, w + 1) if w + 1 < self.n_windows else (e + 1, 0)

    def _window(self, e: int, w: int) -> torch.Tensor:
        key = (e, w)
        if key not in self._windows:
            fut = self._pending.pop(key, None)
            data = fut.result() if fut is not None else self._load(e, w)
            self._windows = {k: v for k, v in self._windows.items() if k >= (e, w - 1)}
            self._windows[key] = data
            nxt = self._next_key(e, w)
            if self._pool is not None and nxt not in self._pending and nxt not in self._windows:
                self._pending = {k: v for k, v in self._pending.items() if k > key}
                self._pending[nxt] = self._pool.submit(self._load, *nxt)
        return self._windows[key]

    def batch(self, i: int) -> torch.Tensor:
        """Rows [i*B, (i+1)*B) of the endless shuffled sequence, as a (B, d) float32 tensor (already scaled)."""
        start, parts, need = i * self.bs, [], self.bs
        while need:
            e, p = divmod(start, self.n)
            _, cum = self._epoch(e)
            w = int(np.searchsorted(cum, p, side="right") - 1)
            off = p - int(cum[w])
            data = self._window(e, w)
            take = min(need, data.shape[0] - off)
            parts.append(data[off:off + take])
            need -= take
            start += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def sample_rows(ds, site: str, n_rows: int, n: int = 65536, seed: int = 0) -> np.ndarray:
    """Up to n random training rows (float32), to estimate the input scale and the data mean."""
    rows = np.sort(np.random.default_rng([seed, 3]).choice(n_rows, size=min(n, n_rows), replace=False))
    return np.asarray(ds.read(site, rows), dtype=np.float32)


def iter_rows(ds, site: str, start: int, stop: int, batch_size: int = 8192):
    """Sequential float32 tensors over rows [start, stop)."""
    for a in range(start, stop, batch_size):
        rows = np.arange(a, min(stop, a + batch_size))
        yield rows, torch.from_numpy(np.require(ds.read(site, rows), np.float32, ["C", "W"]))
