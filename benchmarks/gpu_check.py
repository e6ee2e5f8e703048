"""The GPU check: every CUDA figure of mechscope, each against its baseline in the same run.

    bash benchmarks/gpu_check.sh             # on a machine with a CUDA GPU (under 8 minutes on one H200)
    bash benchmarks/gpu_check.sh --dry-run   # tiny sizes on the CPU, so the script never rots (a heavy test runs it)

Nothing is downloaded or installed: the model is random-init from Llama-3.2-1B's real config (bf16) with the
character-level tokenizer of `mechscope.tiny`, and the corpus is generated text. Measured:

  1. extraction tokens/s at blocks.8.hook_mlp_out: `mechscope.extract` vs the seed-style loop (batches of 4 texts
     padded to max_length, the full forward with a hook on layers[8].mlp, every padded output copied to the host),
     and vs the matmul-bound limit = the measured bf16 matmul peak / matmul FLOPs per token up to layer 8;
  2. the patching sweep (exact, resid_post, every layer x position) vs one forward per cell (a plain patched
     `Model.run` each), with the largest difference between the two;
  3. SAE training tokens/s: `mechscope.sae.train` (TopK, sparse kernels, on the dataset of 1.) vs a plain dense
     PyTorch TopK SAE loop of the same sizes on data already on the GPU (no data loading: an upper bound).

Figures are printed and written as JSON to --out. Not a test: nothing is asserted about time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

SITE, LAYER = "blocks.8.hook_mlp_out", 8
# meta-llama/Llama-3.2-1B's config.json (the fields that shape the compute)
LLAMA_3_2_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
                    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, hidden_act="silu",
                    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192, "rope_type": "llama3"})
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=10, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=128, max_position_embeddings=256, tie_word_embeddings=True)
# (docs, max_length, seed-loop docs, SAE expansion, k, batch, steps) per mode
SIZES = {"gpu": dict(docs=2048, max_length=256, seed_docs=512, expansion=16, k=32, batch=4096, steps=300),
         "dry": dict(docs=24, max_length=64, seed_docs=8, expansion=4, k=8, batch=256, steps=12)}
WORDS = ("the of and to in is was for on that with as by at from this be are an which or it has have not but "
         "model layer token attention residual stream head vector sparse feature activation dataset").split()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def build_model(dry: bool):
    import transformers as tf

    import mechscope
    from mechscope.tiny import char_tokenizer

    dev = torch.device("cpu" if dry else "cuda")
    dtype = torch.float32 if dry else torch.bfloat16
    cfg = tf.LlamaConfig(bos_token_id=2, eos_token_id=3, pad_token_id=0, **(TINY if dry else LLAMA_3_2_1B))
    torch.manual_seed(0)
    with torch.device(dev):
        hf = tf.LlamaForCausalLM(cfg).to(dtype)
    hf.eval()
    name = "random Llama-3.2-1B config" if not dry else "tiny random llama"
    return mechscope.Model(hf, char_tokenizer(), name=name), cfg


def corpus(n: int, max_length: int) -> list:
    rng = random.Random(0)
    docs = []
    for _ in range(n):
        target = rng.randint(max_length // 4, 2 * max_length)  # characters = tokens with the character tokenizer
        words = []
        while sum(len(w) + 1 for w in words) < target:
            words.append(rng.choice(WORDS))
        docs.append(" ".join(words)[:target])
    return docs


def matmul_peak(dev: torch.device, dtype: torch.dtype, dry: bool) -> float:
    """Best FLOP/s of square matmuls (mean of 10 timed products after 3 warm-ups, per size)."""
    best = 0.0
    for n in ((256, 512) if dry else (4096, 8192)):
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        for _ in range(3):
            a @ b
        sync(dev)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(dev)
        best = max(best, 10 * 2 * n ** 3 / (time.perf_counter() - t))
    return best


def flops_per_token(cfg, n_layers: int, mean_ctx: float) -> float:
    """Matmul FLOPs of one token through `n_layers` blocks: q/k/v/o projections, gated MLP, causal attention."""
    d, h, kv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    dh, f = getattr(cfg, "head_dim", None) or d // h, cfg.intermediate_size
    proj = 2 * (d * h * dh + 2 * d * kv * dh + h * dh * d)
    return n_layers * (proj + 2 * 3 * d * f + 4 * h * dh * mean_ctx)


def seed_loop(model, docs: list, max_length: int) -> dict:
    """Batches of 4 padded to max_length, full forward, hook on layers[8].mlp, every padded output to the host."""
    tok, hf, dev = model.tokenizer, model.hf, model.device
    kept, real = [], 0
    h = hf.model.layers[LAYER].mlp.register_forward_hook(lambda m, i, o: kept.append(o.detach().float().cpu()))
    sync(dev)
    t = time.perf_counter()
    try:
        with torch.no_grad():
            for i in range(0, len(docs), 4):
                enc = tok(docs[i: i + 4], padding="max_length", truncation=True, max_length=max_length,
                          return_tensors="pt").to(dev)
                real += int(enc["attention_mask"].sum())
                hf(**enc)
        sync(dev)
    finally:
        h.remove()
    dt = time.perf_counter() - t
    return {"docs": len(docs), "real_tokens": real, "seconds": dt, "tokens_per_s": real / dt}


def check_extraction(model, cfg, s: dict, work: Path, dry: bool) -> tuple:
    import mechscope

    docs = corpus(s["docs"], s["max_length"])
    mechscope.extract(model, [SITE], docs[:8], work / "warm", max_length=s["max_length"], progress=False)
    sync(model.device)
    t = time.perf_counter()
    summary = mechscope.extract(model, [SITE], docs, work / "acts", max_length=s["max_length"], progress=False)
    sync(model.device)
    dt = time.perf_counter() - t
    ds = mechscope.ActivationDataset(work / "acts")
    mean_ctx = float(ds.positions.astype("float64").mean()) + 1
    seed_loop(model, docs[:4], s["max_length"])  # warm-up
    seed = seed_loop(model, docs[: s["seed_docs"]], s["max_length"])
    peak = matmul_peak(model.device, model.dtype, dry)
    per_token = flops_per_token(cfg, LAYER + 1, mean_ctx)
    ours = summary["tokens"] / dt
    fig = {"tokens": summary["tokens"], "seconds": round(dt, 3), "tokens_per_s": round(ours, 1),
           "seed_loop_tokens_per_s": round(seed["tokens_per_s"], 1), "vs_seed_loop": round(ours / seed["tokens_per_s"], 2),
           "matmul_peak_tflops": round(peak / 1e12, 2), "flops_per_token_to_layer_8": per_token,
           "matmul_bound_tokens_per_s": round(peak / per_token, 1), "fraction_of_matmul_bound": round(ours / (peak / per_token), 3)}
    print(f"extraction at {SITE}: {ours:,.0f} tokens/s ({summary['tokens']:,} tokens in {dt:.2f} s); seed-style loop "
          f"{seed['tokens_per_s']:,.0f} tokens/s -> {fig['vs_seed_loop']}x; matmul-bound limit {peak / per_token:,.0f} "
          f"tokens/s ({str(model.dtype)[6:]} matmul peak {peak / 1e12:.1f} TFLOP/s / {per_token / 1e9:.3f} GFLOP per token) -> "
          f"{fig['fraction_of_matmul_bound']:.1%} of it", flush=True)
    return fig, ds


def check_patching(model) -> dict:
    """mechscope's exact sweep against one plain patched forward per (layer, position) cell."""
    from mechscope.patching import sweep

    clean, corrupt, answers = "The cat sat on the mat.", "The dog sat on the rug.", ("m", "r")
    a, b = (model.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in answers)
    sweep(model, clean, corrupt, answers, layers="0")  # warm-up
    sync(model.device)
    t = time.perf_counter()
    res = sweep(model, clean, corrupt, answers)
    sync(model.device)
    t_exact = time.perf_counter() - t
    L = model.cfg.n_layers
    names = [f"blocks.{i}.hook_resid_post" for i in range(L)]
    sync(model.device)
    t = time.perf_counter()
    with torch.no_grad():
        _, cache = model.run([model.encode(clean)], capture=names, logits=False)
        k_ids = model.encode(corrupt)
        naive = torch.empty(L, len(k_ids), dtype=torch.float64)
        for layer in range(L):
            for p in range(len(k_ids)):
                src = cache[names[layer]][:, p]

                def put(act, src=src, p=p):
                    act = act.clone()
                    act[:, p] = src
                    return act

                logits, _ = model.run([k_ids], patch={names[layer]: put})
                naive[layer, p] = float(logits[0, -1, a].double() - logits[0, -1, b].double())
    sync(model.device)
    t_naive = time.perf_counter() - t
    exact = torch.tensor(res.matrix, dtype=torch.float64)
    diff = float((exact - naive).abs().max())
    fig = {"cells": int(naive.numel()), "exact_s": round(t_exact, 3), "naive_s": round(t_naive, 3),
           "vs_naive": round(t_naive / t_exact, 2), "max_abs_diff": diff}
    print(f"patching sweep (exact, resid_post, {L} layers x {len(k_ids)} positions = {naive.numel()} cells): "
          f"{t_exact:.3f} s; one forward per cell {t_naive:.3f} s -> {fig['vs_naive']}x; max |exact - per cell| "
          f"{diff:.3g}", flush=True)
    return fig


def dense_topk_sae(x: torch.Tensor, d_sae: int, k: int, batch: int, steps: int) -> float:
    """The baseline: a plain dense TopK SAE (encode, top-k, decode, MSE, Adam) on rows already on the device."""
    dev, d = x.device, x.shape[1]
    g = torch.Generator(device="cpu").manual_seed(0)
    W_dec = torch.nn.Parameter((torch.randn(d_sae, d, generator=g) / math.sqrt(d)).to(dev))
    W_enc = torch.nn.Parameter(W_dec.detach().T.clone())
    b_enc, b_dec = torch.nn.Parameter(torch.zeros(d_sae, device=dev)), torch.nn.Parameter(torch.zeros(d, device=dev))
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=1e-4)

    def step(i):
        xb = x[(i * batch) % (len(x) - batch):][:batch]
        pre = (xb - b_dec) @ W_enc + b_enc
        vals, idx = pre.topk(k, dim=-1)
        acts = torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        loss = (acts @ W_dec + b_dec - xb).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    sync(dev)
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(dev)
    return steps * batch / (time.perf_counter() - t)


def check_sae(ds, s: dict, work: Path, dev: torch.device) -> dict:
    import numpy as np

    import mechscope

    d_in = ds.d(SITE)
    d_sae, batch, steps = s["expansion"] * d_in, s["batch"], s["steps"]
    kw = dict(k=s["k"], d_sae=d_sae, batch_tokens=batch, device=str(dev), progress=False, checkpoint_every=10 ** 9)
    mechscope.sae.train(ds, SITE, work / "sae-warm", tokens=3 * batch, **kw)
    sync(dev)
    t = time.perf_counter()
    mechscope.sae.train(ds, SITE, work / "sae", tokens=steps * batch, **kw)
    sync(dev)
    ours = steps * batch / (time.perf_counter() - t)
    n = min(len(ds), 64 * batch)
    x = torch.from_numpy(np.ascontiguousarray(ds.read(SITE, range(n)))).to(dev)
    base = dense_topk_sae(x, d_sae, s["k"], batch, steps)
    fig = {"d_in": d_in, "d_sae": d_sae, "k": s["k"], "batch": batch, "steps": steps, "tokens_per_s": round(ours, 1),
           "dense_loop_tokens_per_s": round(base, 1), "vs_dense_loop": round(ours / base, 2)}
    print(f"SAE training (TopK {d_in} -> {d_sae}, k={s['k']}, batch {batch}, {steps} steps, data read from the "
          f"dataset): {ours:,.0f} tokens/s; plain dense TopK loop on device-resident rows {base:,.0f} tokens/s -> "
          f"{fig['vs_dense_loop']}x", flush=True)
    return fig


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script, measures nothing)")
    ap.add_argument("--out", default="out/gpu_check/results.json", help="where the figures go (JSON)")
    args = ap.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_check: this PyTorch sees no CUDA GPU. Use --dry-run to check the script on the CPU.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    s = SIZES["dry" if dry else "gpu"]
    model, cfg = build_model(dry)
    dev = model.device
    head = {"mode": "dry-run (CPU, tiny sizes: the figures mean nothing)" if dry else "gpu",
            "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "dtype": str(model.dtype).replace("torch.", ""), "model": model.name,
            "python": platform.python_version()}
    print("gpu_check: " + ", ".join(f"{k} {v}" for k, v in head.items()), flush=True)
    work = Path(tempfile.mkdtemp(prefix="mechscope-gpu-check-"))
    try:
        extraction, ds = check_extraction(model, cfg, s, work, dry)
        patching = check_patching(model)
        sae = check_sae(ds, s, work, dev)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {**head, "extraction": extraction, "patching": patching, "sae": sae,
              "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gpu_check: done in {result['seconds']} s; figures in {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
