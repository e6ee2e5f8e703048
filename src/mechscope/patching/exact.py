"""The exact patching engine: every cell's patched variant, stacked along the batch, from the patched layer on.

1. One forward of the base prompt (the corrupted one when denoising) records, for every block, the arguments
   Hugging Face passed it (hidden states, attention mask, rotary position embeddings, position ids, ...; captured
   generically with a forward pre-hook `with_kwargs=True` and bound to the block's signature by name), the keys and
   values its attention computed (a duck-typed KV cache handed to each block through its cache argument), and the
   site activations.
2. One forward of the source prompt records the site activations to copy in.
3. Cells are grouped into chunks (a memory budget). A chunk runs as a wavefront over the HF decoder layers, called
   directly with the recorded arguments (tensors whose leading dim is the batch size of 1 are expanded to the
   number of rows): a cell patched at layer L joins the batch at block L (resid_pre and in-block sites: its row
   enters with the base run's input of block L, and the in-block site is patched for its row only, through the
   same hooks as `Model.run`) or at block L + 1 (resid_post: its row enters already patched). Rows of earlier
   layers keep going, so each block runs once per chunk, never once per cell, and no block before L is recomputed.
4. Prefix reuse: a cell patched at position p leaves positions < p equal to the base run in every layer (causal
   attention). With reuse on, chunks hold cells of the same first patched position p0, their rows carry only
   positions p0..T-1, and each block's attention reads the base run's keys/values of positions < p0 through the
   cache argument (`_PrefixKV`), with the causal mask cut to those queries.
5. Only the last position is normalized and unembedded, and only for the vocabulary columns the metric reads (A and
   B), or the full row for KL / log-probabilities.

Cells whose source activation equals the base activation bit for bit (positions before the first differing token)
are not run: patching them is the identity, so their value is the base run's metric.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from .. import hooks as core
from ..sites import short_name
from .metrics import Metric

INBLOCK = ("resid_mid", "attn_out", "mlp_out", "z")


@dataclass
class Recorded:
    """One forward of one prompt: site activations per layer (batch dim dropped), last logits, and (blocks=True)
    every block's call arguments by name and its attention keys/values."""
    ids: list
    logits: torch.Tensor                               # (V,) last position
    acts: dict = field(default_factory=dict)           # layer -> (T, d_model) or (T, H, d_head) for z
    block_kw: dict = field(default_factory=dict)       # layer -> {argument name: value} passed to the HF block
    hidden_name: str = "hidden_states"                 # the block argument holding the residual stream
    cache_name: Optional[str] = None                   # the block argument taking a KV cache (None: none)
    kv: dict = field(default_factory=dict)             # layer -> (keys, values) (1, H_kv, T, d_head)


CACHE_ARGS = ("past_key_values", "layer_past", "past_key_value")


class _KVRecorder:
    """Duck-typed KV cache handed to each block of the base run: stores the keys/values, returns them unchanged."""

    def __init__(self, store: dict):
        self.store = store

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.store[layer_idx] = (key.detach(), value.detach())
        return key, value


class _PrefixKV:
    """Duck-typed KV cache for the patched rows: the base run's keys/values of positions < p0 (identical in every
    variant, by causality) followed by the keys/values of the rows' own positions >= p0."""

    def __init__(self, kv: dict, p0: int, n: int):
        self.kv, self.p0, self.n = kv, p0, n

    def update(self, key, value, layer_idx, *args, **kwargs):
        pk, pv = self.kv[layer_idx]
        pk = pk[:, :, : self.p0].to(key.dtype).expand(self.n, -1, -1, -1)
        pv = pv[:, :, : self.p0].to(value.dtype).expand(self.n, -1, -1, -1)
        return torch.cat([pk, key], 2), torch.cat([pv, value], 2)


def _bind(block, args, kwargs) -> tuple[dict, str]:
    """The block's call as {parameter name: value} (**kwargs flattened), and the name of its first parameter."""
    sig = inspect.signature(block.forward)
    bound = sig.bind_partial(*args, **kwargs).arguments
    flat = {}
    for name, value in bound.items():
        if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            flat.update(value)
        else:
            flat[name] = value
    return flat, next(iter(sig.parameters))


def record(model, ids: Sequence[int], kind: str, layers: Sequence[int], blocks: bool = False) -> Recorded:
    """Run `ids` once; capture `kind` at `layers` (and, with blocks=True, every block's call and keys/values)."""
    handles = []
    rec = Recorded(ids=list(ids), logits=None)
    if blocks:
        for k in range(model.cfg.n_layers):
            block = model.module(f"{model.adapter.layers}.{k}")
            params = inspect.signature(block.forward).parameters
            rec.cache_name = next((c for c in CACHE_ARGS if c in params), None)

            def pre(mod, args, kwargs, k=k):
                flat, rec.hidden_name = _bind(mod, args, kwargs)
                rec.block_kw[k] = dict(flat)
                if rec.cache_name is None or flat.get(rec.cache_name) is not None:
                    return None
                flat[rec.cache_name] = _KVRecorder(rec.kv)
                return (), flat
            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    names = [short_name(kind, L) for L in layers]
    final = short_name("resid_post", model.cfg.n_layers - 1)
    try:  # no logits from HF: only the last position is unembedded below
        _, cache = model.run([list(ids)], capture=names + [final], logits=False)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        rec.logits = model.unembed(cache[final][0, -1:])[0]
    rec.acts = {L: cache[n][0] for L, n in zip(layers, names)}
    if blocks and len(rec.kv) != model.cfg.n_layers:
        rec.cache_name = None  # this family's attention did not use the cache argument: no prefix reuse
    return rec


@dataclass(frozen=True)
class Cell:
    """One patched variant: `layer`, and `col` = the position (or a tuple of positions patched together) for position
    sites, or the head for z (patched at the sweep's z positions)."""
    layer: int
    col: Union[int, tuple]

    @property
    def cols(self) -> list:
        return list(self.col) if isinstance(self.col, tuple) else [self.col]


def _adapt(obj, n: int, p0: int, T: int):
    """Recorded block arguments for n rows covering positions p0..T-1: tensors with a leading batch dim of 1 are
    expanded to n rows; with p0 > 0, their position axis (axis 1 of length T; or a 1-D tensor of T positions, such
    as cache_position) is cut to p0.."""
    if isinstance(obj, torch.Tensor):
        if obj.ndim >= 2 and obj.shape[0] == 1:
            if p0 and obj.shape[1] == T:
                obj = obj[:, p0:]
            return obj.expand(n, *obj.shape[1:])
        if p0 and obj.ndim == 1 and obj.shape[0] == T and not obj.is_floating_point():
            return obj[p0:]
        return obj
    if isinstance(obj, tuple):
        return tuple(_adapt(o, n, p0, T) for o in obj)
    if isinstance(obj, list):
        return [_adapt(o, n, p0, T) for o in obj]
    return obj


def _block_kwargs(base: Recorded, k: int, h: torch.Tensor, p0: int, T: int) -> dict:
    n = h.shape[0]
    kw = {}
    for name, value in base.block_kw[k].items():
        if name == "attention_mask":
            continue
        kw[name] = _adapt(value, n, p0, T)
    mask = base.block_kw[k].get("attention_mask")
    if p0:
        if isinstance(mask, torch.Tensor) and mask.ndim == 4:  # (1, 1, T, T): keep the queries p0..T-1
            mask = mask[:, :, p0:, :]
        elif mask is None:  # causal: query p0 + i sees keys 0..p0 + i
            q = torch.arange(p0, T, device=h.device)[:, None]
            mask = (torch.arange(T, device=h.device)[None, :] <= q)[None, None]
        else:
            raise RuntimeError("unexpected attention mask")  # caller disables reuse for such models
        kw[base.cache_name] = _PrefixKV(base.kv, p0, n)
    elif base.cache_name:
        kw[base.cache_name] = None
    if "attention_mask" in base.block_kw[k] or p0:
        kw["attention_mask"] = mask
    kw[base.hidden_name] = h
    return kw


def default_max_batch(model, n_tokens: int) -> int:
    """Rows per chunk from a memory budget: 1/4 of free GPU memory, or 2 GiB on CPU."""
    c = model.cfg
    per_row = n_tokens * (8 * c.d_model + 3 * c.d_mlp + 2 * c.n_heads * n_tokens) * model.dtype.itemsize
    budget = 2 * 2**30
    if model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
        budget = free // 4
    return int(max(1, min(4096, budget // max(per_row, 1))))


def _is_noop(kind: str, cell: Cell, base: Recorded, src: Recorded, z_positions) -> bool:
    a, b = base.acts[cell.layer], src.acts[cell.layer]
    if kind == "z":
        return torch.equal(a[z_positions, cell.col], b[z_positions, cell.col])
    return torch.equal(a[cell.cols], b[cell.cols])


def can_reuse_prefix(model, base: Recorded) -> bool:
    """Whether rows may skip the positions before their first patched one (reading those keys/values from the
    base run): needs a block KV-cache argument used by every layer, causal masks we can cut, and no sliding window
    shorter than the prompt."""
    if base.cache_name is None or not base.block_kw:
        return False
    window = getattr(model.hf.config, "sliding_window", None)
    if window and getattr(model.hf.config, "use_sliding_window", True) and window < len(base.ids):
        return False
    for kw in base.block_kw.values():
        mask = kw.get("attention_mask")
        if not (mask is None or isinstance(mask, torch.Tensor) and mask.ndim == 4):
            return False
    return True


def exact_cells(model, kind: str, cells: Sequence[Cell], base: Recorded, src: Recorded, metric: Metric,
                z_positions: Optional[list] = None, max_batch: Optional[int] = None,
                reuse_prefix: Optional[bool] = None) -> torch.Tensor:
    """Metric of the base run with each cell patched from the source run: (len(cells),) float64 tensor.

    reuse_prefix: rows skip the positions before their first patched position (None: on CPU, or for prompts of
    64 tokens or more, where the saved compute outweighs running more, smaller batches).
    """
    n_layers, T = model.cfg.n_layers, len(base.ids)
    z_positions = list(range(T)) if z_positions is None else list(z_positions)
    out = torch.empty(len(cells), dtype=torch.float64)
    base_value = float(metric.from_logits(base.logits))
    todo = []
    for i, cell in enumerate(cells):
        if _is_noop(kind, cell, base, src, z_positions):
            out[i] = base_value
        else:
            todo.append(i)
    if reuse_prefix is None:
        reuse_prefix = model.device.type == "cpu" or T >= 64
    reuse_prefix = reuse_prefix and can_reuse_prefix(model, base)
    entry = (lambda c: c.layer + 1) if kind == "resid_post" else (lambda c: c.layer)
    first = (lambda c: min(z_positions)) if kind == "z" else (lambda c: min(c.cols))
    start = (lambda c: first(c)) if reuse_prefix else (lambda c: 0)
    todo.sort(key=lambda i: (start(cells[i]), entry(cells[i]), cells[i].cols))
    max_batch = max_batch or default_max_batch(model, T)
    chunks: list = []
    for i in todo:  # chunks of at most max_batch cells sharing their first computed position
        if chunks and len(chunks[-1]) < max_batch and start(cells[chunks[-1][0]]) == start(cells[i]):
            chunks[-1].append(i)
        else:
            chunks.append([i])
    with torch.no_grad():
        for chunk in chunks:
            vals = _run_chunk(model, kind, [cells[i] for i in chunk], entry, base, src, metric, z_positions,
                              n_layers, start(cells[chunk[0]]))
            out[chunk] = vals.cpu().double()
    return out


def _run_chunk(model, kind, cells, entry, base, src, metric, z_positions, n_layers, p0) -> torch.Tensor:
    """Run a chunk of cells as a wavefront over the blocks, on positions p0..T-1 (earlier ones from the cache)."""
    T = len(base.ids)
    h = None                          # (rows, T - p0, d_model) hidden states of the rows so far
    r0 = 0
    for k in range(entry(cells[0]), n_layers + 1):
        new = [c for c in cells if entry(c) == k]
        if new:
            rows = _entry_rows(kind, new, k, base, src, p0)
            r0 = 0 if h is None else h.shape[0]
            h = rows if h is None else torch.cat([h, rows], 0)
        if k == n_layers:
            break
        block = model.module(f"{model.adapter.layers}.{k}")
        patch = {}
        if kind in INBLOCK and new:
            patch = {model.site(short_name(kind, k)): _row_patch(kind, new, r0, src.acts[k][p0:],
                                                                 [p - p0 for p in z_positions], p0)}
        with core.install(model, (), patch):
            h = core._first_tensor(block(**_block_kwargs(base, k, h, p0, T)))
    last = h[:, -1]
    return metric.from_columns(model.unembed(last, columns=metric.columns))


def _entry_rows(kind, new, k, base, src, p0) -> torch.Tensor:
    """Hidden states (positions p0..) entering block k for newly joining cells (patched for resid_pre/post)."""
    if kind == "resid_post":
        base_h = base.acts[k - 1]                       # resid_post of layer k-1 = input of block k
    else:
        base_h = base.block_kw[k][base.hidden_name][0]
    rows = base_h[p0:].unsqueeze(0).repeat(len(new), 1, 1)
    if kind in ("resid_pre", "resid_post"):
        rows_idx, pos = _row_positions(new, 0, rows.device, p0)
        rows[rows_idx, pos] = src.acts[new[0].layer][p0:][pos].to(rows.dtype)
    return rows


def _row_positions(new, r0, dev, p0=0):
    """(row index, position - p0) pairs of the patched entries of cells `new` occupying rows r0, r0+1, ..."""
    rows = [r0 + i for i, c in enumerate(new) for _ in c.cols]
    pos = [p - p0 for c in new for p in c.cols]
    return torch.tensor(rows, device=dev), torch.tensor(pos, device=dev)


def _row_patch(kind, new, r0, src_act, z_positions, p0=0):
    """A patch function for an in-block site that patches rows r0.. (the cells joining at this block) only."""
    n = len(new)

    def fn(act):
        out = act.clone()
        s = src_act.to(act.device, act.dtype)
        if kind == "z":
            rows = torch.arange(r0, r0 + n, device=act.device)
            cols = torch.tensor([c.col for c in new], device=act.device)  # act (N, T, H, D): head `col` at z_positions
            zp = torch.tensor(z_positions, device=act.device)
            out[rows[:, None], zp[None, :], cols[:, None]] = s[zp[None, :], cols[:, None]]
        else:            # act (N, T, d): position(s) `col`
            r, p = _row_positions(new, r0, act.device, p0)
            out[r, p] = s[p]
        return out
    return fn


def naive_cells(model, kind: str, cells: Sequence[Cell], base: Recorded, src: Recorded, metric: Metric,
                z_positions: Optional[list] = None) -> torch.Tensor:
    """Reference: one plain `Model.run` (full HF forward, one patch hook) per cell."""
    from ..interventions import replace

    T = len(base.ids)
    z_positions = list(range(T)) if z_positions is None else list(z_positions)
    out = torch.empty(len(cells), dtype=torch.float64)
    with torch.no_grad():
        for i, c in enumerate(cells):
            source = src.acts[c.layer][None]
            fn = replace(source, positions=z_positions, heads=[c.col]) if kind == "z" else \
                replace(source, positions=c.cols)
            logits, _ = model.run([base.ids], patch={short_name(kind, c.layer): fn})
            out[i] = float(metric.from_logits(logits[0, -1]))
    return out
