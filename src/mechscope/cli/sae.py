"""`mechscope sae`: train, evaluate, inspect and convert sparse autoencoders."""
from __future__ import annotations

import warnings
from pathlib import Path

import click

from ..errors import MechscopeError
from .common import emit_json, json_option


@click.group("sae")
def sae_group():
    """Sparse autoencoders on an activation dataset written by `mechscope extract`.

    \b
    mechscope sae train    --data ACTS --site blocks.8.hook_mlp_out --out SAE [--arch topk --k 32 --expansion 16]
    mechscope sae eval     --sae SAE --data ACTS            (FVU, L0, dead/dense latents, splice test, report.html)
    mechscope sae features --sae SAE --data ACTS --latents 0-99 --out DIR      (features.html)
    mechscope sae export   SAE --out DIR                     (SAELens format)
    mechscope sae import   DIR --out SAE                     (from SAELens format)

    eval and features take --model, --dtype and --device (the model: the dataset's unless given); train takes
    --device; every subcommand takes --json. Manual: docs/sae.md.
    """


@sae_group.command("train")
@click.option("--data", required=True, type=click.Path(), help="Activation dataset folder (mechscope extract --out).")
@click.option("--site", default=None, help="Site to train on (default: the dataset's only site).")
@click.option("--out", required=True, type=click.Path(), help="Folder for the SAE (weights, config, checkpoints).")
@click.option("--arch", type=click.Choice(["topk", "batchtopk", "relu"]), default="topk", show_default=True)
@click.option("--k", default=32, show_default=True, help="Active latents per token (topk, batchtopk).")
@click.option("--expansion", default=16, show_default=True, help="Latents = expansion x d_in.")
@click.option("--d-sae", type=int, default=None, help="Number of latents (overrides --expansion).")
@click.option("--l1", default=5.0, show_default=True, help="L1 coefficient (relu only).")
@click.option("--l1-warmup-steps", "--l1-warmup", "l1_warmup_steps", type=int, default=None,
              help="Relu only: steps over which the L1 coefficient rises linearly from ~0 to --l1; 0 = none "
                   "[default: 20% of steps].")
@click.option("--lr", type=float, default=None, help="Learning rate [default: 2e-4*sqrt(16384/d_sae) in 1e-4..1e-3].")
@click.option("--batch-tokens", default=4096, show_default=True, help="Tokens per optimizer step.")
@click.option("--tokens", type=int, default=None, help="Training tokens [default: one pass over the training rows].")
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--checkpoint-every", default=500, show_default=True, help="Steps between checkpoints.")
@click.option("--warmup-steps", type=int, default=None, help="LR warm-up steps [default: min(1000, 5% of steps)].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@click.option("--dense", is_flag=True, help="TopK/BatchTopK: dense matmuls instead of the sparse kernels.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def train_cmd(data, site, out, arch, k, expansion, d_sae, l1, l1_warmup_steps, lr, batch_tokens, tokens, seed,
              resume, checkpoint_every, warmup_steps, device, dense, no_progress, as_json):
    """Train a TopK, BatchTopK or ReLU (L1) SAE on one site of an activation dataset.

    Inputs are scaled to a mean norm of sqrt(d_in) (the scale is stored with the SAE), decoder rows are kept at unit
    norm, the decoder bias starts at the data mean, dead latents are revived by an auxiliary loss, the learning rate
    (and, for relu, the L1 coefficient) warms up linearly. The last ~5% of the rows are held out for
    `mechscope sae eval`. Checkpoints are written every --checkpoint-every steps; after a crash or kill, the same
    command with --resume continues and gives the weights an uninterrupted run would have given. --out receives
    sae.safetensors, config.json (the resolved config), train_log.jsonl and checkpoint.pt.
    """
    from ..sae.train import TrainConfig, train

    cfg = TrainConfig(site=site, arch=arch, k=k, expansion=expansion, d_sae=d_sae, l1=l1,
                      l1_warmup_steps=l1_warmup_steps, lr=lr, batch_tokens=batch_tokens, tokens=tokens, seed=seed,
                      checkpoint_every=checkpoint_every, warmup_steps=warmup_steps, sparse=not dense, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        sae = train(data, out=out, config=cfg, resume=resume, progress=not no_progress)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    r = sae.cfg.extra.get("train", {})
    summary = {"out": str(out), "site": sae.cfg.site, "arch": sae.cfg.arch, "d_in": sae.cfg.d_in,
               "d_sae": sae.cfg.d_sae, "k": sae.cfg.k, "steps": r.get("steps"), "tokens": r.get("tokens"),
               "input_scale": sae.cfg.input_scale, **(sae.cfg.extra.get("result") or {})}
    if as_json:
        emit_json(summary)
    else:
        last = summary.get("last_batch") or {}
        click.echo(f"Trained {sae.cfg.arch} SAE ({sae.cfg.d_in} -> {sae.cfg.d_sae}) on {summary['tokens']} tokens of "
                   f"{sae.cfg.site}: last batch FVU {last.get('fvu', float('nan')):.4f}, L0 {last.get('l0', 0):.1f}. "
                   f"Saved to {out}. Next: mechscope sae eval --sae {out} --data {data}")


@sae_group.command("eval")
@click.option("--sae", "sae_dir", required=True, type=click.Path(exists=True), help="SAE folder.")
@click.option("--data", required=True, type=click.Path(), help="Activation dataset folder.")
@click.option("--model", "-m", "model_name", default=None,
              help="Model for the splice test [default: the one the dataset was extracted from].")
@click.option("--text", "texts", multiple=True, help="Held-out text for the splice test (repeatable).")
@click.option("--text-file", type=click.Path(exists=True), help="File of held-out texts, one per line.")
@click.option("--no-splice", is_flag=True, help="Reconstruction metrics only (no model run).")
@click.option("--splice-docs", default=32, show_default=True,
              help="Held-out documents of the dataset used for the splice test when no --text is given.")
@click.option("--max-tokens", type=int, default=None, help="Evaluate on at most this many held-out tokens.")
@click.option("--dead-window", type=int, default=None,
              help="Dead = never active over the last N evaluated tokens [default: all of them].")
@click.option("--out", type=click.Path(), default=None,
              help="Folder for metrics.json and report.html [default: --sae].")
@click.option("--dtype", default="auto", show_default=True, help="The splice test's model dtype (fp32, fp16, bf16 "
              "or auto).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@json_option
def eval_cmd(sae_dir, data, model_name, texts, text_file, no_splice, splice_docs, max_tokens, dead_window, out, dtype,
             device, as_json):
    """Evaluate a SAE on the held-out rows of a dataset, and splice it into the model.

    \b
    FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over held-out tokens (float64); explained variance = 1 - FVU.
    L0 = mean number of active latents per token; dead = never active over the evaluated tokens (N reported);
    dense = active on more than 10% of tokens.
    Splice test: cross-entropy on held-out text with the site replaced by the SAE reconstruction, minus the clean
    cross-entropy; fraction of loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), zero-ablation baseline.
    Writes metrics.json and a self-contained report.html.
    """
    from ..sae.evaluate import evaluate
    from ..devices import resolve_device
    from ..sae.model import SAE
    from .common import load_model

    dev = str(resolve_device(device))
    sae = SAE.load(sae_dir, device=dev)
    text_list = list(texts)
    if text_file:
        text_list += [ln for ln in Path(text_file).read_text(encoding="utf-8", errors="replace").splitlines()
                      if ln.strip()]
    model = False
    if not no_splice:
        name = model_name or sae.cfg.model
        if name is None:
            raise MechscopeError("The SAE does not record its model: pass --model (or --no-splice).")
        model = load_model(name, dtype, device)
    res = evaluate(sae_dir, data, model=model, texts=text_list or None, max_tokens=max_tokens, splice_docs=splice_docs,
                   out=out or sae_dir, device=dev, dead_window=dead_window)
    res = {k: v for k, v in res.items() if not k.startswith("_")}
    res["sae"] = str(sae_dir)
    if as_json:
        emit_json(res)
        return
    r = res["reconstruction"]
    click.echo(f"{res['site']}: {r['tokens']} held-out tokens")
    click.echo(f"  FVU {r['fvu']:.4f}  explained variance {r['explained_variance']:.4f}  L0 {r['l0']:.2f}")
    click.echo(f"  dead {r['dead']} ({r['dead_fraction']:.2%}, over the last {r['dead_window_tokens']} tokens)  "
               f"dense {r['dense']} ({r['dense_fraction']:.2%}, > 10% of tokens)")
    sp = res.get("splice")
    if sp:
        click.echo(f"  splice: CE clean {sp['ce_clean']:.4f}, with SAE {sp['ce_sae']:.4f} (+{sp['ce_increase']:.4f}), "
                   f"zero-ablated {sp['ce_zero']:.4f}; loss recovered {sp['loss_recovered']:.3f} "
                   f"({sp['tokens']} tokens)")
        click.echo(f"    on {sp['text_source']}, contexts of at most {sp['max_length']} tokens ({sp['max_length_source']})")
    elif not no_splice:
        click.echo("  splice: skipped (no held-out text: pass --text or --text-file)")
    click.echo(f"Wrote {Path(out or sae_dir) / 'metrics.json'} and report.html")


@sae_group.command("features")
@click.option("--sae", "sae_dir", required=True, type=click.Path(exists=True), help="SAE folder.")
@click.option("--data", required=True, type=click.Path(), help="Activation dataset folder.")
@click.option("--latents", default=None, help="Latents to show, e.g. 0-99,120 [default: the --top most frequent].")
@click.option("--top", type=int, default=100, show_default=True, help="Without --latents: the N most frequent.")
@click.option("--out", required=True, type=click.Path(), help="Folder for features.html and features.json.")
@click.option("--examples", default=10, show_default=True, help="Top-activating contexts per latent.")
@click.option("--window", default=8, show_default=True, help="Tokens on each side of the maximum.")
@click.option("--max-tokens", type=int, default=None, help="Scan at most this many rows.")
@click.option("--model", "-m", "model_name", default=None,
              help="Model whose tokenizer decodes the token ids [default: the dataset's tokenizer if cached].")
@click.option("--dtype", default="auto", show_default=True, help="--model's dtype (fp32, fp16, bf16 or auto).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@json_option
def features_cmd(sae_dir, data, latents, top, out, examples, window, max_tokens, model_name, dtype, device,
                 as_json):
    """Frequency and top-activating contexts of SAE latents, as one self-contained HTML page.

    Contexts come from the dataset's stored token ids: `window` tokens on each side of the maximum, each token
    shaded by the latent's activation. Opens offline; token text is HTML-escaped.
    """
    from ..sae.features import features
    from ..devices import resolve_device

    if examples < 1 or window < 0:
        raise MechscopeError("--examples must be >= 1 and --window >= 0.")
    tok = None
    if model_name:
        from .common import load_model

        tok = load_model(model_name, dtype, "cpu").tokenizer  # only its tokenizer is used
    res = features(sae_dir, data, latents, top=top, out=out, n_examples=examples, window=window,
                   max_tokens=max_tokens, tokenizer=tok, device=str(resolve_device(device)))
    if as_json:
        emit_json({"out": str(out), "site": res["site"], "tokens_scanned": res["tokens_scanned"],
                   "latents": [{k: v for k, v in it.items() if k != "examples"} for it in res["latents"]]})
    else:
        click.echo(f"{len(res['latents'])} latents, {res['tokens_scanned']} tokens scanned: "
                   f"{Path(out) / 'features.html'}")


@sae_group.command("export")
@click.argument("sae_dir", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(), help="Folder for cfg.json + sae_weights.safetensors.")
@click.option("--model-name", default=None, help="metadata.model_name [default: the recorded model].")
@click.option("--hook-name", default=None, help="TransformerLens hook name [default: the SAE's site].")
@json_option
def export_cmd(sae_dir, out, model_name, hook_name, as_json):
    """Write a mechscope SAE in SAELens's on-disk format (loads with sae_lens.SAE.load_from_disk).

    The input scale is folded into the weights (normalize_activations: none); TopK exports as topk, ReLU as
    standard, BatchTopK as jumprelu with its learned threshold.
    """
    from ..sae.saelens import export_saelens

    path = export_saelens(sae_dir, out, model_name=model_name, hook_name=hook_name)
    if as_json:
        emit_json({"out": str(path)})
    else:
        click.echo(f"Wrote SAELens SAE to {path}")


@sae_group.command("import")
@click.argument("saelens_dir", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(), help="Folder for the mechscope SAE.")
@click.option("--site", default=None, help="Site name [default: the config's hook_name].")
@json_option
def import_cmd(saelens_dir, out, site, as_json):
    """Read a SAELens SAE folder (standard, topk, jumprelu) and save it as a mechscope SAE for eval/features."""
    from ..sae.saelens import import_saelens

    sae = import_saelens(saelens_dir, out, site=site)
    info = {"out": str(out), "arch": sae.cfg.arch, "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "site": sae.cfg.site}
    if as_json:
        emit_json(info)
    else:
        click.echo(f"Imported {info['arch']} SAE ({info['d_in']} -> {info['d_sae']}, {info['site']}) to {out}")
