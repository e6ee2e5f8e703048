"""`ActivationDataset(DIR)`: read an extracted activation dataset without loading it into memory.

    ds = ActivationDataset("acts/")
    ds.sites, ds.manifest, len(ds), ds.d(site), ds.dtype_of(site)
    ds.array(site)            (N, d) numpy memory map in the stored dtype (bf16: uint16 bits)
    ds.read(site, rows)       float32 (len(rows), d) for any row indices
    ds.token_ids / .doc_ids / .positions   (N,)
    ds[i]                     {"token_id", "doc_id", "position", site: float32 vector, ...}
    ds.batches(site, 4096)    float32 torch tensors, shuffled block-wise (constant memory)
    ds.document_text(doc_id), ds.context(row, window)
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from ..devices import dtype_name
from ..errors import DataError, MechscopeError
from . import storage


def shard_rows(out: Path, shards: Sequence[int]) -> list:
    import pyarrow as pa

    rows = []
    for i in shards:
        with pa.memory_map(str(Path(out) / storage.DATA / storage.shard_name(i))) as src:
            r = pa.ipc.open_file(src)
            rows.append(sum(r.get_batch(k).num_rows for k in range(r.num_record_batches)))
    return rows


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_float32(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return bf16_bits_to_float32(a)
    return np.array(a, dtype=np.float32)  # always a writable copy, never a view of the memory map


class ActivationDataset:
    """A finished activation dataset folder (see `mechscope.extract`)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path).expanduser()
        mpath = self.path / storage.MANIFEST
        if not mpath.exists():
            hint = (" It holds an unfinished extraction: rerun the extract command with --resume to finish it."
                    if (self.path / storage.RUN).exists() else "")
            raise MechscopeError(f"{str(self.path)!r} is not a finished activation dataset (no {storage.MANIFEST})."
                                 + hint)
        self.manifest: dict = json.loads(mpath.read_text())
        self.sites: list = list(self.manifest["sites"])
        self._dtype = self.manifest["dtype"]
        self._shard_files = [self.path / s["file"] for s in self.manifest["shards"]]
        rows = [int(s["rows"]) for s in self.manifest["shards"]]
        self._offsets = np.cumsum([0] + rows)
        self._n = int(self._offsets[-1])
        self._shards: dict = {}
        self._arrays: dict = {}
        self._cols: dict = {}
        self._docs: Optional[dict] = None

    # ---- shape and type ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"ActivationDataset({str(self.path)!r}, rows={self._n:,}, sites={self.sites}, "
                f"dtype={self._dtype}, model={self.manifest['model'].get('model')!r})")

    def _site(self, site: str) -> str:
        if site not in self.sites:
            from ..errors import suggest

            raise MechscopeError(f"Site {site!r} is not in this dataset. {suggest(site, self.sites)}")
        return site

    def d(self, site: str) -> int:
        return int(self.manifest["d"][self._site(site)])

    def dtype_of(self, site: str) -> str:
        """The logical dtype of a site's activations: float32, float16 or bfloat16 (stored as uint16 bits)."""
        self._site(site)
        return dtype_name(self._dtype)

    # ---- raw access ----------------------------------------------------------------------------------------------
    def _shard(self, k: int):
        if k not in self._shards:
            self._shards[k] = storage.open_shard(self._shard_files[k])
        return self._shards[k][0]

    def _shard_column(self, k: int, name: str) -> np.ndarray:
        return storage.column_values(self._shard(k), name)

    def _npy(self, name: str) -> Optional[np.ndarray]:
        p = self.path / storage.ARRAYS / f"{name}.npy"
        if not p.exists():
            return None
        try:
            a = np.load(p, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            a, why = None, f"{type(err).__name__}: {err}"
        else:
            why = None if len(a) == self._n else f"{len(a):,} rows, the manifest says {self._n:,}"
        if why is not None:
            raise DataError(f"{str(p)!r} is truncated or corrupt ({why}); a half-finished copy or download is the "
                            f"usual cause. Nothing was read or written. Copy the dataset folder again, or delete "
                            f"{str(p.parent)!r} (the Arrow shards in data/ hold the same rows and are read instead).",
                            "data")
        return a

    def array(self, site: str) -> np.ndarray:
        """(N, d) memory-mapped view in the stored dtype (bfloat16 as uint16 bits: see `dtype_of`)."""
        self._site(site)
        if site not in self._arrays:
            a = self._npy(site)
            if a is None:
                if len(self._shard_files) == 1:
                    a = self._shard_column(0, site)  # zero-copy view of the memory-mapped Arrow shard
                else:
                    warnings.warn(f"{self.path}: no consolidated arrays/ (extracted with arrays=False); "
                                  f"array({site!r}) concatenates the shards in memory.", stacklevel=2)
                    a = np.concatenate([self._shard_column(k, site) for k in range(len(self._shard_files))])
            self._arrays[site] = a
        return self._arrays[site]

    def _column(self, name: str) -> np.ndarray:
        if name not in self._cols:
            a = self._npy(name)
            if a is None:
                parts = [self._shard_column(k, name) for k in range(len(self._shard_files))]
                a = np.concatenate(parts) if parts else np.zeros(0)
            self._cols[name] = a
        return self._cols[name]

    @property
    def token_ids(self) -> np.ndarray:
        return self._column("token_id")

    @property
    def doc_ids(self) -> np.ndarray:
        return self._column("doc_id")

    @property
    def positions(self) -> np.ndarray:
        return self._column("position")

    def _rows(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            return np.arange(self._n)[rows]
        r = np.asarray(rows, dtype=np.int64).reshape(-1) if not isinstance(rows, range) else \
            np.arange(rows.start, rows.stop, rows.step, dtype=np.int64)
        r = np.where(r < 0, r + self._n, r)
        if r.size and (r.min() < 0 or r.max() >= self._n):
            raise IndexError(f"row index out of range for a dataset of {self._n} rows")
        return r

    def read(self, site: str, rows) -> np.ndarray:
        """float32 (len(rows), d) for any row indices (array, list, range, slice), in the order given."""
        self._site(site)
        r = self._rows(rows)
        a = self._npy(site) if site not in self._arrays else self._arrays[site]
        if a is not None:
            self._arrays[site] = a
            if r.size > 1 and np.all(np.diff(r) == 1):
                got = a[r[0]: r[-1] + 1]
            else:
                order = np.argsort(r, kind="stable")  # sorted gathers read the memory map sequentially
                got = np.empty((r.size, a.shape[1]), a.dtype)
                got[order] = a[r[order]]
            return to_float32(got, self._dtype)
        out = np.empty((r.size, self.d(site)), np.float32)
        shard = np.searchsorted(self._offsets, r, side="right") - 1
        for k in np.unique(shard):
            sel = shard == k
            out[sel] = to_float32(self._shard_column(int(k), site)[r[sel] - self._offsets[k]], self._dtype)
        return out

    def __getitem__(self, i: int) -> dict:
        if not isinstance(i, (int, np.integer)):
            raise TypeError("ds[i] takes one integer row; use ds.read(site, rows) for many rows")
        r = int(self._rows([i])[0])
        row = {"token_id": int(self.token_ids[r]), "doc_id": int(self.doc_ids[r]), "position": int(self.positions[r])}
        for s in self.sites:
            row[s] = self.read(s, [r])[0]
        return row

    # ---- training batches ------------------------------------------------------------------------------------------
    def batches(self, site: str, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                block_rows: int = 1 << 14, buffer_blocks: int = 16, device=None) -> Iterator:
        """float32 torch tensors (batch_size, d) covering every row once per pass.

        Shuffled without loading the dataset: contiguous blocks of `block_rows` rows are visited in a random order,
        `buffer_blocks` at a time, and rows are shuffled inside that buffer (memory: block_rows x buffer_blocks rows).
        """
        import torch

        self._site(site)
        if batch_size < 1:
            raise MechscopeError(f"batch_size {batch_size} must be at least 1.")
        rng = np.random.default_rng(seed)
        n = self._n
        starts = np.arange(0, n, block_rows)
        if shuffle:
            rng.shuffle(starts)
        carry = np.zeros((0, self.d(site)), np.float32)
        for g in range(0, len(starts), buffer_blocks):
            idx = np.concatenate([np.arange(s, min(s + block_rows, n)) for s in starts[g: g + buffer_blocks]])
            buf = self.read(site, np.sort(idx))
            if shuffle:
                buf = buf[rng.permutation(len(buf))]
            buf = np.concatenate([carry, buf]) if len(carry) else buf
            full = len(buf) // batch_size * batch_size
            for b in range(0, full, batch_size):
                t = torch.from_numpy(np.ascontiguousarray(buf[b: b + batch_size]))
                yield t.to(device) if device is not None else t
            carry = buf[full:]
        if len(carry) and not drop_last:
            t = torch.from_numpy(np.ascontiguousarray(carry))
            yield t.to(device) if device is not None else t

    # ---- back to the text ------------------------------------------------------------------------------------------
    def _load_docs(self) -> dict:
        if self._docs is None:
            import pyarrow as pa

            docs: dict = {}
            d = self.path / storage.DOCS
            for p in sorted(d.glob("shard-*.arrow")) if d.is_dir() else []:
                with pa.memory_map(str(p)) as src:
                    t = pa.ipc.open_file(src).read_all()
                for doc, text in zip(t.column("doc_id").to_pylist(), t.column("text").to_pylist()):
                    docs.setdefault(doc, text)
            self._docs = docs
        return self._docs

    def document_text(self, doc_id: int) -> str:
        """The original text of a document (its id is its index in the input)."""
        docs = self._load_docs()
        if int(doc_id) not in docs:
            raise MechscopeError(f"Document {doc_id} has no stored rows in this dataset (skipped, empty, or beyond "
                                 f"--limit-docs).")
        return docs[int(doc_id)]

    def context(self, row: int, window: int = 16, return_center: bool = False):
        """Token ids of up to `window` stored rows on each side of `row`, within the same document and context.

        With return_center=True, returns (ids, index of `row` inside ids)."""
        r = int(self._rows([row])[0])
        lo, hi = max(0, r - window), min(self._n, r + window + 1)
        docs, pos = np.asarray(self.doc_ids[lo:hi]), np.asarray(self.positions[lo:hi]).astype(np.int64)
        c = r - lo
        same = (docs == docs[c]) & (pos - pos[c] == np.arange(lo, hi) - r)
        if self.manifest.get("exclude_bos"):  # rows skip the dropped BOS: compare positions loosely
            same = (docs == docs[c]) & (np.sign(pos - pos[c]) == np.sign(np.arange(lo, hi) - r))
        a = c
        while a > 0 and same[a - 1]:
            a -= 1
        b = c
        while b + 1 < len(same) and same[b + 1]:
            b += 1
        ids = np.asarray(self.token_ids[lo + a: lo + b + 1]).astype(np.int64)
        return (ids, c - a) if return_center else ids
