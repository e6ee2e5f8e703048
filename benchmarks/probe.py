"""Benchmark: the probe sweep's feature capture (every site of every layer in one forward per batch) against a
per-layer loop (one full forward per layer per batch, capturing that layer's sites), in one run.

    python benchmarks/probe.py [--model PATH_OR_NAME] [--n 1000] [--batch-size 32] [--threads N] [--fit]

Data: `mechscope.data.make_sentiment_data(n, seed=0)`. Sites resid_post, attn_out, mlp_out of every layer, mean
pooling. Both sides pool the same way and are checked equal (max |difference|). With --fit, the probe fits
(logistic CV + control + difference of means, on the captured features) are timed too: they are the same work for
both ways of capturing, so they are reported separately. Not a test: nothing is asserted about time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def per_layer_loop(model, texts, kinds, pool, batch_size, max_length):
    """The notebook way: for each layer, a full forward per batch with hooks on that layer's sites."""
    from mechscope.encoders.probe import pool_tokens, tokenize
    from mechscope.sites import short_name

    rows, _ = tokenize(model, texts, max_length)
    out, forwards = {}, 0
    for layer in range(model.cfg.n_layers):
        names = [short_name(k, layer) for k in kinds]
        parts = {n: [] for n in names}
        for start in range(0, len(rows), batch_size):
            _, cache = model.run(rows[start:start + batch_size], capture=names, logits=True)
            forwards += 1
            last = cache.last_positions()
            for n in names:
                parts[n].append(pool_tokens(cache[n].float(), cache.attention_mask, pool, last))
        out.update({n: torch.cat(v).numpy() for n, v in parts.items()})
    return out, forwards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fit", action="store_true", help="also time the probe fits on the captured features")
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    import mechscope
    from mechscope.data import make_sentiment_data
    from mechscope.encoders.probe import DEFAULT_SITES, pooled_features
    from mechscope.sites import short_name

    model = mechscope.load(args.model, device=args.device)
    texts = [r["text"] for r in make_sentiment_data(n=args.n, seed=0)]
    kinds = list(DEFAULT_SITES)
    names = [short_name(k, layer) for layer in range(model.cfg.n_layers) for k in kinds]
    pooled_features(model, texts[:args.batch_size], names, "mean", args.batch_size, args.max_length)  # warm-up
    t0 = time.perf_counter()
    ours, info = pooled_features(model, texts, names, "mean", args.batch_size, args.max_length)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop, loop_forwards = per_layer_loop(model, texts, kinds, "mean", args.batch_size, args.max_length)
    t_loop = time.perf_counter() - t0
    diff = max(float(np.abs(ours[n] - loop[n]).max()) for n in names)
    res = {"model": model.name, "n_texts": len(texts), "layers": model.cfg.n_layers, "sites": kinds,
           "batch_size": args.batch_size, "tokens": info["tokens"], "device": str(model.device),
           "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "one_forward_per_batch": {"seconds": t_ours, "forwards": info["forwards"]},
           "per_layer_loop": {"seconds": t_loop, "forwards": loop_forwards},
           "speedup": t_loop / t_ours, "max_abs_diff": diff}
    if args.fit:
        from mechscope.encoders.probe import control_labels, fit_logistic, mean_diff_accuracy, split_indices

        rows = make_sentiment_data(n=args.n, seed=0)
        y = np.array([r["label"] == "positive" for r in rows], dtype=int)
        tr, te = split_indices(y, 0.2, 0, [r["split"] for r in rows])
        yc = control_labels(texts, 2, 0)
        t0 = time.perf_counter()
        for n in names:
            fit_logistic(ours[n][tr], y[tr], ours[n][te], y[te])
            fit_logistic(ours[n][tr], yc[tr], ours[n][te], yc[te])
            mean_diff_accuracy(ours[n][tr], y[tr], ours[n][te], y[te])
        res["fits_seconds"] = time.perf_counter() - t0
    print(json.dumps(res, indent=2))
    print(f"capture: one forward per batch {t_ours:.2f} s ({info['forwards']} forwards) vs per-layer loop "
          f"{t_loop:.2f} s ({loop_forwards} forwards): {t_loop / t_ours:.2f}x; max |diff| {diff:.2e}")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
