"""Documents -> token sequences -> chunks. A chunk is the unit of work and of storage: one chunk, one shard.

Chunk boundaries depend only on the input and the settings (never on timing or batching), so a resumed run cuts the
same chunks as an uninterrupted one. Each chunk carries the resume state after it: the next document to read (and,
in packed mode, how many of its tokens were already used) and the running counters.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

import numpy as np

from .config import Settings
from .sources import Record

TOKENIZE_BATCH = 64


def add_counts(into: dict, counts: dict) -> dict:
    """Add per-key counters (non-finite values per site, skipped records per reason) into `into`."""
    for k, v in (counts or {}).items():
        into[k] = into.get(k, 0) + int(v)
    return into


def new_state() -> dict:
    return {"next_doc": 0, "offset": 0, "records": 0, "documents": 0, "tokens": 0, "truncated": 0, "skipped": {},
            "nonfinite": {}}


@dataclass
class Chunk:
    index: int
    seqs: list = field(default_factory=list)      # token ids fed to the model, one list per sequence
    docs: list = field(default_factory=list)      # per sequence: doc id of every token (np.int64)
    keep: list = field(default_factory=list)      # per sequence: which tokens are stored (np.bool_)
    texts: list = field(default_factory=list)     # (doc_id, text) of documents first seen in this chunk
    state: dict = field(default_factory=new_state)
    rows: int = 0

    def add(self, ids: list, docs: np.ndarray, keep: np.ndarray) -> None:
        self.seqs.append(ids)
        self.docs.append(docs)
        self.keep.append(keep)
        self.rows += int(keep.sum())

    def columns(self):
        """token_id, doc_id, position of the stored rows, in sequence order."""
        if not self.seqs:
            z = np.zeros(0, np.int64)
            return z.astype(np.int32), z, z.astype(np.int32)
        ids = np.concatenate([np.asarray(s, np.int64) for s in self.seqs])
        docs = np.concatenate(self.docs)
        pos = np.concatenate([np.arange(len(s)) for s in self.seqs])
        keep = np.concatenate(self.keep)
        return ids[keep].astype(np.int32), docs[keep], pos[keep].astype(np.int32)


def tokenize(tokenizer, texts: list, max_length: Optional[int] = None) -> list:
    """Token ids of each text with the tokenizer's special tokens. With `max_length`, very long texts are tokenized
    through a prefix when that prefix already gives comfortably more than max_length tokens (same first tokens)."""
    if max_length is None:
        return tokenizer(texts, add_special_tokens=True)["input_ids"]
    limit = 64 * max_length
    heads = [t[:limit] for t in texts]
    out = tokenizer(heads, add_special_tokens=True)["input_ids"]
    redo = [i for i, (t, ids) in enumerate(zip(texts, out)) if len(t) > limit and len(ids) < max_length + 64]
    if redo:
        full = tokenizer([texts[i] for i in redo], add_special_tokens=True)["input_ids"]
        for i, ids in zip(redo, full):
            out[i] = ids
    return out


def _skip(state: dict, reason: str) -> None:
    add_counts(state["skipped"], {reason: 1})


def _keep(ids: list, bos: Optional[int], exclude_bos: bool) -> np.ndarray:
    keep = np.ones(len(ids), dtype=bool)
    if exclude_bos and bos is not None:
        keep &= np.asarray(ids) != bos
    return keep


def _records(source: Iterable[Record], start: int, limit: Optional[int]) -> Iterator[Record]:
    for rec in source:
        if limit is not None and rec.doc_id >= limit:
            break
        if rec.doc_id >= start:
            yield rec


def _tokenized(records: Iterator[Record], tokenizer, state: dict, max_length: Optional[int]):
    """(record, ids or None) in input order; records without text come through with ids None."""
    batch: list = []

    def flush():
        good = [r for r in batch if r.text is not None]
        ids = iter(tokenize(tokenizer, [r.text for r in good], max_length) if good else [])
        for r in batch:
            yield r, (next(ids) if r.text is not None else None)

    for rec in records:
        batch.append(rec)
        if len(batch) >= TOKENIZE_BATCH:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def add_document(chunk: Chunk, st: dict, rec: Record, ids: Optional[list], s: Settings, bos: Optional[int]) -> None:
    """Document mode: one record (tokenized, or ids None when it has no text) into `chunk`, counting in `st`."""
    st["records"] += 1
    st["next_doc"] = rec.doc_id + 1
    if ids is None:
        _skip(st, rec.skip or "no text")
        return
    if not ids:
        _skip(st, "no tokens")
        return
    if len(ids) > s.max_length:
        st["truncated"] += 1
        ids = ids[: s.max_length]
    keep = _keep(ids, bos, s.exclude_bos)
    if not keep.any():
        _skip(st, "only a BOS token")
        return
    chunk.add(list(ids), np.full(len(ids), rec.doc_id, np.int64), keep)
    chunk.texts.append((rec.doc_id, rec.text))
    st["documents"] += 1
    st["tokens"] += int(keep.sum())


class Chunker:
    """Iterate chunks from `start_state` on; `final_state` holds the counters once the input is exhausted."""

    def __init__(self, source, tokenizer, settings: Settings, start_state: Optional[dict] = None,
                 start_index: int = 0):
        self.source, self.tok, self.s = source, tokenizer, settings
        self.state = copy.deepcopy(start_state) if start_state else new_state()
        self.start_index = start_index
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
        self.final_state: Optional[dict] = None

    def __iter__(self) -> Iterator[Chunk]:
        return self._document() if self.s.mode == "document" else self._packed()

    def _emit(self, chunk: Chunk) -> Chunk:
        chunk.state = copy.deepcopy(self.state)
        return chunk

    def _document(self) -> Iterator[Chunk]:
        st, s = self.state, self.s
        index = self.start_index
        chunk = Chunk(index)
        recs = _records(self.source, st["next_doc"], s.limit_docs)
        for rec, ids in _tokenized(recs, self.tok, st, s.max_length):
            add_document(chunk, st, rec, ids, s, self.bos)
            if chunk.rows >= s.shard_tokens:
                yield self._emit(chunk)
                index += 1
                chunk = Chunk(index)
        if chunk.seqs:
            yield self._emit(chunk)
        self.final_state = copy.deepcopy(st)

    def _packed(self) -> Iterator[Chunk]:
        """Documents + EOS, concatenated and cut into contexts of exactly max_length (the last may be shorter)."""
        st, s = self.state, self.s
        index = self.start_index
        chunk = Chunk(index)
        ctx_ids: list = []
        ctx_docs: list = []
        resume_offset = st["offset"]
        recs = _records(self.source, st["next_doc"], s.limit_docs)
        for rec, ids in _tokenized(recs, self.tok, st, None):
            partial = resume_offset > 0
            if not partial:
                st["records"] += 1
                if ids is None:
                    st["next_doc"] = rec.doc_id + 1
                    _skip(st, rec.skip or "no text")
                    continue
                if not ids:
                    st["next_doc"] = rec.doc_id + 1
                    _skip(st, "no tokens")
                    continue
                st["documents"] += 1
                chunk.texts.append((rec.doc_id, rec.text))
            ids = list(ids) + ([self.eos] if self.eos is not None else [])
            used = resume_offset
            resume_offset = 0
            while used < len(ids):
                take = min(s.max_length - len(ctx_ids), len(ids) - used)
                ctx_ids += ids[used: used + take]
                ctx_docs += [rec.doc_id] * take
                used += take
                if len(ctx_ids) == s.max_length:
                    done = used == len(ids)
                    st["next_doc"], st["offset"] = (rec.doc_id + 1, 0) if done else (rec.doc_id, used)
                    self._close_context(chunk, ctx_ids, ctx_docs)
                    ctx_ids, ctx_docs = [], []
                    if chunk.rows >= s.shard_tokens:
                        yield self._emit(chunk)
                        index += 1
                        chunk = Chunk(index)
            st["next_doc"], st["offset"] = rec.doc_id + 1, 0
        if ctx_ids:
            self._close_context(chunk, ctx_ids, ctx_docs)
        if chunk.seqs:
            yield self._emit(chunk)
        self.final_state = copy.deepcopy(st)

    def _close_context(self, chunk: Chunk, ids: list, docs: list) -> None:
        keep = _keep(ids, self.bos, self.s.exclude_bos)
        chunk.add(list(ids), np.asarray(docs, np.int64), keep)
        self.state["tokens"] += int(keep.sum())
