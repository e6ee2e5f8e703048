"""`sweep(model, clean, corrupt, tokens=(A, B), ...)`: an activation-patching sweep and its result."""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from ..errors import MechscopeError
from . import validate
from .attribution import attribution_cells, pearson, top_cells
from .exact import Cell, exact_cells, record
from .metrics import make_metric

RESULT_FIELDS = ("model", "clean", "corrupt", "tokens", "metric_tokens", "site", "metric", "direction", "method",
                 "layers", "positions", "matrix", "clean_value", "corrupt_value", "seconds", "mechscope_version")


def _version() -> str:
    from .. import __version__

    return __version__


@dataclass
class PatchResult:
    """A layers x positions (x heads for `z`) matrix of patched metric values, with everything needed to read it.

    matrix[i][j]: the metric of the patched run when layer `layers[i]` at position `positions[j]` (head j for z) is
    patched (denoise: clean activation into the corrupted run; noise: corrupted into the clean run).
    """
    model: str
    clean: Union[str, list]
    corrupt: Union[str, list]
    tokens: list                 # [{index, id, text}] of the clean prompt
    metric_tokens: list          # [{role, text, id}]
    site: str
    metric: str
    direction: str
    method: str
    layers: list
    positions: list              # columns (position sites) or the patched positions (z)
    matrix: list
    clean_value: float
    corrupt_value: float
    seconds: float
    mechscope_version: str = field(default_factory=_version)
    corrupt_tokens: list = field(default_factory=list)   # [{index, id, text}] of the corrupted prompt
    columns: list = field(default_factory=list)          # column labels: positions, or heads for z
    clean_top: list = field(default_factory=list)        # top-20 next tokens [{rank, id, text, prob}]
    corrupt_top: list = field(default_factory=list)
    verify: list = field(default_factory=list)           # [{layer, column, attribution, exact}]
    verify_correlation: Optional[float] = None
    command: str = ""
    pairs: list = field(default_factory=list)            # per-pair results of a spec (the mean's components)

    @property
    def column_kind(self) -> str:
        return "head" if self.site == "z" else "position"

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.matrix, dtype=torch.float32)

    def to_json(self) -> dict:
        """The result.json object: exactly the documented fields."""
        return {k: getattr(self, k) for k in RESULT_FIELDS}

    def column_label(self, j: int) -> str:
        c = self.columns[j]
        if self.site == "z":
            return f"H{c}"
        tok = self.tokens[c]["text"] if c < len(self.tokens) else ""
        if self.corrupt_tokens and c < len(self.corrupt_tokens) and self.corrupt_tokens[c]["id"] != self.tokens[c]["id"]:
            tok = f"{tok}/{self.corrupt_tokens[c]['text']}"
        return f"{c}: {tok}"

    def to_csv(self) -> str:
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["layer", self.column_kind, "token", "value"])
        for i, L in enumerate(self.layers):
            for j, c in enumerate(self.columns):
                tok = "" if self.site == "z" else self.tokens[c]["text"]
                w.writerow([L, c, tok, repr(float(self.matrix[i][j]))])
        return buf.getvalue()

    def plot(self, path=None, ax=None):
        from .plot import heatmap

        return heatmap(self, path=path, ax=ax)

    def save(self, out_dir, command: Optional[str] = None):
        from .report import write_outputs

        if command:
            self.command = command
        return write_outputs(self, out_dir)


def _tok_rows(model, ids) -> list:
    return [{"index": i, "id": int(t), "text": model.tokenizer.decode([int(t)])} for i, t in enumerate(ids)]


def top_tokens(model, logits: torch.Tensor, k: int = 20) -> list:
    probs = torch.softmax(logits.float(), -1)
    p, idx = probs.topk(k)
    return [{"rank": r + 1, "id": int(i), "text": model.tokenizer.decode([int(i)]), "prob": float(v)}
            for r, (v, i) in enumerate(zip(p.tolist(), idx.tolist()))]


def command_for(model_name: str, clean: str = None, corrupt: str = None, tokens=(), site=None, metric=None,
                direction=None, method=None, layers=None, positions=None, verify_top=0, out="out/patching",
                spec: str = None, dtype: str = None, device: str = None) -> str:
    """The `mechscope patch` command line that reproduces a sweep (options at their defaults are left out)."""
    parts = ["mechscope", "patch"]
    if model_name and model_name not in ("default", "SmolLM2-135M-Instruct"):
        parts += ["--model", model_name]
    if spec:
        parts += ["--spec", str(spec)]
    else:
        parts += ["--clean", clean, "--corrupt", corrupt, "--tokens", *[str(t) for t in tokens]]
    for flag, value, default in (("--site", site, "resid_post"), ("--metric", metric, "logit_diff"),
                                 ("--direction", direction, "denoise"), ("--method", method, "exact"),
                                 ("--dtype", dtype, "auto"), ("--device", device, "auto")):
        if value is not None and value != default:
            parts += [flag, value]
    for flag, value in (("--layers", layers), ("--positions", positions)):
        if value is not None and value != "":
            parts += [flag, value if isinstance(value, str) else ",".join(map(str, value))]
    if verify_top:
        parts += ["--verify-top", str(verify_top)]
    return shlex.join(parts + ["--out", str(out)])


def sweep(model, clean: str, corrupt: str, tokens: Sequence[Union[str, int]], site: str = "resid_post",
          metric: str = "logit_diff", direction: str = "denoise", method: str = "exact",
          layers: Optional[Union[str, Sequence[int]]] = None, positions: Optional[Union[str, Sequence[int]]] = None,
          verify_top: int = 0, max_batch: Optional[int] = None) -> PatchResult:
    """Patch every (layer, position) (or (layer, head) for site='z') and record the metric of the patched run.

    tokens:     (A, B) answer tokens (text with its leading space, or ids); B may be omitted for logprob/prob/kl.
    site:       resid_pre, resid_mid, resid_post, attn_out, mlp_out (layers x positions) or z (layers x heads; with
                positions=None every position of the head is patched at once, with positions=[p] only position p).
    metric:     logit_diff, logprob, prob, kl, normalized (see mechscope.patching.metrics).
    direction:  denoise (clean activations into the corrupted run) or noise (corrupted into the clean run).
    method:     exact, or attribution (linear approximation; verify_top=K re-runs the K strongest cells exactly).
    layers, positions: subsets ('0-5,8' or lists; negative counts from the end); default all.
    """
    t0 = time.perf_counter()
    model.require_lm_head("Activation patching (its metrics read the next-token logits)")
    validate.check_choice("--metric", metric, ("logit_diff", "logprob", "prob", "kl", "normalized"))
    validate.check_choice("--direction", direction, validate.DIRECTIONS)
    validate.check_choice("--method", method, validate.METHODS)
    validate.check_site(model, site)
    tokens = list(tokens) if not isinstance(tokens, str) else [tokens]
    if not 1 <= len(tokens) <= 2:
        raise MechscopeError(f"--tokens takes A and B (two tokens), got {len(tokens)}.")
    if metric in ("logit_diff", "normalized") and len(tokens) != 2:
        raise MechscopeError(f"Metric {metric!r} needs two tokens: --tokens A B.")
    clean_ids, corrupt_ids = validate.check_pair(model, clean, corrupt)
    ids = [validate.check_token(model, t, role) for t, role in zip(tokens, "AB")]
    T, n_layers = len(clean_ids), model.cfg.n_layers
    layer_list = validate.parse_index_list(layers, n_layers, "layers") or list(range(n_layers))
    pos_list = validate.parse_index_list(positions, T, "positions")
    if site == "z":
        cols, z_positions = list(range(model.cfg.n_heads)), pos_list
    else:
        cols, z_positions = pos_list or list(range(T)), None
    if verify_top < 0:
        raise MechscopeError("--verify-top must be 0 or more.")

    base_ids, src_ids = (corrupt_ids, clean_ids) if direction == "denoise" else (clean_ids, corrupt_ids)
    src = record(model, src_ids, site, layer_list)

    def metric_for(base_logits):
        clean_l, corrupt_l = (src.logits, base_logits) if direction == "denoise" else (base_logits, src.logits)
        return make_metric(metric, ids[0], ids[1] if len(ids) > 1 else None, clean_l, corrupt_l)

    verify, corr = [], None
    if method == "exact":
        base = record(model, base_ids, site, layer_list, blocks=True)
        met = metric_for(base.logits)
        cells = [Cell(L, c) for L in layer_list for c in cols]
        vals = exact_cells(model, site, cells, base, src, met, z_positions, max_batch).view(len(layer_list), len(cols))
    else:  # two forwards (src above, base with its graph here) and one backward
        vals, base_value, met = attribution_cells(model, site, layer_list, cols, base_ids, src, metric_for, z_positions)
        if verify_top:
            base = record(model, base_ids, site, layer_list, blocks=True)
            picked = top_cells(vals, layer_list, cols, base_value, verify_top)
            exact = exact_cells(model, site, [p[0] for p in picked], base, src, met, z_positions, max_batch)
            for (cell, i, j), e in zip(picked, exact.tolist()):
                verify.append({"layer": cell.layer, "column": cell.col, "attribution": float(vals[i, j]),
                               "exact": float(e)})
            corr = pearson([v["attribution"] for v in verify], [v["exact"] for v in verify])
    clean_logits, corrupt_logits = met.clean_logits, met.corrupt_logits
    seconds = time.perf_counter() - t0
    return PatchResult(
        model=model.name, clean=clean, corrupt=corrupt, tokens=_tok_rows(model, clean_ids),
        metric_tokens=[{"role": r, "text": model.tokenizer.decode([i]), "id": i} for r, i in zip("AB", ids)],
        site=site, metric=metric, direction=direction, method=method, layers=layer_list,
        positions=(z_positions if z_positions is not None else list(range(T))) if site == "z" else cols,
        matrix=[[float(x) for x in row] for row in vals.tolist()], clean_value=met.clean_value,
        corrupt_value=met.corrupt_value, seconds=round(seconds, 4), corrupt_tokens=_tok_rows(model, corrupt_ids),
        columns=cols, clean_top=top_tokens(model, clean_logits), corrupt_top=top_tokens(model, corrupt_logits),
        verify=verify, verify_correlation=corr,
        command=command_for(model.name, clean, corrupt, tokens, site, metric, direction, method,
                            layers if isinstance(layers, str) else layer_list if layers is not None else None,
                            positions if isinstance(positions, str) else pos_list, verify_top))


def sweep_spec(model, spec: dict, **overrides) -> PatchResult:
    """Every pair of a spec (see validate.load_spec); returns the mean result with `.pairs` holding each pair's.

    Options come from `overrides` (non-None), else the spec's top level, else the defaults of `sweep`. The mean is
    taken over pairs cell by cell; it needs every pair to give the same matrix shape (same token length for
    position sites), else a MechscopeError says which pairs differ.
    """
    keys = ("site", "metric", "direction", "method", "layers", "positions", "verify_top", "max_batch")
    opts = {k: spec[k] for k in keys if k in spec}
    opts.update({k: v for k, v in overrides.items() if v is not None})
    t0 = time.perf_counter()
    results = [sweep(model, p["clean"], p["corrupt"], p["tokens"], **opts) for p in spec["pairs"]]
    return mean_result(results, seconds=time.perf_counter() - t0)


def mean_result(results: list, seconds: Optional[float] = None) -> PatchResult:
    if len(results) == 1:
        return results[0]
    shapes = {(len(r.matrix), len(r.matrix[0]) if r.matrix else 0) for r in results}
    if len(shapes) != 1:
        detail = "; ".join(f"pair {i}: {len(r.tokens)} tokens" for i, r in enumerate(results))
        raise MechscopeError(
            "The pairs of the spec give matrices of different shapes, so they cannot be averaged cell by cell ("
            f"{detail}). Use pairs of the same token length (or site z, whose columns are heads).")
    n = len(results)
    first = results[0]
    mat = torch.tensor([r.matrix for r in results], dtype=torch.float64).mean(0)
    mean = PatchResult(
        model=first.model, clean=[r.clean for r in results], corrupt=[r.corrupt for r in results],
        tokens=first.tokens, metric_tokens=[r.metric_tokens for r in results], site=first.site, metric=first.metric,
        direction=first.direction, method=first.method, layers=first.layers, positions=first.positions,
        matrix=mat.tolist(), clean_value=sum(r.clean_value for r in results) / n,
        corrupt_value=sum(r.corrupt_value for r in results) / n,
        seconds=round(seconds if seconds is not None else sum(r.seconds for r in results), 4),
        corrupt_tokens=first.corrupt_tokens, columns=first.columns, clean_top=first.clean_top,
        corrupt_top=first.corrupt_top, verify=[v for r in results for v in r.verify], pairs=results)
    if mean.verify:
        mean.verify_correlation = pearson([v["attribution"] for v in mean.verify], [v["exact"] for v in mean.verify])
    return mean
