"""Capture and intervene at sites with scoped hooks on the real HF modules.

`install(model, capture, patch)` is a context manager: inside it, one plain HF forward fills `cache` and applies the
patches; on exit (normal or not) every hook is removed. When the caller needs no logits, the forward is stopped
right after the deepest captured site by raising `StopForward` from a hook.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Union

import torch

from .kernels import HOOKS_ATTR
from .errors import MechscopeError
from .sites import QKV, Site, block_module_path

PatchValue = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


class StopForward(Exception):
    """Raised by the stop hook once every requested activation has been captured."""


class ActivationCache(dict):
    """site name -> tensor, plus what the batch looked like.

    attention_mask (B, T) bool: True on real tokens, False on padding. `input_ids` and `position_ids` (B, T) are the
    exact tensors that were fed to the model; `lengths` (B,) the number of real tokens of each prompt.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    padding_side: str

    @property
    def pad_mask(self) -> torch.Tensor:
        return ~self.attention_mask

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(-1)

    def last_positions(self) -> torch.Tensor:
        """Index of the last real token of each prompt (B,), whatever the padding side."""
        t = self.attention_mask.shape[1]
        idx = torch.arange(t, device=self.attention_mask.device).expand_as(self.attention_mask)
        return torch.where(self.attention_mask, idx, -1).max(-1).values


@dataclass
class Batch:
    input_ids: torch.Tensor       # (B, T) long
    attention_mask: torch.Tensor  # (B, T) bool
    position_ids: torch.Tensor    # (B, T) long, counting real tokens only
    padding_side: str = "right"
    segments: Optional[tuple] = None  # packed batch (B == 1): lengths of the sequences laid side by side
    token_type_ids: Optional[torch.Tensor] = None  # (B, T) sentence A / B of an encoder's pair input


def _first_tensor(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _replace_first(x, new):
    if isinstance(x, tuple):
        return (new,) + tuple(x[1:])
    if isinstance(x, list):
        return [new] + list(x[1:])
    return new


def apply_patch(value: PatchValue, act: torch.Tensor, site: Site) -> torch.Tensor:
    """New activation from a tensor (broadcast to the activation's shape) or a function of the activation."""
    if callable(value):
        new = value(act)
        if not isinstance(new, torch.Tensor):
            raise MechscopeError(
                f"The patch function for site {site.name!r} returned {type(new).__name__}, not a tensor. Return the "
                "new activation (same shape as the one it receives)."
            )
    else:
        new = torch.as_tensor(value)
        try:
            new = new.to(device=act.device, dtype=act.dtype).expand_as(act)
        except RuntimeError:
            raise MechscopeError(
                f"The patch tensor for site {site.name!r} has shape {tuple(new.shape)}, which does not broadcast to "
                f"the activation's shape {tuple(act.shape)}. Pass a tensor of that shape or a function."
            ) from None
    if new.shape != act.shape:
        raise MechscopeError(
            f"The patch for site {site.name!r} produced shape {tuple(new.shape)}; the activation has shape "
            f"{tuple(act.shape)}. A patch must keep the shape."
        )
    return new.to(act.dtype)


@contextlib.contextmanager
def install(model, capture: Iterable[Site] = (), patch: Optional[Mapping[Site, PatchValue]] = None,
          cache: Optional[dict] = None, stop_after: Optional[Site] = None, detach: bool = True):
    """Install capture/patch hooks for one forward; always remove them on exit."""
    patch = dict(patch or {})
    capture = list(capture)
    cache = {} if cache is None else cache
    handles: list = []
    flagged: list = []
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    sites = sorted(set(capture) | set(patch), key=lambda s: s.order)

    def store(site: Site, act: torch.Tensor) -> None:
        if site in capture:
            cache[site.name] = act.detach() if detach else act

    def transform(site: Site, act: torch.Tensor) -> torch.Tensor:
        """Patch then capture one activation in site coordinates."""
        if site.heads:  # (B, T, H * D) -> (B, T, H, D)
            act = act.view(*act.shape[:-1], n_heads, d_head)
        if site in patch:
            act = apply_patch(patch[site], act, site)
        store(site, act)
        if site.heads:
            act = act.reshape(*act.shape[:-2], n_heads * d_head)  # (B, T, H * D)
        return act

    try:
        for site in sites:
            module = model.module(site.path)
            if site.io == "out":
                def out_hook(mod, args, out, site=site):
                    new = transform(site, _first_tensor(out))
                    return _replace_first(out, new) if site in patch else None

                handles.append(module.register_forward_hook(out_hook))
            elif site.io == "in":
                def in_hook(mod, args, kwargs, site=site):
                    if args:
                        new = transform(site, args[0])
                        return ((new,) + tuple(args[1:]), kwargs) if site in patch else None
                    key = next(iter(kwargs))  # first keyword argument, e.g. hidden_states
                    new = transform(site, kwargs[key])
                    return (args, {**kwargs, key: new}) if site in patch else None

                handles.append(module.register_forward_pre_hook(in_hook, with_kwargs=True))
            elif site.io == "qkv":
                handles.append(module.register_forward_hook(_qkv_hook(model, site, transform, site in patch)))
            elif site.io == "kernel":
                if not hasattr(module, HOOKS_ATTR):
                    setattr(module, HOOKS_ATTR, {})
                    flagged.append(module)
                getattr(module, HOOKS_ATTR)[site.kind] = lambda a, site=site: transform(site, a)
            elif site.io == "resid_mid":
                handles += _resid_mid_hooks(model, site, transform)
            else:  # pragma: no cover - sites.resolve never builds another io
                raise AssertionError(site.io)
        if stop_after is not None:
            handles.append(_stop_hook(model, stop_after))
        yield cache
    finally:
        for h in handles:
            h.remove()
        for module in flagged:
            if hasattr(module, HOOKS_ATTR):
                delattr(module, HOOKS_ATTR)


def qkv_split(out: torch.Tensor, layout: str, n_heads: int, n_kv_heads: int, d_head: int) -> list:
    """A projection output (B, T, N) as its parts, each (B, T, heads, d_head): [q, k, v], or [x] for "separate"."""
    if layout == "separate":
        return [out.view(*out.shape[:-1], -1, d_head)]
    if layout == "fused":  # [q | k | v]
        sizes = [n_heads * d_head, n_kv_heads * d_head, n_kv_heads * d_head]
        return [p.view(*p.shape[:-1], -1, d_head) for p in out.split(sizes, dim=-1)]
    if layout == "interleaved":  # (B, T, H, 3, D): per head [q_h | k_h | v_h]
        return list(out.view(*out.shape[:-1], n_heads, 3, d_head).unbind(-2))
    raise AssertionError(layout)  # pragma: no cover - adapters only hold the three layouts


def qkv_join(parts: list, layout: str) -> torch.Tensor:
    """The inverse of `qkv_split`: parts (B, T, heads, d_head) -> the projection output (B, T, N)."""
    if layout == "interleaved":
        return torch.stack(parts, dim=-2).flatten(-3)  # (B, T, H * 3 * D)
    return torch.cat([p.flatten(-2) for p in parts], dim=-1)


def _qkv_hook(model, site: Site, transform, patched: bool):
    """q, k or v read (and written) as a slice of its projection's output."""
    layout, c = model.adapter.qkv_layout, model.cfg
    which = 0 if layout == "separate" else QKV.index(site.kind)

    def hook(mod, args, out):
        parts = qkv_split(_first_tensor(out), layout, c.n_heads, c.n_kv_heads, c.d_head)
        new = transform(site, parts[which])
        if not patched:
            return None
        parts[which] = new
        return _replace_first(out, qkv_join(parts, layout))

    return hook


def _resid_mid_hooks(model, site: Site, transform) -> list:
    """Pre-LN blocks compute resid_mid = resid_pre + attn_out and never expose it as a module output.

    We read resid_pre at the block's input and attn_out at the attention output, form the same sum the block
    forms, and write a patched resid_mid back as attn_out' = resid_mid' - resid_pre (left untouched where the
    patch did not change the value, so patching with the same value is bitwise the identity).
    """
    block = model.module(site.path.rsplit(".", len(model.adapter.attn.split(".")))[0])
    seen: dict = {}

    def remember(mod, args, kwargs):
        seen["resid_pre"] = args[0] if args else next(iter(kwargs.values()))

    def attn_hook(mod, args, out):
        attn_out = _first_tensor(out)
        mid = seen["resid_pre"] + attn_out
        new_mid = transform(site, mid)
        if new_mid is mid:
            return None
        new_attn = torch.where(new_mid == mid, attn_out, new_mid - seen["resid_pre"])
        return _replace_first(out, new_attn)

    return [block.register_forward_pre_hook(remember, with_kwargs=True),
            model.module(site.path).register_forward_hook(attn_hook)]


def _stop_hook(model, site: Site):
    """Raise StopForward once `site` has been read: before the module runs for inputs, after it for the rest
    (q, k, v and the kernel sites after the whole attention module, a resid_mid at its attention output)."""
    def stop(*_):
        raise StopForward

    path = site.path
    if site.io == "qkv":  # the projections may run in any order: stop once attention has run
        path = block_module_path(model.adapter, site.layer, "attn_core")
    module = model.module(path)
    if site.io == "in":
        return module.register_forward_pre_hook(stop)
    return module.register_forward_hook(stop)
