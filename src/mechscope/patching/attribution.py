"""Attribution patching: the first-order (linear) approximation of every cell at once.

For a cell patching activation a (base run) with a' (source run), metric(patched) ~= metric(base) + g . (a' - a),
with g = d metric / d a at the base run. One forward of the source prompt (its activations), one forward of the base
prompt keeping the graph, and one backward give g at every layer: the value of a cell is that dot product summed
over d_model (over d_head and the patched positions for `z`, per head), plus metric(base) so that it is on the same
scale as the exact sweep's values.

The gradient is taken through a zero tensor added at the site (so the activations themselves are untouched). For
resid_mid of a pre-LN block the block forms resid_mid = resid_pre + attn_out and only reads that sum afterwards, so
d metric / d resid_mid equals d metric / d attn_out: the zero tensor is added at the attention output.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from ..sites import short_name
from .exact import Cell, Recorded
from .metrics import Metric


def attribution_cells(model, kind: str, layers: Sequence[int], cols: Sequence[int], base_ids, src: Recorded,
                      metric: Union[Metric, Callable[[torch.Tensor], Metric]], z_positions: Optional[list] = None):
    """Returns (values (len(layers), len(cols)) float64 tensor, base metric value, metric).

    `metric` may be a function of the base run's last-position logits returning the Metric (so that the base run
    is not run twice when the metric needs its logits, e.g. `normalized`)."""
    T = len(base_ids)
    z_positions = list(range(T)) if z_positions is None else list(z_positions)
    grad_kind = "attn_out" if kind == "resid_mid" else kind
    shape = (1, T, model.cfg.n_heads, model.cfg.d_head) if kind == "z" else (1, T, model.cfg.d_model)
    deltas = {L: torch.zeros(shape, dtype=model.dtype, device=model.device, requires_grad=True) for L in layers}
    patch = {short_name(grad_kind, L): (lambda act, d=deltas[L]: act + d) for L in layers}
    final = short_name("resid_post", model.cfg.n_layers - 1)
    capture = [short_name(kind, L) for L in layers] + [final]
    _, cache = model.run([list(base_ids)], capture=capture, patch=patch, grad=True, logits=False)
    logits = model.unembed(cache[final][0, -1])  # (V,): only the last position is unembedded
    if not isinstance(metric, Metric):
        metric = metric(logits.detach())
    value = metric.from_logits(logits)
    grads = torch.autograd.grad(value, [deltas[L] for L in layers], allow_unused=True)
    base_value = float(value.detach())
    out = torch.zeros(len(layers), len(cols), dtype=torch.float64)
    with torch.no_grad():
        for i, (L, g) in enumerate(zip(layers, grads)):
            if g is None:
                continue
            diff = (src.acts[L].to(g.dtype) - cache[short_name(kind, L)][0].detach()).double()
            g = g[0].double()
            if kind == "z":  # (T, H, D)
                zp = torch.tensor(z_positions)
                per = (g[zp] * diff[zp]).sum((0, 2))
            else:            # (T, d)
                per = (g * diff).sum(-1)
            out[i] = per[list(cols)].cpu() + base_value
    return out, base_value, metric


def pearson(x, y) -> Optional[float]:
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.numel() < 2 or float(x.std()) == 0 or float(y.std()) == 0:
        return None
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def top_cells(values: torch.Tensor, layers, cols, base_value: float, k: int) -> list:
    """The k cells whose estimated effect |value - base| is largest: [(Cell, row, col), ...]."""
    eff = (values - base_value).abs().flatten()
    k = min(k, eff.numel())
    idx = torch.topk(eff, k).indices.tolist()
    n = len(cols)
    return [(Cell(layers[i // n], cols[i % n]), i // n, i % n) for i in idx]
