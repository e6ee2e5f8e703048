"""Canonical site names (TransformerLens vocabulary) and their resolution onto real HF modules.

Shapes, for a batch of B prompts padded to T tokens (the one place they are documented):

  hook_embed                    (B, T, d_model)   token embedding
  hook_pos_embed                (B, T, d_model)   learned position embedding (GPT-2, BERT)
  blocks.{L}.hook_resid_pre     (B, T, d_model)   residual stream entering block L
  blocks.{L}.attn.hook_q        (B, T, H, d_head) queries (output of the query projection; before any rotation)
  blocks.{L}.attn.hook_k        (B, T, H_kv, d_head) keys, before any rotation (H_kv < H: grouped-query kv heads)
  blocks.{L}.attn.hook_v        (B, T, H_kv, d_head) values (H_kv kv heads, each shared by H / H_kv query heads)
  blocks.{L}.attn.hook_rot_q    (B, T, H, d_head) queries after the rotary embedding (rotary families only)
  blocks.{L}.attn.hook_rot_k    (B, T, H_kv, d_head) keys after the rotary embedding (rotary families only)
  blocks.{L}.attn.hook_attn_scores (B, H, T, T)   q.k scaled and masked, before the softmax (masked: dtype min)
  blocks.{L}.attn.hook_pattern  (B, H, T, T)      attention probabilities (query_pos, key_pos)
  blocks.{L}.attn.hook_z        (B, T, H, d_head) per-head attention output, before the output projection
  blocks.{L}.hook_attn_out      (B, T, d_model)   attention output added to the residual stream
  blocks.{L}.hook_resid_mid     (B, T, d_model)   residual stream between attention and MLP
  blocks.{L}.mlp.hook_post      (B, T, d_mlp)     MLP hidden activation (input of the down projection)
  blocks.{L}.hook_mlp_out       (B, T, d_model)   MLP output added to the residual stream
  blocks.{L}.hook_resid_post    (B, T, d_model)   residual stream leaving block L
  ln_final.hook_normalized      (B, T, d_model)   final norm output (what the unembedding reads)
  module:<path>:in|out          whatever that module takes or returns (first tensor)

Negative layers count from the end (blocks.-1 is the last block). Reading q, k, v or their rotations keeps the
fused attention kernel; hook_attn_scores and hook_pattern compute that one layer's attention explicitly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .adapters import Adapter
from .errors import MechscopeError, suggest

SITE_DOC = __doc__

# kind -> (TransformerLens suffix, shape description, rank inside a block for execution order)
BLOCK_SITES = {
    "resid_pre": ("hook_resid_pre", "(B, T, d_model)", 0),
    "q": ("attn.hook_q", "(B, T, H, d_head)", 1),
    "k": ("attn.hook_k", "(B, T, H_kv, d_head)", 2),
    "v": ("attn.hook_v", "(B, T, H_kv, d_head)", 3),
    "rot_q": ("attn.hook_rot_q", "(B, T, H, d_head)", 4),
    "rot_k": ("attn.hook_rot_k", "(B, T, H_kv, d_head)", 5),
    "attn_scores": ("attn.hook_attn_scores", "(B, H, T, T)", 6),
    "pattern": ("attn.hook_pattern", "(B, H, T, T)", 7),
    "z": ("attn.hook_z", "(B, T, H, d_head)", 8),
    "attn_out": ("hook_attn_out", "(B, T, d_model)", 9),
    "resid_mid": ("hook_resid_mid", "(B, T, d_model)", 10),
    "mlp_post": ("mlp.hook_post", "(B, T, d_mlp)", 11),
    "mlp_out": ("hook_mlp_out", "(B, T, d_model)", 12),
    "resid_post": ("hook_resid_post", "(B, T, d_model)", 13),
}
QKV = ("q", "k", "v")
KERNEL_SITES = ("rot_q", "rot_k", "attn_scores", "pattern")  # read inside the attention kernel (kernels.py)
GLOBAL_SITES = {"hook_embed": "embed", "hook_pos_embed": "pos_embed", "ln_final.hook_normalized": "ln_final"}
SUFFIX_TO_KIND = {suffix: kind for kind, (suffix, _, _) in BLOCK_SITES.items()}
_BLOCK_RE = re.compile(r"^blocks\.(-?\d+)\.(.+)$")


@dataclass(frozen=True)
class Site:
    name: str               # canonical name, layer made non-negative
    kind: str               # resid_pre, z, ..., embed, pos_embed, ln_final, module
    layer: Optional[int]
    path: str               # dotted HF module path
    io: str                 # "in" (first input), "out" (first output), "qkv" (q, k or v: a slice of the output
                            # of the projection at `path`, see Adapter.qkv_layout), "kernel" (rot_q, rot_k,
                            # attn_scores, pattern: inside the attention kernel of the module at `path`) or
                            # "resid_mid" (resid_pre + output of `path`, written back through that output)
    order: tuple            # execution order key, used to stop the forward early

    @property
    def heads(self) -> bool:
        return self.kind == "z"


def short_name(kind: str, layer: int) -> str:
    """Canonical name of a block site: short_name('resid_post', 3) == 'blocks.3.hook_resid_post'."""
    return f"blocks.{layer}.{BLOCK_SITES[kind][0]}"


def available_kinds(adapter: Adapter) -> list[str]:
    return [k for k in BLOCK_SITES if not (k == "resid_mid" and adapter.resid_mid is None)
            and not (k in ("rot_q", "rot_k") and not adapter.rotary)]


def all_site_names(adapter: Adapter, n_layers: int) -> list[str]:
    names = ["hook_embed"] + (["hook_pos_embed"] if adapter.pos_embed else [])
    for layer in range(n_layers):
        names += [short_name(k, layer) for k in available_kinds(adapter)]
    if adapter.ln_final:
        names.append("ln_final.hook_normalized")
    return names


def _block_path(adapter: Adapter, layer: int, sub: Optional[str]) -> str:
    return f"{adapter.layers}.{layer}" + (f".{sub}" if sub else "")


def resolve(name: str, adapter: Adapter, n_layers: int) -> Site:
    """Turn a site name into a Site, or raise a MechscopeError listing the closest valid names."""
    if not isinstance(name, str) or not name.strip():
        raise MechscopeError(f"Site name {name!r} is empty. Use a name like 'blocks.0.hook_resid_post'.")
    name = name.strip()
    if name.startswith("module:"):
        parts = name.split(":")
        io = parts[2] if len(parts) == 3 else "out"
        if len(parts) not in (2, 3) or io not in ("in", "out") or not parts[1]:
            raise MechscopeError(
                f"Site {name!r} is not a valid escape-hatch site. Write 'module:<dotted.path>:in' or "
                "'module:<dotted.path>:out', e.g. 'module:model.layers.3.self_attn.o_proj:in'."
            )
        return Site(name=f"module:{parts[1]}:{io}", kind="module", layer=None, path=parts[1], io=io, order=(1e9,))
    valid = all_site_names(adapter, n_layers)
    if name in GLOBAL_SITES:
        kind = GLOBAL_SITES[name]
        if kind == "pos_embed" and not adapter.pos_embed:
            raise MechscopeError(
                f"Site 'hook_pos_embed' does not exist on {adapter.family} models (positions are rotary, applied "
                f"inside attention). {suggest(name, valid)}"
            )
        if kind == "ln_final" and not adapter.ln_final:
            raise MechscopeError(
                f"Site 'ln_final.hook_normalized' does not exist on {adapter.family} models (post-LayerNorm: each "
                f"block already ends in a norm; use 'blocks.-1.hook_resid_post'). {suggest(name, valid)}"
            )
        path = {"embed": adapter.embed, "pos_embed": adapter.pos_embed, "ln_final": adapter.ln_final}[kind]
        order = (-1, 0) if kind != "ln_final" else (n_layers, 0)
        return Site(name=name, kind=kind, layer=None, path=path, io="out", order=order)
    m = _BLOCK_RE.match(name)
    if not m or m.group(2) not in SUFFIX_TO_KIND:
        raise MechscopeError(f"Unknown site {name!r}. {suggest(name, valid)} See `mechscope inspect` for all sites.")
    layer, kind = int(m.group(1)), SUFFIX_TO_KIND[m.group(2)]
    if not -n_layers <= layer < n_layers:
        raise MechscopeError(
            f"Layer {layer} in site {name!r} is out of range: this model has {n_layers} layers (0 to "
            f"{n_layers - 1}, or -1 to -{n_layers} from the end). "
            f"{suggest(f'blocks.{n_layers - 1}.{m.group(2)}', valid)}"
        )
    layer %= n_layers
    canonical = short_name(kind, layer)
    if kind == "resid_mid" and adapter.resid_mid is None:
        raise MechscopeError(
            f"Site {canonical!r} does not exist on {adapter.family} models: attention and MLP run in parallel on the "
            "same input, so there is no residual stream between them. Use hook_resid_pre, hook_attn_out, "
            "hook_mlp_out or hook_resid_post."
        )
    if kind in ("rot_q", "rot_k") and not adapter.rotary:
        raise MechscopeError(
            f"Site {canonical!r} does not exist on {adapter.family} models: positions are learned embeddings, not a "
            f"rotation of q and k, so attention reads hook_q / hook_k as they are. Use "
            f"{short_name(kind[-1], layer)!r}."
        )
    if kind in QKV:
        sub = adapter.qkv[QKV.index(kind)] if adapter.qkv_layout == "separate" else adapter.qkv[0]
        return Site(name=canonical, kind=kind, layer=layer, path=_block_path(adapter, layer, sub), io="qkv",
                    order=(layer, BLOCK_SITES[kind][2]))
    sub, io = {
        "resid_pre": (None, "in"),
        "resid_post": (None, "out"),
        "attn_out": (adapter.attn, "out"),
        "mlp_out": (adapter.mlp, "out"),
        "z": (adapter.attn_o, "in"),
        "mlp_post": (adapter.mlp_down, "in"),
        "pattern": (adapter.attn_core, "kernel"),
        "rot_q": (adapter.attn_core, "kernel"),
        "rot_k": (adapter.attn_core, "kernel"),
        "attn_scores": (adapter.attn_core, "kernel"),
        "resid_mid": (adapter.attn, "resid_mid") if adapter.resid_mid == "attn_residual"
        else (adapter.resid_mid_module, "out"),
    }[kind]
    return Site(name=canonical, kind=kind, layer=layer, path=_block_path(adapter, layer, sub), io=io,
                order=(layer, BLOCK_SITES[kind][2]))


def block_module_path(adapter: Adapter, layer: int, field: str) -> str:
    """Dotted path of one of the adapter's per-block modules ('attn', 'mlp', ...) at `layer`."""
    return _block_path(adapter, layer, getattr(adapter, field) if field else None)
