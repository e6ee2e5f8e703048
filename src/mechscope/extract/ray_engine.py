"""`--engine ray`: the same extraction, scaled out on Ray Data.

    read (driver: input blocks of D documents, D = shard_tokens // max_length)
      -> tokenize (Ray tasks)
      -> a pool of model actors (one model each, `num_gpus=gpus_per_worker`) running `pipeline.Runner.run_chunk`
      -> each actor writes the shard of its block itself: data/shard-<block>.arrow, atomically
      -> the driver writes the manifest once every block is done.

A shard is named after its input block, so a retried task rewrites the same file (same bytes) and never duplicates
rows; a resumed run skips blocks whose shard exists. Every shard's schema metadata holds its block's counters (not
running totals), which the driver sums. `--out` must be on a filesystem every node sees (NFS, a mounted bucket).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from ..errors import MechscopeError
from . import storage
from .chunks import Chunk, Settings, add_document, new_state, tokenize
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
    tok_dir = out / TOK_DIR
    if not tok_dir.exists():
        model.tokenizer.save_pretrained(str(tok_dir))
    device = "cuda" if gpus_per_worker else "cpu"
    spec = {"model": name, "dtype": str(model.dtype).replace("torch.", ""), "device": device}
    done = set(storage.complete_shards(out))
    items = list(_blocks(source, settings, done))
    if items:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * num_workers)))
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
        for k in ("records", "documents", "tokens", "truncated"):
            state[k] += s.get(k, 0)
        for field in ("skipped", "nonfinite"):
            for k, v in (s.get(field) or {}).items():
                state[field][k] = state[field].get(k, 0) + v
    empty = [i for i in shards if storage.read_state(out / storage.DATA / storage.shard_name(i)).get("tokens") == 0]
    for i in empty:  # blocks without any usable document: their counters are summed, no empty shard is kept
        (out / storage.DATA / storage.shard_name(i)).unlink()
    for d in (MODEL_DIR, TOK_DIR):
        shutil.rmtree(out / d, ignore_errors=True)
    dims = {}
    from .pipeline import Runner

    dims = Runner(model, settings).dims
    return {"state": state, "written": [], "dims": dims}
