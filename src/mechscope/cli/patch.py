"""Activation patching sweep: which layer and position carry the answer.

\b
Runs the corrupted prompt with one activation at a time replaced by the clean run's (denoise; --direction noise does
the reverse) and records a metric of the last position's next-token prediction. Writes to --out: result.json,
result.csv, heatmap.png and report.html (self-contained; hover a cell for its value).

\b
Example (the classic name-swap experiment on the embedded model):
  mechscope patch --clean "Michelle Jones was a top-notch student. Michelle" \\
      --corrupt "Michelle Smith was a top-notch student. Michelle" --answers " Smith" " Jones" --out out/patching

\b
Kinds (--kind): resid_pre, resid_mid, resid_post, attn_out, mlp_out (layers x positions); z (layers x heads, every
position at once, or one position with --positions P). Metrics: logit_diff = logit(A) - logit(B); logprob / prob of A;
kl = KL(clean || patched); normalized = (patched - corrupted) / (clean - corrupted) of the logit difference.
--spec pairs.yaml runs several pairs (keys: pairs: [{clean, corrupt, answers: [A, B]}], optional kind, metric, ...),
all checked before any runs, and reports each pair (under pairs/NN/, saved as it finishes) and their mean.
--method attribution is the linear approximation (two forwards, one backward); --verify-top K re-runs its K
strongest cells exactly (--verify-top all: every cell). An existing result in --out is kept unless --overwrite.
Manual: docs/patching.md.
"""
from __future__ import annotations

import warnings

import click

from ..errors import ConfigError
from ..indices import parse_index_list
from ..tokens import require_text
from . import common


@click.command("patch", help=__doc__)
@click.option("--clean", help="The clean prompt (whose activations are patched in when denoising).")
@click.option("--corrupt", help="The corrupted prompt, same number of tokens as --clean.")
@click.option("--answers", "--tokens", "answers", nargs=2, type=str, default=None,
              help="Answer tokens A B (with their leading space, e.g. \" Smith\" \" Jones\"); --tokens: old name.")
@click.option("--kind", "--site", "kind", default=None,
              help="resid_pre | resid_mid | resid_post | attn_out | mlp_out | z [default: resid_post]; --site: old "
                   "name.")
@click.option("--metric", default=None, help="logit_diff | logprob | prob | kl | normalized [default: logit_diff]")
@click.option("--direction", default=None, help="denoise | noise [default: denoise]")
@click.option("--method", default=None, help="exact | attribution [default: exact]")
@click.option("--verify-top", "verify_top", default=None,
              help="With --method attribution: re-run the K strongest cells exactly, or 'all' cells.")
@click.option("--layers", default=None, help="Layers to patch, e.g. '0-5,8' or '-1' [default: all].")
@click.option("--positions", default=None,
              help="Positions to patch, e.g. '3,10' [default: all]; for --kind z the position(s) patched per head.")
@click.option("--spec", "spec_path", default=None, type=click.Path(),
              help="YAML file with several prompt pairs (see above).")
@click.option("--max-batch", type=int, default=None, help="Patched variants run together (default: memory budget).")
@click.option("--out", "out_dir", default="out/patching", show_default=True, help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier result in --out.")
@common.model_options
@common.json_option
def patch_cmd(clean, corrupt, answers, kind, metric, direction, method, verify_top, layers, positions, spec_path,
              max_batch, out_dir, overwrite, model_name, dtype, device, as_json):
    from ..patching import load_spec, save_result, sweep, sweep_spec
    from ..patching.experiment import command_for
    from ..patching.report import check_out_dir, save_pair

    spec = _check_args(clean, corrupt, answers, kind, metric, direction, method, verify_top, layers, positions,
                       spec_path, max_batch, load_spec)
    check_out_dir(out_dir, overwrite)
    model = common.load_model(spec.get("model", model_name) if spec and model_name == "default" else model_name,
                              dtype, device)
    opts = dict(kind=kind, metric=metric, direction=direction, method=method, layers=layers, positions=positions,
                verify_top=verify_top, max_batch=max_batch)
    with warnings.catch_warnings():  # the result's warnings are printed below, once
        warnings.simplefilter("ignore", UserWarning)
        if spec is not None:
            res = sweep_spec(model, spec, on_pair=lambda i, r: save_pair(r, out_dir, i), **opts)
        else:
            res = sweep(model, clean, corrupt, answers, **{k: v for k, v in opts.items() if v is not None})
    res.command = command_for(model_name, clean, corrupt, answers or (), kind, metric, direction, method, layers,
                              positions, verify_top, out_dir, spec=spec_path, dtype=dtype, device=device)
    paths = save_result(res, out_dir, overwrite=True)  # --out was checked before the model loaded
    for note in res.warnings:
        click.echo(f"Warning: {note}", err=True)
    if as_json:
        data = res.to_json()
        if res.verify:
            data = dict(data, verify={"correlation": res.verify_correlation, "covers": res.verify_scope,
                                      "cells": res.verify})
        common.emit_json(data)
        return
    _print(res, paths)


def _check_args(clean, corrupt, answers, kind, metric, direction, method, verify_top, layers, positions, spec_path,
                max_batch, load_spec):
    """Every check that needs no model, before it loads; returns the spec (or None)."""
    from ..patching import validate
    from ..patching.experiment import _verify_top
    from ..patching.metrics import METRICS

    if spec_path:
        if clean is not None or corrupt is not None or answers:
            raise ConfigError("Give either --spec or --clean/--corrupt/--answers, not both.", "spec")
        spec = load_spec(spec_path)
    else:
        missing = [n for n, v in (("--clean", clean), ("--corrupt", corrupt), ("--answers", answers)) if v is None]
        if missing:
            raise ConfigError(f"Missing {', '.join(missing)}: give --clean TEXT --corrupt TEXT --answers A B, or "
                              "--spec pairs.yaml.", missing[0].lstrip("-"))
        require_text("--clean", clean)
        require_text("--corrupt", corrupt)
        spec = None
    for flag, value, choices in (("--kind", kind, validate.KINDS), ("--metric", metric, METRICS),
                                 ("--direction", direction, validate.DIRECTIONS),
                                 ("--method", method, validate.METHODS)):
        if value is not None:
            validate.check_choice(flag, value, choices)
    if _verify_top(verify_top) and (method or (spec or {}).get("method")) != "attribution":
        raise ConfigError("--verify-top checks attribution patching: use it with --method attribution.",
                          "verify_top")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"--max-batch {max_batch} is not valid: give 1 or more (or leave it out).", "max_batch")
    for flag, value in (("--layers", layers), ("--positions", positions)):
        parse_index_list(value, 10 ** 9, flag)  # syntax and reversed ranges; the bounds need the model
    return spec


def _print(res, paths) -> None:
    from ..tokens import show_token as show

    con, line = common.console(), common.line  # header lines verbatim (never wrapped), tables through rich
    cleans = res.clean if isinstance(res.clean, list) else [res.clean]
    corrupts = res.corrupt if isinstance(res.corrupt, list) else [res.corrupt]
    line(f"model    {res.model}")
    for c, k in zip(cleans, corrupts):
        line(f"clean    {c!r}\ncorrupt  {k!r}")
    mt = res.first_answers()
    line("answers  " + ", ".join(f"{t['role']}={t['token']!r} (id {t['id']})" for t in mt))
    line(f"kind     {res.kind} ({res.direction}, {res.method}); metric {res.metric}: clean "
         f"{res.clean_value:.4f}, corrupted {res.corrupt_value:.4f}; {res.seconds:.2f} s")
    from rich.table import Table

    line(f"{res.metric} after patching (rows: layers, columns: {res.column_kind}s)")
    t = Table(show_lines=False)
    t.add_column("layer", justify="right")
    for j in range(len(res.columns)):
        c = res.columns[j]
        t.add_column(f"{c}\n{show(res.tokens[c]['token'])}" if res.kind != "z" else res.column_label(j),
                     justify="right")
    for L, row in zip(res.layers, res.matrix):
        t.add_row(str(L), *[f"{x:.2f}" for x in row])
    con.print(t)
    if res.verify:
        line(f"attribution vs exact: correlation "
             f"{'n/a' if res.verify_correlation is None else f'{res.verify_correlation:.4f}'} over {res.verify_scope}")
        v = Table()
        for col in ("layer", res.column_kind, "attribution", "exact"):
            v.add_column(col, justify="right")
        for r in res.verify:
            v.add_row(str(r["layer"]), str(r["column"]), f"{r['attribution']:.4f}", f"{r['exact']:.4f}")
        con.print(v)
    for name, p in paths.items():
        line(f"wrote {p}")
    if res.pairs:
        folder = paths["result.json"].parent / "pairs"
        line(f"wrote each pair's files under {folder}/00 .. {len(res.pairs) - 1:02d}")
