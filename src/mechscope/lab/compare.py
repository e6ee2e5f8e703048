"""Check a forward pass written by hand against the real model, site by site.

`compare(student, model, prompt)` runs `student(input_ids, record)`, which returns logits (1, T, vocab) and calls
`record(site_name, tensor)` at the canonical sites it computes, then runs the real model capturing those same sites,
and reports, in forward order, each site's max and mean |student - real| and whether it is within tolerance; the
first site that is not, and what usually goes wrong there.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch

from ..errors import MechscopeError
from .hints import hint_for, observations


@dataclass
class SiteDiff:
    name: str
    shape: tuple            # the real model's shape
    max_abs: float          # max |student - real| (inf when the shapes differ or the student has NaN)
    mean_abs: float
    ok: bool
    note: str = ""          # what was seen besides the numbers (a shape mismatch, future positions attended, ...)


@dataclass
class Comparison:
    sites: list             # SiteDiff, in the real model's forward order, the logits last
    first_divergence: Optional[str]
    hint: str
    atol: float
    rtol: float
    prompt: str
    tokens: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_divergence is None

    @property
    def tolerance(self) -> str:
        return (f"a site matches when every element has |student - real| <= {self.atol:g} + {self.rtol:g} x |real| "
                "(torch.allclose's rule)")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "first_divergence": self.first_divergence, "hint": self.hint,
                "tolerance": self.tolerance, "atol": self.atol, "rtol": self.rtol, "prompt": self.prompt,
                "tokens": self.tokens, "sites": [asdict(s) for s in self.sites]}

    def __str__(self) -> str:
        lines = [f"{'site':<34} {'shape':<20} {'max |diff|':>11} {'mean |diff|':>11}  ok"]
        for s in self.sites:
            lines.append(f"{s.name:<34} {str(tuple(s.shape)):<20} {s.max_abs:>11.3g} {s.mean_abs:>11.3g}  "
                         f"{'yes' if s.ok else 'NO'}" + (f"  ({s.note})" if s.note else ""))
        lines.append(self.tolerance + ".")
        lines.append("All sites match." if self.ok else f"First divergence: {self.first_divergence}. {self.hint}")
        return "\n".join(lines)


def compare(student: Callable, model, prompt, *, atol: float = 1e-4, rtol: float = 1e-4) -> Comparison:
    """Compare `student(input_ids, record) -> logits` with `model` (a mechscope Model) on `prompt` (text, or a
    list of token ids). Defaults suit fp32 (the real model should be loaded in fp32)."""
    if not (atol >= 0 and rtol >= 0):
        raise MechscopeError(f"Tolerances must be >= 0 (got atol={atol}, rtol={rtol}).", argument="atol")
    batch = model.batch([prompt] if isinstance(prompt, str) else [list(prompt)])
    ids = batch.input_ids  # (1, T)
    recorded: dict = {}

    def record(name, tensor):
        site = model.site(name)  # an unknown name raises, listing the closest valid ones
        if site.name in recorded:
            raise MechscopeError(f"The student recorded site {site.name!r} twice. Record each site once.")
        if not isinstance(tensor, torch.Tensor):
            raise MechscopeError(f"record({name!r}, ...) got a {type(tensor).__name__}; pass the torch tensor.")
        recorded[site.name] = (site, tensor.detach().to("cpu", torch.float32).clone())

    with torch.no_grad():
        logits = student(ids, record)
    if not isinstance(logits, torch.Tensor):
        raise MechscopeError(f"The student's forward returned {type(logits).__name__}, not a tensor: return the "
                             "logits, shape (1, T, vocab).")
    real_logits, cache = model.run(batch, capture=[s for s, _ in recorded.values()])
    order = sorted(recorded.values(), key=lambda st: st[0].order)  # the real forward's order (stable for ties)
    diffs = [_diff(site.name, site.kind, mine, cache[site.name], atol, rtol) for site, mine in order]
    diffs.append(_diff("logits", "logits", logits.detach().to("cpu", torch.float32), real_logits, atol, rtol))
    first = next((d for d in diffs if not d.ok), None)
    kinds = {site.name: site.kind for site, _ in order}
    hint = "" if first is None else hint_for(kinds.get(first.name, "logits"), first.name, model.adapter)
    return Comparison(diffs, first.name if first else None, hint, atol, rtol, prompt if isinstance(prompt, str)
                      else "", model.to_str_tokens(ids[0].tolist()))


def _diff(name: str, kind: str, mine: torch.Tensor, real: torch.Tensor, atol: float, rtol: float) -> SiteDiff:
    real = real.detach().to("cpu", torch.float32)
    shape = tuple(real.shape)
    if tuple(mine.shape) != shape and tuple(mine.shape) == shape[1:]:
        mine = mine[None]  # recorded without the batch axis
    if tuple(mine.shape) != shape:
        return SiteDiff(name, shape, float("inf"), float("inf"), False,
                        f"shape {tuple(mine.shape)}, the real model's is {shape}")
    diff = (mine - real).abs()
    ok = bool(torch.all(diff <= atol + rtol * real.abs()))  # False where the student has NaN
    note = "" if ok else observations(kind, mine, real)
    return SiteDiff(name, shape, float(diff.max()), float(diff.mean()), ok, note)
