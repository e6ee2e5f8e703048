"""`sweep(model, clean, corrupt, answers=(A, B), kind="resid_post", ...)`: an activation-patching sweep.

Everything is checked before the first forward (`prepare`): the prompts, the answers, the kind, the index lists;
`sweep_spec` prepares every pair of a spec before it runs any of them.
"""
from __future__ import annotations

import shlex
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from ..errors import ConfigError, MechscopeError
from ..indices import parse_index_list
from ..next_token import top_tokens  # noqa: F401  (the top-k row schema; patching.experiment.top_tokens stays)
from ..tokenization import token_rows
from ..tokens import single_token_id
from . import validate
from .attribution import attribution_cells, pearson, top_cells
from .exact import Cell, exact_cells, record
from .metrics import METRICS, make_metric
from .result import PatchResult


def command_for(model_name: str, clean: str = None, corrupt: str = None, answers=(), kind=None, metric=None,
                direction=None, method=None, layers=None, positions=None, verify_top=0, out="out/patching",
                spec: str = None, dtype: str = None, device: str = None) -> str:
    """The `mechscope patch` command line that reproduces a sweep (options at their defaults are left out)."""
    parts = ["mechscope", "patch"]
    if model_name and model_name not in ("default", "SmolLM2-135M-Instruct"):
        parts += ["--model", model_name]
    if spec:
        parts += ["--spec", str(spec)]
    else:
        parts += ["--clean", clean, "--corrupt", corrupt, "--answers", *[str(t) for t in answers]]
    for flag, value, default in (("--kind", kind, "resid_post"), ("--metric", metric, "logit_diff"),
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


@dataclass
class Prepared:
    """A sweep's inputs after every check: token ids, answer ids, rows and columns (nothing has run yet)."""
    clean_ids: list
    corrupt_ids: list
    answer_ids: list
    answers: list            # as given (text or ids)
    layers: list
    cols: list
    z_positions: Optional[list]
    verify_top: Union[int, str]


def _verify_top(value) -> Union[int, str]:
    """verify_top as given (an int, a digit string, 'all' or None) -> an int >= 0 or 'all'."""
    if value is None or value == "all":
        return value or 0
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = -1
    if k < 0 or isinstance(value, float):
        raise ConfigError(f"verify_top={value!r} is not valid: give a number of cells (0 or more) or 'all'.",
                          "verify_top")
    return k


def prepare(model, clean: str, corrupt: str, answers, kind: str = "resid_post", metric: str = "logit_diff",
            direction: str = "denoise", method: str = "exact", layers=None, positions=None,
            verify_top: Union[int, str] = 0) -> Prepared:
    """Check every input of a sweep (no forward runs); a MechscopeError names the argument at fault."""
    validate.check_choice("metric", metric, METRICS)
    validate.check_choice("direction", direction, validate.DIRECTIONS)
    validate.check_choice("method", method, validate.METHODS)
    validate.check_kind(model, kind)
    answers = [answers] if isinstance(answers, (str, int)) else list(answers or [])
    if not 1 <= len(answers) <= 2:
        raise ConfigError(f"answers takes A and B (two tokens), got {len(answers)}.", "answers")
    if metric in ("logit_diff", "normalized") and len(answers) != 2:
        raise ConfigError(f"Metric {metric!r} needs two answer tokens: answers=(A, B).", "answers")
    verify_top = _verify_top(verify_top)
    if verify_top and method != "attribution":
        raise ConfigError("verify_top checks attribution patching: use it with method='attribution'.", "verify_top")
    clean_ids, corrupt_ids = validate.check_pair(model, clean, corrupt)
    ids = [single_token_id(model.tokenizer, t, f"answer {role}", model.cfg.d_vocab, warn=False)
           for t, role in zip(answers, "AB")]
    layer_list = parse_index_list(layers, model.cfg.n_layers, "layers") or list(range(model.cfg.n_layers))
    pos_list = parse_index_list(positions, len(clean_ids), "positions")
    if kind == "z":
        cols, z_positions = list(range(model.cfg.n_heads)), pos_list
    else:
        cols, z_positions = pos_list or list(range(len(clean_ids))), None
    return Prepared(clean_ids, corrupt_ids, ids, answers, layer_list, cols, z_positions, verify_top)


def _deprecated(new, old, old_name: str, new_name: str):
    if old is None:
        return new
    warnings.warn(f"sweep({old_name}=...) is now sweep({new_name}=...)", DeprecationWarning, stacklevel=3)
    return old


def space_warnings(model, answers, ids, logits: torch.Tensor) -> list:
    """A warning for each answer given without its leading space while the spaced variant is one token too."""
    out = []
    probs = torch.softmax(logits.float(), -1)
    for text, i, role in zip(answers, ids, "AB"):
        if not isinstance(text, str) or text.startswith(" "):
            continue
        spaced = model.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        if len(spaced) == 1:
            j = int(spaced[0])
            out.append(f"Answer {role} {text!r} (id {i}, p={float(probs[i]):.4g} after the clean prompt) has no "
                       f"leading space; {' ' + text!r} (id {j}) has p={float(probs[j]):.4g}. After a word the model "
                       f"usually predicts the spaced form: pass {' ' + text!r} if that is what you meant.")
    return out


def sweep(model, clean: str, corrupt: str, answers: Sequence[Union[str, int]] = None, kind: str = "resid_post",
          metric: str = "logit_diff", direction: str = "denoise", method: str = "exact",
          layers: Optional[Union[str, Sequence[int]]] = None, positions: Optional[Union[str, Sequence[int]]] = None,
          verify_top: Union[int, str] = 0, max_batch: Optional[int] = None, *, site: Optional[str] = None,
          tokens: Optional[Sequence] = None) -> PatchResult:
    """Patch every (layer, position) (or (layer, head) for kind='z') and record the metric of the patched run.

    answers:    (A, B) answer tokens (text with its leading space, or ids); B may be omitted for logprob/prob/kl.
    kind:       resid_pre, resid_mid, resid_post, attn_out, mlp_out (layers x positions) or z (layers x heads; with
                positions=None every position of the head is patched at once, with positions=[p] only position p).
    metric:     logit_diff, logprob, prob, kl, normalized (see mechscope.patching.metrics).
    direction:  denoise (clean activations into the corrupted run) or noise (corrupted into the clean run).
    method:     exact, or attribution (a linear approximation; verify_top=K re-runs the K strongest cells exactly,
                verify_top='all' every cell).
    layers, positions: subsets ('0-5,8' or lists; negative counts from the end); default all.
    `site=` and `tokens=` are the deprecated names of `kind=` and `answers=`.
    """
    kind = _deprecated(kind, site, "site", "kind")
    answers = _deprecated(answers, tokens, "tokens", "answers")
    t0 = time.perf_counter()
    model.require_lm_head("Activation patching (its metrics read the next-token logits)")
    p = prepare(model, clean, corrupt, answers, kind, metric, direction, method, layers, positions, verify_top)
    base_ids, src_ids = (p.corrupt_ids, p.clean_ids) if direction == "denoise" else (p.clean_ids, p.corrupt_ids)
    src = record(model, src_ids, kind, p.layers)
    b = p.answer_ids[1] if len(p.answer_ids) > 1 else None

    def metric_for(base_logits):
        clean_l, corrupt_l = (src.logits, base_logits) if direction == "denoise" else (base_logits, src.logits)
        return make_metric(metric, p.answer_ids[0], b, clean_l, corrupt_l)

    cells = [Cell(L, c) for L in p.layers for c in p.cols]
    verify, corr, scope = [], None, ""
    if method == "exact":
        base = record(model, base_ids, kind, p.layers, blocks=True)
        met = metric_for(base.logits)
        vals = exact_cells(model, kind, cells, base, src, met, p.z_positions, max_batch).view(len(p.layers), -1)
    else:  # two forwards (src above, base with its graph here) and one backward
        vals, base_value, met = attribution_cells(model, kind, p.layers, p.cols, base_ids, src, metric_for,
                                                  p.z_positions)
        if p.verify_top:
            k = len(cells) if p.verify_top == "all" else min(p.verify_top, len(cells))
            base = record(model, base_ids, kind, p.layers, blocks=True)
            picked = top_cells(vals, p.layers, p.cols, base_value, k)
            exact = exact_cells(model, kind, [q[0] for q in picked], base, src, met, p.z_positions, max_batch)
            verify = [{"layer": cell.layer, "column": cell.col, "attribution": float(vals[i, j]), "exact": float(e)}
                      for (cell, i, j), e in zip(picked, exact.tolist())]
            corr = pearson([v["attribution"] for v in verify], [v["exact"] for v in verify])
            scope = (f"all {len(cells)} cells" if k == len(cells) else
                     f"the {k} verified cells only (those with the largest attribution effect), of {len(cells)}")
    notes = space_warnings(model, p.answers, p.answer_ids, met.clean_logits)
    if method == "attribution" and p.verify_top != "all" and k_less(p.verify_top, len(cells)):
        notes.append("Attribution patching is a linear approximation of the exact sweep and is least reliable in "
                     "early layers (where a patch changes everything downstream); "
                     + (f"the correlation printed covers {scope}. " if p.verify_top else "")
                     + "Check every cell with verify_top='all' (--verify-top all) or use method='exact'.")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    raw = None
    if metric == "normalized":  # keep the logit differences the normalized values were computed from
        ld = make_metric("logit_diff", p.answer_ids[0], b, met.clean_logits, met.corrupt_logits)
        lo, hi = ld.corrupt_value, ld.clean_value
        raw = {"metric": "logit_diff", "clean_value": hi, "corrupt_value": lo,
               "matrix": (lo + vals.double() * (hi - lo)).tolist()}
    return PatchResult(
        model=model.name, clean=clean, corrupt=corrupt, tokens=token_rows(model, p.clean_ids),
        answers=[{"role": r, "token": model.tokenizer.decode([i]), "id": i} for r, i in zip("AB", p.answer_ids)],
        kind=kind, metric=metric, direction=direction, method=method, layers=p.layers,
        positions=(p.z_positions if p.z_positions is not None else list(range(len(p.clean_ids))))
        if kind == "z" else p.cols,
        matrix=[[float(x) for x in row] for row in vals.tolist()], clean_value=met.clean_value,
        corrupt_value=met.corrupt_value, seconds=round(time.perf_counter() - t0, 4),
        corrupt_tokens=token_rows(model, p.corrupt_ids), columns=p.cols,
        clean_top=top_tokens(model, met.clean_logits), corrupt_top=top_tokens(model, met.corrupt_logits),
        verify=verify, verify_correlation=corr, verify_scope=scope, raw=raw, warnings=notes,
        command=command_for(model.name, clean, corrupt, p.answers, kind, metric, direction, method,
                            layers if isinstance(layers, str) else p.layers if layers is not None else None,
                            positions if isinstance(positions, str) else
                            (None if positions is None else list(positions)), p.verify_top))


def k_less(verify_top, n_cells: int) -> bool:
    """True unless the verified cells are all of them."""
    return not (isinstance(verify_top, int) and verify_top >= n_cells)


SPEC_OPTIONS = ("kind", "metric", "direction", "method", "layers", "positions", "verify_top", "max_batch")


def _spec_options(spec: dict, overrides: dict) -> dict:
    opts = {k: spec[k] for k in SPEC_OPTIONS if k in spec}
    if "site" in spec and "kind" not in spec:  # the deprecated key
        opts["kind"] = spec["site"]
    opts.update({k: v for k, v in overrides.items() if v is not None})
    return opts


def prepare_spec(model, spec: dict, **overrides) -> list:
    """Check every pair of a spec before any runs: a bad pair is named ('pair 2: ...'), and pairs whose matrices
    could not be averaged cell by cell (different token lengths for a position kind) are refused up front."""
    opts = _spec_options(spec, overrides)
    opts.pop("max_batch", None)
    prepared = []
    for i, pair in enumerate(spec["pairs"]):
        try:
            prepared.append(prepare(model, pair["clean"], pair["corrupt"], pair.get("answers", pair.get("tokens")),
                                    **opts))
        except MechscopeError as err:
            raise type(err)(f"Spec pair {i} (clean {pair['clean']!r}): {err}", err.argument) from None
    shapes = {(len(q.layers), len(q.cols)) for q in prepared}
    if len(shapes) > 1:
        detail = "; ".join(f"pair {i}: {len(q.clean_ids)} tokens" for i, q in enumerate(prepared))
        raise ConfigError(
            "The pairs of the spec would give matrices of different shapes, so their mean cannot be taken cell by "
            f"cell ({detail}). Nothing was run. Use pairs of the same token length, or kind z (columns are heads).",
            "spec")
    return prepared


def sweep_spec(model, spec: dict, on_pair: Optional[Callable[[int, PatchResult], None]] = None,
               **overrides) -> PatchResult:
    """Every pair of a spec (see validate.load_spec); returns the mean result with `.pairs` holding each pair's.

    Options come from `overrides` (non-None), else the spec's top level, else the defaults of `sweep`. All pairs
    are checked before any runs (`prepare_spec`). `on_pair(i, result)` is called as each pair finishes, so a
    caller can save it before the next one starts.
    """
    prepare_spec(model, spec, **overrides)
    opts = _spec_options(spec, overrides)
    t0 = time.perf_counter()
    results = []
    for i, pair in enumerate(spec["pairs"]):
        results.append(sweep(model, pair["clean"], pair["corrupt"], pair.get("answers", pair.get("tokens")), **opts))
        if on_pair is not None:
            on_pair(i, results[-1])
    return mean_result(results, seconds=time.perf_counter() - t0)


def mean_result(results: list, seconds: Optional[float] = None) -> PatchResult:
    """The cell-by-cell mean of same-shaped results (a spec's pairs), with `.pairs` holding them."""
    if len(results) == 1:
        return results[0]
    if len({(len(r.matrix), len(r.matrix[0]) if r.matrix else 0) for r in results}) != 1:
        detail = "; ".join(f"pair {i}: {len(r.tokens)} tokens" for i, r in enumerate(results))
        raise ConfigError(f"Results of different shapes cannot be averaged cell by cell ({detail}).", "results")
    n, first = len(results), results[0]
    mat = torch.tensor([r.matrix for r in results], dtype=torch.float64).mean(0)
    raw = None
    if all(r.raw for r in results):
        raw = {"metric": "logit_diff", "clean_value": sum(r.raw["clean_value"] for r in results) / n,
               "corrupt_value": sum(r.raw["corrupt_value"] for r in results) / n,
               "matrix": torch.tensor([r.raw["matrix"] for r in results], dtype=torch.float64).mean(0).tolist()}
    mean = PatchResult(
        model=first.model, clean=[r.clean for r in results], corrupt=[r.corrupt for r in results],
        tokens=first.tokens, answers=[r.answers for r in results], kind=first.kind, metric=first.metric,
        direction=first.direction, method=first.method, layers=first.layers, positions=first.positions,
        matrix=mat.tolist(), clean_value=sum(r.clean_value for r in results) / n,
        corrupt_value=sum(r.corrupt_value for r in results) / n,
        seconds=round(seconds if seconds is not None else sum(r.seconds for r in results), 4),
        corrupt_tokens=first.corrupt_tokens, columns=first.columns, clean_top=first.clean_top,
        corrupt_top=first.corrupt_top, verify=[v for r in results for v in r.verify], raw=raw,
        warnings=sorted({w for r in results for w in r.warnings}), pairs=results)
    if mean.verify:
        mean.verify_correlation = pearson([v["attribution"] for v in mean.verify], [v["exact"] for v in mean.verify])
        mean.verify_scope = f"the verified cells of all {n} pairs ({len(mean.verify)} cells)"
    return mean
