"""`--engine ray`: the same extraction, scaled out on Ray Data.

Document mode:
    read (driver: input blocks of D documents, D = shard_tokens // max_length)
      -> tokenize (Ray tasks)
      -> a pool of model actors (one model each, `num_gpus=gpus_per_worker`) running `pipeline.Runner.run_chunk`
      -> each actor writes the shard of its block itself: data/shard-<block>.arrow, atomically
      -> the driver writes the manifest once every block is done.

Packed mode (documents + EOS cut into full contexts, a sequential pass over the corpus):
    the driver runs the local engine's `chunks.Chunker` (tokenize + pack: cheap next to the model), so chunk
    boundaries and contexts are exactly the local engine's, and hands each chunk (its token ids, doc ids, kept rows,
    texts and counters) to the same pool of model actors, which write data/shard-<chunk>.arrow.

A shard is named after its input block (chunk), so a retried task rewrites the same file (same bytes) and never
duplicates rows; a resumed run skips blocks whose shard exists (in packed mode the driver resumes packing at the
input position stored in the last shard of the unbroken run 0, 1, 2, ... of finished shards). Every shard's
schema metadata holds its block's counters (not running totals), which the driver sums; the last packed chunk also
counts the records read after it (skipped ones), so the sums equal the local engine's counters. `--out` must be on a
filesystem every node sees (NFS, a mounted bucket).
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MechscopeError
from . import storage
from .chunks import Chunk, Chunker, Settings, add_counts, add_document, new_state, tokenize
from .sources import Record

MODEL_DIR, TOK_DIR = ".ray-model", ".ray-tokenizer"


def _loadable(model) -> Optional[str]:
    """A name that `mechscope.load` can open on every worker, or None (then the driver saves the model)."""
    from ..loading import DEFAULT_NAME

    name = str(model.source.get("model") or "")
    if name == DEFAULT_NAME:
        return "default"
    p = Path(name).expanduser()
    if p.exists():
        return str(p.resolve())
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json", revision=model.source.get("revision")), str):
            return name
    except Exception:
        pass
    return None


def _blocks(source, settings: Settings, done: set):
    """Input blocks in order: {"block", "payload": json of doc_ids, texts, skips}; finished blocks are left out."""
    per = max(1, settings.shard_tokens // settings.max_length)
    cur: list = []
    b = 0

    def item(recs):
        return {"block": b, "payload": json.dumps({"doc_ids": [r.doc_id for r in recs],
                                                   "texts": [r.text for r in recs],
                                                   "skips": [r.skip for r in recs]})}

    for rec in source:
        if settings.limit_docs is not None and rec.doc_id >= settings.limit_docs:
            break
        cur.append(rec)
        if len(cur) == per:
            if b not in done:
                yield item(cur)
            b, cur = b + 1, []
    if cur and b not in done:
        yield item(cur)


COUNTERS = ("records", "documents", "tokens", "truncated")


def _delta(after: dict, before: dict) -> dict:
    """The counters of the records read between two running states (skipped reasons included)."""
    d = {k: after[k] - before.get(k, 0) for k in COUNTERS}
    skipped = {k: v - before.get("skipped", {}).get(k, 0) for k, v in after["skipped"].items()}
    d["skipped"] = {k: v for k, v in skipped.items() if v}
    return d


def _encode_chunk(chunk: Chunk, meta: dict) -> bytes:
    """A chunk in compact form: int32 token ids, doc ids run-length encoded, kept rows as bits."""
    lens = np.asarray([len(x) for x in chunk.seqs], np.int64)
    ids = np.concatenate([np.asarray(x, np.int32) for x in chunk.seqs]) if chunk.seqs else np.zeros(0, np.int32)
    docs = np.concatenate(chunk.docs) if chunk.docs else np.zeros(0, np.int64)
    keep = np.concatenate(chunk.keep) if chunk.keep else np.zeros(0, bool)
    starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]]) if len(docs) else np.zeros(0, np.int64)
    runs = np.diff(np.r_[starts, len(docs)])
    return pickle.dumps({"index": chunk.index, "lens": lens, "ids": ids, "run_docs": docs[starts],
                         "run_lens": runs, "keep": np.packbits(keep), "n": len(keep), "texts": chunk.texts,
                         "meta": meta}, protocol=pickle.HIGHEST_PROTOCOL)


def _decode_chunk(blob: bytes) -> tuple:
    p = pickle.loads(blob)
    chunk = Chunk(int(p["index"]))
    docs = np.repeat(p["run_docs"], p["run_lens"]).astype(np.int64)
    keep = np.unpackbits(p["keep"], count=p["n"]).astype(bool)
    ends = np.cumsum(p["lens"])
    for a, b in zip(np.r_[0, ends[:-1]], ends):
        chunk.add(p["ids"][a:b].tolist(), docs[a:b], keep[a:b])
    chunk.texts = [tuple(t) for t in p["texts"]]
    return chunk, p["meta"]


def _resume_point(out: Path, done: list) -> tuple:
    """(start state, first chunk index) after the unbroken run of finished packed shards 0..k-1."""
    k = 0
    while k < len(done) and done[k] == k:
        k += 1
    if k == 0:
        return None, 0
    st = storage.read_state(out / storage.DATA / storage.shard_name(k - 1)).get("resume")
    if not st:  # not written by this engine's packed mode: pack from the start
        return None, 0
    return {**st, "nonfinite": {}}, k


def _packed_chunks(source, tokenizer, settings: Settings, out: Path, done: set) -> tuple:
    """Items {"block", "chunk"} for the unfinished chunks, and the final running state of the pass.

    Each chunk carries its counters (since the previous chunk); the last one also those of the records after it."""
    start, first = _resume_point(out, sorted(done))
    chunker = Chunker(source, tokenizer, settings, start, first)
    prev = copy.deepcopy(chunker.state)
    items: list = []
    held = None

    def item(chunk: Chunk, after: dict) -> None:
        nonlocal prev
        if chunk.index not in done:
            resume = {k: v for k, v in chunk.state.items() if k != "nonfinite"}
            meta = {**_delta(after, prev), "next_doc": chunk.state["next_doc"], "offset": chunk.state["offset"],
                    "resume": resume}
            items.append({"block": chunk.index, "chunk": _encode_chunk(chunk, meta)})
        prev = copy.deepcopy(chunk.state)

    for chunk in chunker:
        if held is not None:
            item(held, held.state)
        held = chunk
    final = chunker.final_state or copy.deepcopy(chunker.state)
    if held is not None:
        item(held, final)
    return items, final


class Tokenize:
    def __init__(self, tok_dir: str, max_length: int):
        from transformers import AutoTokenizer

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.tok = AutoTokenizer.from_pretrained(tok_dir)
        self.max_length = max_length

    def __call__(self, batch: dict) -> dict:
        tokens = []
        for payload in batch["payload"]:
            p = json.loads(payload)
            texts = [t for t in p["texts"] if t is not None]
            ids = iter(tokenize(self.tok, texts, self.max_length) if texts else [])
            tokens.append(json.dumps([next(ids) if t is not None else None for t in p["texts"]]))
        return {"block": batch["block"], "payload": batch["payload"], "tokens": tokens}


class Extractor:
    """One model per actor; extracts whole blocks and writes their shards."""

    def __init__(self, load_spec: dict, settings: dict, out: str, threads: int):
        import torch

        from ..loading import load
        from .pipeline import Runner

        torch.set_num_threads(max(1, threads))
        self.model = load(load_spec["model"], dtype=load_spec["dtype"], device=load_spec["device"])
        self.settings = Settings(**settings)
        self.out = Path(out)
        self.runner = Runner(self.model, self.settings)

    def __call__(self, batch: dict) -> dict:
        if "chunk" in batch:
            return self._packed(batch)
        from .pipeline import ShardAssembler, SyncSink

        res = {"block": [], "rows": [], "records": []}
        for block, payload, tokens in zip(batch["block"], batch["payload"], batch["tokens"]):
            p, toks = json.loads(payload), json.loads(tokens)
            chunk, st = Chunk(int(block)), new_state()
            for doc, text, skip, ids in zip(p["doc_ids"], p["texts"], p["skips"], toks):
                add_document(chunk, st, Record(doc, text, skip), ids, self.settings, self.model.tokenizer.bos_token_id)
            asm = ShardAssembler(self.out, self.settings, self.runner.dims)
            asm.begin(chunk)
            st["nonfinite"] = self.runner.run_chunk(chunk, SyncSink(asm)) if chunk.seqs else {}
            st["block"] = int(block)
            asm.finish(chunk, st)
            res["block"].append(int(block))
            res["rows"].append(chunk.rows)
            res["records"].append(len(p["doc_ids"]))
        return res

    def _packed(self, batch: dict) -> dict:
        """Packed mode: chunks cut by the driver, run as they are; the shard's metadata holds their counters."""
        from .pipeline import ShardAssembler, SyncSink

        res = {"block": [], "rows": [], "records": []}
        for blob in batch["chunk"]:
            chunk, meta = _decode_chunk(bytes(blob))
            asm = ShardAssembler(self.out, self.settings, self.runner.dims)
            asm.begin(chunk)
            st = {**new_state(), **meta, "block": chunk.index}
            st["nonfinite"] = self.runner.run_chunk(chunk, SyncSink(asm)) if chunk.seqs else {}
            asm.finish(chunk, st)
            res["block"].append(chunk.index)
            res["rows"].append(chunk.rows)
            res["records"].append(meta["records"])
        return res


def run_ray(model, source, out: Path, settings: Settings, num_workers: Optional[int] = None,
            gpus_per_worker: Optional[float] = None, ray_address: Optional[str] = None,
            progress: bool = True) -> dict:
    try:
        import ray
        import ray.data
    except ImportError:
        raise MechscopeError("--engine ray needs Ray Data: pip install 'ray[data]' (or mechscope[ray]).") from None
    from ..loading import save

    out = Path(out).resolve()
    if not ray.is_initialized():
        try:
            ray.init(address=ray_address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
        except Exception as err:
            raise MechscopeError(f"--engine ray: cannot start or join Ray ({'address ' + ray_address if ray_address else 'local'}):"
                                 f" {type(err).__name__}: {err}") from None
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    if num_workers is None:
        num_workers = max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 2
    cpus = float(res.get("CPU", 1))
    cpu_per_worker = max(0.25, min(1.0, (cpus - 1) / num_workers)) if cpus > 1 else 0.25
    name = _loadable(model)
    if name is None:  # a model object with no loadable name: hand the workers a saved copy
        tmp = out / MODEL_DIR
        if not (tmp / "config.json").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            save(model, tmp)
        name = str(tmp)
    packed = settings.mode == "packed"
    tok_dir = out / TOK_DIR
    if not packed and not tok_dir.exists():  # packed mode tokenizes on the driver
        model.tokenizer.save_pretrained(str(tok_dir))
    device = "cuda" if gpus_per_worker else "cpu"
    if device == "cuda" and settings.pack:  # the actors run on GPUs, where batches stay padded (pipeline)
        settings = replace(settings, pack=False)
    spec = {"model": name, "dtype": str(model.dtype).replace("torch.", ""), "device": device}
    done = set(storage.complete_shards(out))
    if packed:  # the driver packs exactly as the local engine does; the actors only run the model
        items, final = _packed_chunks(source, model.tokenizer, settings, out, done)
    else:
        items = list(_blocks(source, settings, done))
    if items:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * num_workers)))
        del items
        if not packed:
            ds = ds.map_batches(Tokenize, fn_constructor_kwargs={"tok_dir": str(tok_dir),
                                                                 "max_length": settings.max_length},
                                batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
        ds = ds.map_batches(Extractor, fn_constructor_kwargs={"load_spec": spec, "settings": settings.key(),
                                                              "out": str(out),
                                                              "threads": max(1, int(cpu_per_worker))},
                            batch_size=1, compute=ray.data.ActorPoolStrategy(size=num_workers),
                            num_gpus=gpus_per_worker or None, num_cpus=cpu_per_worker)
        for _ in ds.iter_rows():
            pass
    shards = storage.complete_shards(out)
    state = new_state()
    for i in shards:
        s = storage.read_state(out / storage.DATA / storage.shard_name(i))
        for k in COUNTERS:
            state[k] += s.get(k, 0)
        for field in ("skipped", "nonfinite"):
            add_counts(state[field], s.get(field))
    if packed and not shards:  # nothing to extract at all: the counters of the pass, for the error message
        state = {**final, "nonfinite": {}}
    if not packed:  # document blocks without any usable document: their counters are summed, no empty shard kept
        for i in [i for i in shards
                  if storage.read_state(out / storage.DATA / storage.shard_name(i)).get("tokens") == 0]:
            (out / storage.DATA / storage.shard_name(i)).unlink()
    for d in (MODEL_DIR, TOK_DIR):
        shutil.rmtree(out / d, ignore_errors=True)
    return {"state": state, "written": [], "dims": dict(settings.dims)}
