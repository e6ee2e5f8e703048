"""The extraction pipeline: chunks -> batches under a token budget -> one forward per batch that stops right after the
deepest site -> the real tokens only -> a writer thread that fills the shard and writes it.

On CPU, a batch is one packed row: its sequences side by side, each attending only to itself (`Model.packed`), so
the matmuls see no padding at all. Elsewhere (and for models that cannot pack), sequences are sorted by length and
padded to the longest of their batch.

`Runner.run_chunk` is shared by `--engine local` (`run_local`) and by the Ray actors (`ray_engine`).
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..devices import DTYPES
from ..errors import SiteError
from . import storage
from .chunks import Chunk, Chunker, Settings, add_counts



def packs_by_default(model, max_length: int) -> bool:
    """Extraction packs its batches on CPU, for models that can (on a GPU, packing's one attention call per sequence
    and layer is unmeasured, so batches stay padded there)."""
    return model.device.type == "cpu" and model.packable(max_length)


def plan_rows(lengths: list, budget: int) -> list:
    """Indices grouped into packed rows, longest first, each holding at most `budget` tokens (or one sequence)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows, cur, n = [], [], 0
    for i in order:
        if cur and n + lengths[i] > budget:
            rows.append(cur)
            cur, n = [], 0
        cur.append(i)
        n += lengths[i]
    if cur:
        rows.append(cur)
    return rows


def plan_batches(lengths: list, budget: int) -> list:
    """Indices grouped into batches, longest first, so that batch size x longest length <= budget.

    (Closing batches early to cut the last few percent of padding made CPU runs slower: fewer, larger matmuls win.)"""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[cur[0]] > budget:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def storable_sites(model, names) -> list:
    """The Site objects of `names` (unknown names fail with suggestions); attention patterns are refused."""
    sites = [model.site(name) for name in names]
    for site in sites:
        if site.kind in ("pattern", "attn_scores"):
            raise SiteError(f"Site {site.name!r} is an attention pattern (or score) matrix (B, H, T, T), not one "
                            "vector per token; it "
                            "cannot be stored as activation rows. Use hook_z, hook_attn_out, ...", "sites")
    return sites


def probe_dims(model, sites: list) -> dict:
    """The stored width of each site (the product of its per-token dimensions), from one two-token forward."""
    probe = [[model.tokenizer.bos_token_id or model.tokenizer.eos_token_id or 0] * 2]
    with torch.no_grad():
        _, cache = model.run(probe, capture=sites, logits=False)
    dims = {}
    for site in sites:
        a = cache[site.name]
        if a.ndim < 3 or a.shape[:2] != (1, 2):
            raise SiteError(f"Site {site.name!r} gives shape {tuple(a.shape)}, not (batch, pos, ...): it cannot be "
                            "stored as one row per token.", "sites")
        dims[site.name] = int(np.prod(a.shape[2:]))
    return dims


def packing_agrees(model, sites: list) -> bool:
    """Two short sequences packed in one row give what each gives alone (else this family cannot pack)."""
    vocab = min(model.cfg.d_vocab, 1000)
    seqs = [[(7 * i + 3) % vocab for i in range(5)], [(11 * i + 5) % vocab for i in range(3)]]
    with torch.no_grad():
        _, packed = model.run(model.packed(seqs), capture=sites, logits=False)
        alone = [model.run([s], capture=sites, logits=False)[1] for s in seqs]
    for site in sites:
        ref = torch.cat([c[site.name][0] for c in alone]).float()
        if not torch.allclose(packed[site.name][0].float(), ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()) + 1e-6):
            return False
    return True


def decide_packing(model, sites: list, max_length: int, want: Optional[bool] = None) -> bool:
    """The one packing decision: `want` (None: `packs_by_default`), if the model can pack and packing agrees."""
    if want is None:
        want = packs_by_default(model, max_length)
    return bool(want) and model.packable(max_length) and packing_agrees(model, sites)


class Runner:
    """Runs chunks through one model. `dims[site]` is the stored width of each site.

    Packing and widths come from the resolved Settings (`api.resolve`); `pack=` (tests) asks for one mode, which is
    used when the model can pack."""

    def __init__(self, model, settings: Settings, pack: Optional[bool] = None):
        self.model, self.s = model, settings
        self.sites = storable_sites(model, settings.sites)
        self.names = [s.name for s in self.sites]
        self.store = DTYPES[settings.store_dtype]
        self.dims = dict(settings.dims) if settings.dims else probe_dims(model, self.sites)
        if pack is None and settings.pack is not None:
            self.pack = bool(settings.pack)
        else:
            self.pack = decide_packing(model, self.sites, settings.max_length, pack)

    def run_chunk(self, chunk: Chunk, sink, progress=None) -> dict:
        """Forward every sequence of the chunk; hand each batch's rows to `sink.put`. Returns non-finite counts."""
        starts = np.cumsum([0] + [int(k.sum()) for k in chunk.keep])
        lengths = [len(s) for s in chunk.seqs]
        nonfinite = {n: torch.zeros((), dtype=torch.long, device=self.model.device) for n in self.names}
        plan = plan_rows if self.pack else plan_batches
        for idx in plan(lengths, self.s.batch_tokens):
            if self.pack:
                batch = self.model.packed([chunk.seqs[i] for i in idx])  # (1, sum of lengths)
                keep_np = np.concatenate([chunk.keep[i] for i in idx])[None]
            else:
                batch = self.model.batch([chunk.seqs[i] for i in idx], "right")  # (B, longest)
                keep_np = np.zeros(tuple(batch.attention_mask.shape), dtype=bool)
                for row, i in enumerate(idx):
                    keep_np[row, : lengths[i]] = chunk.keep[i]
            keep = torch.from_numpy(keep_np).to(batch.attention_mask.device, non_blocking=True)
            with torch.inference_mode():
                _, cache = self.model.run(batch, capture=self.sites, logits=False)
                mask = keep & batch.attention_mask
                out = {}
                for name in self.names:
                    a = cache[name]
                    a = a.reshape(*a.shape[:2], -1)[mask]
                    nonfinite[name] += (~torch.isfinite(a)).sum()
                    out[name] = a.to(self.store)
            dest = np.concatenate([starts[i] + np.arange(int(chunk.keep[i].sum())) for i in idx])
            sink.put(out, dest)
            if progress is not None:
                progress(len(idx), len(dest))
        return {n: int(v) for n, v in nonfinite.items()}


def to_host(out: dict) -> tuple:
    """Start the device -> host copies; returns (host tensors, event to wait on or None)."""
    host, event = {}, None
    for name, a in out.items():
        if a.device.type == "cuda":
            h = torch.empty(a.shape, dtype=a.dtype, pin_memory=True)
            h.copy_(a, non_blocking=True)
            host[name] = h
        else:
            host[name] = a
    if any(a.device.type == "cuda" for a in out.values()):
        event = torch.cuda.Event()
        event.record()
    return host, event


def host_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


class ShardAssembler:
    """Fills one chunk's arrays from batches (rows land at their place in document order) and writes the shard."""

    def __init__(self, out: Path, settings: Settings, dims: dict):
        self.out, self.s, self.dims = Path(out), settings, dims
        self.np_dtype = storage.STORE_DTYPES[settings.store_dtype]
        self.bytes = 0
        self.arrays: dict = {}

    def begin(self, chunk: Chunk) -> None:
        self.arrays = {n: np.empty((chunk.rows, d), self.np_dtype) for n, d in self.dims.items()}

    def add(self, host: dict, dest: np.ndarray) -> None:
        for name, t in host.items():
            self.arrays[name][dest] = host_numpy(t)

    def finish(self, chunk: Chunk, state: dict) -> dict:
        tok, doc, pos = chunk.columns()
        name = storage.shard_name(chunk.index)
        if chunk.texts:
            storage.write_arrow(self.out / storage.DOCS / name,
                                storage.docs_table([d for d, _ in chunk.texts], [t for _, t in chunk.texts]))
        table = storage.shard_table(tok, doc, pos, self.arrays, self.s.store_dtype, state)
        path = self.out / storage.DATA / name
        storage.write_arrow(path, table)
        self.arrays = {}
        size = path.stat().st_size
        self.bytes += size
        return {"index": chunk.index, "rows": chunk.rows, "bytes": size}


class WriterThread:
    """Receives batches from the model loop and writes shards, so the model never waits for the disk."""

    def __init__(self, assembler: ShardAssembler, maxsize: int = 6):
        self.asm = assembler
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.error: Optional[BaseException] = None
        self.written: list = []
        self.thread = threading.Thread(target=self._loop, name="mechscope-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            msg = self.q.get()
            if msg is None:
                return
            if self.error is not None:
                continue  # drain after a failure
            try:
                kind = msg[0]
                if kind == "begin":
                    self.asm.begin(msg[1])
                elif kind == "batch":
                    _, host, event, dest = msg
                    if event is not None:
                        event.synchronize()
                    self.asm.add(host, dest)
                else:
                    _, chunk, state = msg
                    self.written.append(self.asm.finish(chunk, state))
            except BaseException as err:  # surfaced in the main thread by check()
                self.error = err

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def begin(self, chunk: Chunk) -> None:
        self.check()
        self.q.put(("begin", chunk))

    def put(self, out: dict, dest: np.ndarray) -> None:
        self.check()
        host, event = to_host(out)
        self.q.put(("batch", host, event, dest))

    def finish(self, chunk: Chunk, state: dict) -> None:
        self.q.put(("end", chunk, state))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        self.check()


class SyncSink:
    """The same as WriterThread, in the calling thread (Ray actors)."""

    def __init__(self, assembler: ShardAssembler):
        self.asm = assembler

    def put(self, out: dict, dest: np.ndarray) -> None:
        host, event = to_host(out)
        if event is not None:
            event.synchronize()
        self.asm.add(host, dest)


class Progress:
    """A tqdm bar on stderr: documents, tokens, tokens/s, ETA when the number of documents is known."""

    def __init__(self, total: Optional[int], enabled: bool, initial_docs: int = 0, initial_tokens: int = 0,
                 per_doc: bool = True):
        self.t0 = time.perf_counter()
        self.per_doc, self.pending = per_doc, 0
        self.tokens = 0
        self.base_tokens = initial_tokens
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial_docs, unit="doc", dynamic_ncols=True, leave=True,
                            desc="extract")

    def __call__(self, seqs: int, tokens: int) -> None:
        """After each batch: `seqs` sequences (documents in document mode) and `tokens` stored rows done."""
        self.tokens += tokens
        self.pending += seqs if self.per_doc else 0
        if self.bar is not None:
            rate = self.tokens / max(1e-9, time.perf_counter() - self.t0)
            self.bar.set_postfix_str(f"{self.base_tokens + self.tokens:,} tok, {rate:,.0f} tok/s", refresh=False)
            self.bar.update(seqs if self.per_doc else 0)

    def chunk_done(self, records: int) -> None:
        """At the end of a chunk: `records` input records consumed by it (skipped ones included)."""
        if self.bar is not None:
            self.bar.update(records - self.pending)
        self.pending = 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_local(model, source, out: Path, settings: Settings, start_state: Optional[dict], start_index: int,
              progress: bool = True) -> dict:
    """Extract every remaining chunk; returns {'state': final state, 'written': [...], 'dims': ...}."""
    runner = Runner(model, settings)
    chunker = Chunker(source, model.tokenizer, settings, start_state, start_index)
    asm = ShardAssembler(out, settings, runner.dims)
    writer = WriterThread(asm)
    total = source.size
    if total is not None and settings.limit_docs is not None:
        total = min(total, settings.limit_docs)
    st0 = start_state or {}
    bar = Progress(total, progress, st0.get("records", 0), st0.get("tokens", 0), settings.mode == "document")
    nonfinite = dict(st0.get("nonfinite") or {})
    last_records = st0.get("records", 0)
    try:
        for chunk in chunker:
            writer.begin(chunk)
            counts = runner.run_chunk(chunk, writer, bar)
            add_counts(nonfinite, counts)
            chunk.state["nonfinite"] = dict(nonfinite)
            writer.finish(chunk, chunk.state)
            bar.chunk_done(chunk.state["records"] - last_records)
            last_records = chunk.state["records"]
        writer.close()
    except BaseException:
        try:
            writer.close()
        except BaseException:
            pass
        raise
    finally:
        bar.close()
    final = chunker.final_state or dict(start_state or {})
    final["nonfinite"] = nonfinite
    return {"state": final, "written": writer.written, "dims": runner.dims, "bytes": asm.bytes}
