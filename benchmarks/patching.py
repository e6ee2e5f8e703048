"""Benchmark: the seed's activation-patching sweep on the embedded model, three ways, in one run.

    python benchmarks/patching.py [--device cpu|cuda] [--dtype fp32] [--threads N] [--naive-cells N] [--repeat R]

Sweep: "Michelle Jones was a top-notch student. Michelle" (clean) / "Michelle Smith was a top-notch student. Michelle"
(corrupted), metric logit(' Smith') - logit(' Jones'), kind resid_post, all 30 layers x all 11 positions (330 cells).

  exact        mechscope.patching.sweep(method="exact"): batched variants from the patched layer on
  naive        one plain Model.run (full HF forward + one patch hook) per cell, as TransformerLens' patching.py does
  attribution  mechscope.patching.sweep(method="attribution"): two forwards and one backward

Each timing includes everything the method needs (the clean/corrupted forwards, the metric). The naive loop runs
every cell unless --naive-cells N is given (then N evenly spread cells are timed and the time is scaled to all
cells; the output says so). The exact values are checked against the naive loop's (max |difference|).
Not a test: nothing is asserted about time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

CLEAN = "Michelle Jones was a top-notch student. Michelle"
CORRUPT = "Michelle Smith was a top-notch student. Michelle"
TOKENS = (" Smith", " Jones")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--naive-cells", type=int, default=0, help="time only N cells of the naive loop and scale")
    ap.add_argument("--repeat", type=int, default=1, help="best of R for exact and attribution")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--clean", default=CLEAN, help="another clean prompt (default: the seed's)")
    ap.add_argument("--corrupt", default=CORRUPT)
    ap.add_argument("--tokens", nargs=2, default=TOKENS)
    ap.add_argument("--json", dest="json_out", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    import mechscope
    from mechscope.patching import Cell, make_metric, naive_cells, record, sweep

    model = mechscope.load(dtype=args.dtype, device=args.device)
    sync = (lambda: torch.cuda.synchronize()) if model.device.type == "cuda" else (lambda: None)
    clean, corrupt, tokens = args.clean, args.corrupt, tuple(args.tokens)
    kw = dict(answers=tokens, kind="resid_post", metric="logit_diff")
    sweep(model, clean, corrupt, layers="0", **kw)  # warm-up (allocator, kernels)

    def best(fn):
        times, out = [], None
        for _ in range(args.repeat):
            sync()
            t = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_exact, exact = best(lambda: sweep(model, clean, corrupt, method="exact", **kw))
    t_attr, attr = best(lambda: sweep(model, clean, corrupt, method="attribution", **kw))

    n_layers, T = len(exact.layers), len(exact.positions)
    cells = [Cell(L, p) for L in range(n_layers) for p in range(T)]
    if args.naive_cells and args.naive_cells < len(cells):
        step = len(cells) / args.naive_cells
        timed = [cells[int(i * step)] for i in range(args.naive_cells)]
    else:
        timed = cells
    sync()
    t = time.perf_counter()
    c_ids, k_ids = model.encode(clean), model.encode(corrupt)
    base = record(model, k_ids, "resid_post", range(n_layers))
    src = record(model, c_ids, "resid_post", range(n_layers))
    a, b = (model.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in tokens)
    met = make_metric("logit_diff", a, b, src.logits, base.logits)
    naive = naive_cells(model, "resid_post", timed, base, src, met)
    sync()
    t_naive = (time.perf_counter() - t) * len(cells) / len(timed)
    ex = torch.tensor(exact.matrix).flatten()
    idx = torch.tensor([c.layer * T + c.col for c in timed])
    max_diff = float((ex[idx] - naive.float()).abs().max())
    at = torch.tensor(attr.matrix).flatten()
    corr = float(torch.corrcoef(torch.stack([at - attr.corrupt_value, ex - exact.corrupt_value]))[0, 1])

    fig = {
        "device": str(model.device), "dtype": str(model.dtype).replace("torch.", ""),
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "cells": len(cells), "exact_s": round(t_exact, 3), "naive_s": round(t_naive, 3),
        "naive_cells_timed": len(timed), "attribution_s": round(t_attr, 3),
        "exact_vs_naive_speedup": round(t_naive / t_exact, 2), "attribution_vs_exact_speedup": round(t_exact / t_attr, 2),
        "max_abs_diff_exact_vs_naive": max_diff, "attribution_exact_correlation": round(corr, 4),
    }
    print(f"model {model.name} on {fig['device']} ({fig['dtype']}, {fig['cpu_threads']} CPU threads), "
          f"{len(cells)} cells ({n_layers} layers x {T} positions), resid_post, logit_diff")
    print(f"  exact        {t_exact:9.2f} s")
    print(f"  naive loop   {t_naive:9.2f} s" + ("" if len(timed) == len(cells) else
                                                 f"  (scaled from {len(timed)} timed cells)"))
    print(f"  attribution  {t_attr:9.2f} s")
    print(f"  exact vs naive: {fig['exact_vs_naive_speedup']}x (goal >= 10x); attribution vs exact: "
          f"{fig['attribution_vs_exact_speedup']}x (goal >= 50x)")
    print(f"  max |exact - naive| = {max_diff:.2e}; correlation(attribution, exact) = {corr:.4f}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(fig, f, indent=2)


if __name__ == "__main__":
    main()
