"""`mechscope probe`: per-layer linear probes with controls, and a causal check of the best direction."""
from __future__ import annotations

import shlex
import sys

import click

from . import common


@click.command("probe")
@common.model_options
@click.option("--data", "data_path", required=True, help="Labeled texts: .csv, .jsonl or .parquet.")
@click.option("--text-field", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-field", default="label", show_default=True, help="Column holding the label (string or int).")
@click.option("--split-field", default=None,
              help="Column marking held-out rows with 'test' (e.g. 'split' in `mechscope sentiment-data` files); "
                   "default: a stratified random split by --test-fraction.")
@click.option("--sites", default="resid_post,attn_out,mlp_out", show_default=True,
              help="Site kinds to probe, comma-separated: resid_pre, attn_out, resid_mid, mlp_post, mlp_out, "
                   "resid_post.")
@click.option("--layers", default="all", show_default=True, help="Layers, e.g. 'all', '0-3,5' or '-1'.")
@click.option("--pool", type=click.Choice(["mean", "cls", "last"]), default="mean", show_default=True,
              help="One vector per text: mean over real tokens, the first ([CLS]) token, or the last real token "
                   "(for causal models).")
@click.option("--test-fraction", default=0.2, show_default=True, help="Held-out share (without --split-field).")
@click.option("--seed", default=0, show_default=True, help="Split, CV folds, control map, random-init model.")
@click.option("--control", type=click.Choice(["words", "texts"]), default="words", show_default=True,
              help="Control task: a fixed random label per word type (a text takes its rarest word's) or per text.")
@click.option("--no-random-model", is_flag=True, help="Skip the randomly initialised model baseline.")
@click.option("--ablate", is_flag=True,
              help="Project the best layer's probe direction out of the residual stream and measure the drop of a "
                   "classifier's accuracy (or a causal LM's label-word logit difference) against random directions.")
@click.option("--label-words", default=None,
              help="Causal LMs with --ablate: one single-token word per label, comma-separated in label order "
                   "(default: each label name with a leading space).")
@click.option("--batch-size", default=32, show_default=True, help="Texts per forward.")
@click.option("--max-length", default=128, show_default=True, help="Tokens per text (longer ones are cut, counted).")
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace the probe outputs already in --out.")
def probe_cmd(model_name, dtype, device, data_path, text_field, label_field, split_field, sites, layers, pool,
              test_fraction, seed, control, no_random_model, ablate, label_words, batch_size, max_length, out,
              overwrite):
    """Where is the label linearly readable? Capture every requested site of every layer in one forward per batch,
    pool each text to one vector, and fit a logistic-regression probe per (site, layer) (regularization by
    cross-validation) on the train split; report held-out accuracy beside a control task (selectivity), the same
    probe on a randomly initialised model of the same architecture, and a difference-of-means direction.

    Works on any supported model, before and after `mechscope finetune`: probe both to see what fine-tuning changed,
    layer by layer. Writes probe.json, probe.csv, probe.png and report.html to --out.

    \b
    Example:
      mechscope sentiment-data --out out/sentiment.csv
      mechscope probe --model minilm --data out/sentiment.csv --split-field split --out out/probe
    """
    from ..data.labeled import read_labeled
    from ..encoders.probe import check_settings, parse_kinds, probe
    from ..encoders.probe_report import check_out, write_outputs
    from ..indices import parse_index_list

    # every argument and data error before the model loads
    kinds = parse_kinds(sites)
    check_settings(pool, test_fraction, control, batch_size, max_length)
    parse_index_list(layers, 10**6, "layers")
    out_dir = check_out(out, overwrite)
    data = read_labeled(data_path, text_field, label_field, split_field)
    words = [w for w in label_words.split(",")] if label_words else None
    model = common.load_model(model_name, dtype, device)
    result = probe(model, data, split_field=split_field, sites=kinds, layers=layers, pool=pool,
                   test_fraction=test_fraction, seed=seed, control=control, random_model=not no_random_model,
                   ablate=ablate, label_words=words, batch_size=batch_size, max_length=max_length)
    command = "mechscope " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    paths = write_outputs(result, out_dir, command)
    b = result.best
    click.echo(f"best: {b['site']} layer {b['layer']}: accuracy {b['accuracy']:.3f}, selectivity "
               f"{b['selectivity']:.3f} (majority {result.majority_accuracy:.3f}); {result.info['forwards']} "
               f"forwards")
    if result.ablation:
        a = result.ablation
        click.echo(f"ablation at {a['site']}: {a['metric']} {a['baseline']:.3f} -> {a['ablated']:.3f} "
                   f"(random directions: -> {a['baseline'] - a['random_drop']:.3f})")
    click.echo(f"report: {paths['report.html']}")
