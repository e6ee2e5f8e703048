"""Benchmark: mechscope SAE training vs SAELens training on the same activations, in the same run.

    python benchmarks/sae.py [--tokens 1000000] [--site blocks.8.hook_mlp_out] [--k 32] [--expansion 16]
                             [--batch-tokens 4096] [--device auto] [--work /tmp/mechscope-sae-bench]

1. Activations: `mechscope.extract` on the embedded SmolLM2-135M-Instruct over English prose found on this machine
   (Vim's help files, split into paragraphs; no downloads), max_length 256, until --tokens real tokens.
2. The same rows, in the same shuffled order (mechscope's RowStream, fed unscaled to SAELens through its
   `SAETrainer(data_provider=...)`), the same number of tokens, TopK k and width, lr, warm-up and decay; both scale
   inputs to a mean norm of sqrt(d_in) (SAELens: normalize_activations="expected_average_only_in").
3. Reported: end-to-end training tokens/s of each, and FVU / L0 of each on the same held-out rows, computed by the
   same float64 accumulator (mechscope.sae.metrics). Then the mechscope SAE is exported to SAELens's format and
   loaded with `sae_lens.SAE.load_from_disk`, and its outputs are compared with ours.

SAELens is not a mechscope dependency: run this with a Python where `sae_lens` is importable (e.g. a separate venv
that sees mechscope: PYTHONPATH=src /tmp/slvenv/bin/python benchmarks/sae.py). Without it, only mechscope runs.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import mechscope
from mechscope.sae import export_saelens, import_saelens, train
from mechscope.sae.data import RowStream, split_rows
from mechscope.sae.metrics import Accumulator


def corpus(min_words: int = 12) -> list[str]:
    docs = []
    for path in sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt")) + sorted(glob.glob("/usr/share/doc/*/README*")):
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for para in text.split("\n\n"):
            para = " ".join(para.split())
            if len(para.split()) >= min_words:
                docs.append(para)
    if not docs:
        raise SystemExit("No English text found on this machine (looked in /usr/share/vim/*/doc, /usr/share/doc).")
    return docs


def extract(args, model) -> Path:
    out = Path(args.work) / f"acts-{args.tokens}"
    if (out / "manifest.json").exists():
        return out
    docs, tok = corpus(), model.tokenizer
    need, picked = 0, []
    for d in docs:
        picked.append(d)
        need += min(len(tok(d)["input_ids"]), 256)
        if need >= args.tokens:
            break
    print(f"extracting {need} tokens from {len(picked)} paragraphs ...", flush=True)
    t0 = time.perf_counter()
    mechscope.extract(model, [args.site], picked, out, max_length=256, store_dtype="fp32", progress=False,
                      device=args.device)
    print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


@torch.no_grad()
def heldout_metrics(encode, decode, ds, site, rows, device) -> dict:
    acc = None
    for a in range(rows[0], rows[1], 8192):
        x = torch.from_numpy(np.require(ds.read(site, np.arange(a, min(rows[1], a + 8192))), np.float32, ["W"]))
        x = x.to(device)
        acts = encode(x)
        acc = acc or Accumulator(acts.shape[-1])
        acc.update(x, decode(acts), acts)
    r = acc.result()
    return {k: r[k] for k in ("tokens", "fvu", "explained_variance", "l0", "dead", "dense")}


def run_saelens(args, ds, n_train, r, device):
    import sae_lens
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    d_in = ds.d(args.site)
    torch.manual_seed(args.seed)
    cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=r["d_sae"], k=args.k, device=str(device),
                                normalize_activations="expected_average_only_in")
    sae = TopKTrainingSAE(cfg)
    steps = r["steps"]
    tcfg = SAETrainerConfig(total_training_samples=steps * args.batch_tokens,
                            train_batch_size_samples=args.batch_tokens,
                            lr=r["lr"], lr_end=r["lr"] / 1000, lr_warm_up_steps=r["warmup_steps"],
                            lr_decay_steps=steps - int(steps * (1 - r["decay_fraction"])), device=str(device),
                            dead_feature_window=max(1, r["dead_tokens"] // args.batch_tokens),
                            feature_sampling_window=10 ** 9, n_batches_for_norm_estimate=16,
                            logger=LoggingConfig(log_to_wandb=False))
    stream = RowStream(ds, args.site, n_train, args.batch_tokens, args.seed, device=device)

    def provider():
        i = 0
        while True:
            yield stream.batch(i)
            i += 1

    t0 = time.perf_counter()
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=provider())
    sae = trainer.fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    stream.close()
    return sae, seconds, sae_lens.__version__


def paired(args, ds, n_train, device, rounds: int = 6, per: int = 3) -> dict:
    """Step time of both trainers, alternated in blocks of `per` steps so that both see the same machine load (this
    machine is shared): the same batches, the same SAE width, after one warm-up step each."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from mechscope.sae.data import sample_rows
    from mechscope.sae.model import SAE, SAEConfig
    from mechscope.sae.train import TrainConfig, Trainer, _resolve

    d_in = ds.d(args.site)
    steps = rounds * per + 1
    r = _resolve(TrainConfig(site=args.site, k=args.k, expansion=args.expansion, batch_tokens=args.batch_tokens,
                             tokens=steps * args.batch_tokens, sparse=not args.dense), d_in, n_train)
    sample = sample_rows(ds, args.site, n_train)
    scale = math.sqrt(d_in) / float(np.linalg.norm(sample, axis=1).mean())
    r["input_scale"] = scale
    ours = Trainer(SAE.init(SAEConfig(d_in=d_in, d_sae=r["d_sae"], k=args.k, input_scale=scale)), r,
                   RowStream(ds, args.site, n_train, args.batch_tokens, args.seed, scale=scale, device=device), device)
    raw = RowStream(ds, args.site, n_train, args.batch_tokens, args.seed, device=device)
    sl = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=r["d_sae"], k=args.k, device=str(device),
                                               normalize_activations="expected_average_only_in"))
    theirs = SAETrainer(cfg=SAETrainerConfig(total_training_samples=steps * args.batch_tokens,
                                             train_batch_size_samples=args.batch_tokens, lr=r["lr"], lr_end=r["lr"],
                                             device=str(device), logger=LoggingConfig(log_to_wandb=False)),
                        sae=sl, data_provider=iter(()))
    theirs.activation_scaler.scaling_factor = scale
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {"mechscope": 0.0, "saelens": 0.0}

    def block(name, i0, n):
        sync()
        t0 = time.perf_counter()
        for i in range(i0, i0 + n):
            if name == "mechscope":
                ours.step()
            else:
                theirs.step(raw.batch(i))
                theirs.n_training_steps += 1
        sync()
        return time.perf_counter() - t0

    block("mechscope", 0, 1), block("saelens", 0, 1)  # warm-up
    for k in range(rounds):
        for name in (("mechscope", "saelens") if k % 2 == 0 else ("saelens", "mechscope")):
            times[name] += block(name, 1 + k * per, per)
    n = rounds * per * args.batch_tokens
    ours.stream.close(), raw.close()
    return {"steps_each": rounds * per, "mechscope_tokens_per_s": n / times["mechscope"],
            "saelens_tokens_per_s": n / times["saelens"], "speedup": times["saelens"] / times["mechscope"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=1_000_000, help="activation rows to extract")
    p.add_argument("--train-tokens", type=int, default=None, help="training tokens [default: one pass]")
    p.add_argument("--site", default="blocks.8.hook_mlp_out")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--expansion", type=int, default=16)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None, help="learning rate for both [default: mechscope's default]")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", default="/tmp/mechscope-sae-bench")
    p.add_argument("--skip-saelens", action="store_true")
    p.add_argument("--dense", action="store_true", help="mechscope with dense matmuls instead of its sparse kernels")
    p.add_argument("--paired-only", action="store_true",
                   help="only the alternating step-time comparison (robust on a shared machine)")
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    Path(args.work).mkdir(parents=True, exist_ok=True)
    model = mechscope.load(None, device=str(device))
    data = extract(args, model)
    ds = mechscope.ActivationDataset(data)
    n_train, n = split_rows(ds)
    heldout = (n_train, n)
    if args.paired_only:
        out = {"data_rows": n, "site": args.site, "dense": args.dense, **paired(args, ds, n_train, device)}
        print(json.dumps(out, indent=2))
        (Path(args.work) / "paired.json").write_text(json.dumps(out, indent=2))
        return 0
    res = {"machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                       "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                       "torch": torch.__version__},
           "data": {"rows": n, "train_rows": n_train, "heldout_rows": n - n_train, "site": args.site,
                    "d_in": ds.d(args.site)}}

    out = Path(args.work) / f"sae-mechscope-{os.getpid()}"
    t0 = time.perf_counter()
    ours = train(data, args.site, out, k=args.k, expansion=args.expansion, batch_tokens=args.batch_tokens,
                 tokens=args.train_tokens, seed=args.seed, device=str(device), progress=False, sparse=not args.dense,
                 lr=args.lr)
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    r = ours.cfg.extra["train"]
    res["settings"] = {k: r[k] for k in ("arch", "k", "d_sae", "batch_tokens", "tokens", "steps", "lr", "warmup_steps",
                                         "decay_fraction", "dead_tokens")}
    res["mechscope"] = {"seconds": secs, "tokens_per_s": r["tokens"] / secs,
                        "loop_tokens_per_s": ours.cfg.extra["result"]["tokens_per_s_this_session"],
                        **heldout_metrics(ours.encode, ours.decode, ds, args.site, heldout, device)}
    print(json.dumps(res, indent=2), flush=True)

    if not args.skip_saelens:
        try:
            import sae_lens  # noqa: F401
        except ImportError:
            res["saelens"] = "sae_lens is not importable in this Python: not measured"
        else:
            sl, secs, version = run_saelens(args, ds, n_train, r, device)
            sl.eval()
            res["saelens"] = {"version": version, "seconds": secs, "tokens_per_s": r["tokens"] / secs,
                              **heldout_metrics(sl.encode, sl.decode, ds, args.site, heldout, device)}
            res["speedup"] = res["mechscope"]["tokens_per_s"] / res["saelens"]["tokens_per_s"]
            # the SAELens-trained SAE, saved by SAELens, imported here
            sl_dir = Path(args.work) / f"sae-saelens-{os.getpid()}"
            sl.save_inference_model(str(sl_dir))
            imported = import_saelens(sl_dir).to(device)
            xs = torch.from_numpy(np.require(ds.read(args.site, np.arange(n_train, min(n, n_train + 2048))),
                                             np.float32, ["W"])).to(device)
            with torch.no_grad():
                d_imp = (imported(xs) - sl(xs)).abs().max().item()
            res["saelens_sae_imported_here"] = {"max_abs_diff": d_imp, "relative": d_imp / xs.abs().max().item()}
            # our export, loaded by SAELens itself
            exp = export_saelens(ours, Path(args.work) / f"sae-export-{os.getpid()}")
            from sae_lens import SAE as SLSAE

            loaded = SLSAE.load_from_disk(str(exp), device=str(device))
            x = torch.from_numpy(np.require(ds.read(args.site, np.arange(n_train, min(n, n_train + 2048))),
                                            np.float32, ["W"])).to(device)
            with torch.no_grad():
                diff = (loaded(x) - ours.to(device)(x)).abs().max().item()
            res["export_loaded_by_saelens"] = {"architecture": type(loaded).__name__, "max_abs_diff": diff,
                                               "relative": diff / x.abs().max().item()}
    print(json.dumps(res, indent=2))
    name = "results.json" if args.lr is None else f"results-lr{args.lr:g}.json"
    (Path(args.work) / name).write_text(json.dumps(res, indent=2))
    m, s = res["mechscope"], res.get("saelens")
    print("\n| | tokens/s | FVU (held-out) | L0 |\n|---|---|---|---|")
    print(f"| mechscope | {m['tokens_per_s']:.0f} | {m['fvu']:.4f} | {m['l0']:.1f} |")
    if isinstance(s, dict):
        print(f"| SAELens {s['version']} | {s['tokens_per_s']:.0f} | {s['fvu']:.4f} | {s['l0']:.1f} |")
        print(f"\nspeed-up {res['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
