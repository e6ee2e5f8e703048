"""`mechscope extract`: corpus -> activation dataset."""
from __future__ import annotations

import click

from .common import emit_json, json_option, load_model, model_options


@click.command("extract")
@click.option("--sites", "-s", required=True,
              help="Comma-separated site names, e.g. blocks.8.hook_mlp_out,blocks.8.hook_resid_post.")
@click.option("--input", "-i", "input_path", default=None, help=".txt (one document per line), .jsonl, .parquet, "
              ".csv, or a folder of them.")
@click.option("--dataset", default=None, help="A Hugging Face dataset to stream instead of --input (e.g. oscar).")
@click.option("--config", "ds_config", default=None, help="The --dataset configuration (e.g. "
              "unshuffled_deduplicated_es).")
@click.option("--split", default="train", show_default=True, help="The --dataset split, optionally sliced: "
              "train[:10000], train[:1%].")
@click.option("--out", "-o", required=True, help="Output folder (must be new or empty, unless --resume).")
@click.option("--text-field", default="text", show_default=True, help="Field / column holding the text.")
@click.option("--max-length", default=None, type=int, help="Tokens per context (default 256, or the model's "
              "context if shorter).")
@click.option("--mode", type=click.Choice(["document", "packed"]), default="document", show_default=True,
              help="document: each document truncated at --max-length; packed: documents + EOS in full contexts.")
@click.option("--store-dtype", default=None, help="fp32, fp16 or bf16 on disk (default: the model's --dtype; bf16 is "
              "kept losslessly as its bits).")
@click.option("--exclude-bos", is_flag=True, help="Do not store rows of BOS tokens (they still go through the model).")
@click.option("--batch-tokens", default=None, type=int, help="Tokens per forward, padding included (default: 1024 "
              "on CPU, in packed rows; 8192 on CPU for models that cannot pack; 32768 on GPU).")
@click.option("--shard-tokens", default=None, type=int, help="Stored tokens per shard (default: about 256 MB).")
@click.option("--limit-docs", default=None, type=int, help="Read only the first N input records.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (after its last complete shard).")
@click.option("--no-arrays", is_flag=True, help="Skip the consolidated arrays/<site>.npy (halves the disk use; "
              "ActivationDataset then reads the Arrow shards).")
@click.option("--push-to-hub", "push_to_hub", default=None, metavar="REPO",
              help="Upload the finished dataset to this Hub dataset repo (token from HF_TOKEN or `hf auth login`).")
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repo private.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--num-workers", default=None, type=int, help="--engine ray: model actors (default: one per GPU, or 2).")
@click.option("--gpus-per-worker", default=None, type=float, help="--engine ray: GPUs per actor (default 1 if the "
              "cluster has GPUs, else 0).")
@click.option("--ray-address", default=None, help="--engine ray: address of an existing cluster (default: start a "
              "local Ray).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@model_options
@json_option
def extract_cmd(sites, input_path, dataset, ds_config, split, out, text_field, max_length, mode, store_dtype,
                exclude_bos, batch_tokens, shard_tokens, limit_docs, resume, no_arrays, push_to_hub, private, engine,
                num_workers, gpus_per_worker, ray_address, no_progress, model_name, dtype, device, as_json):
    """Extract activations at SITES for every document of a corpus into an activation dataset.

    Only real tokens are stored (never padding); the forward stops right after the deepest site. The folder holds
    Arrow shards that `datasets.load_dataset(OUT)` opens, one memory-mappable (tokens, d) array per site, and a
    manifest; read it with `mechscope.ActivationDataset(OUT)`. Kill it at any time and rerun with --resume.

    \b
    Examples:
      mechscope extract --sites blocks.15.hook_mlp_out --input corpus.jsonl --out acts/
      mechscope extract -m meta-llama/Llama-3.2-1B --dtype bf16 --sites blocks.8.hook_mlp_out \\
          --dataset oscar --config unshuffled_deduplicated_es --split "train[:1%]" --out acts_es/ \\
          --push-to-hub me/llama-acts
      mechscope extract --sites blocks.8.hook_resid_post --input docs/ --out acts/ --engine ray --num-workers 8
    """
    from ..extract.api import plan, run
    from ..extract.config import ExtractConfig

    config = ExtractConfig(sites=sites, out=out, input=input_path, dataset=dataset, dataset_config=ds_config,
                           split=split, text_field=text_field, model=model_name, dtype=dtype, device=device,
                           max_length=max_length, mode=mode, store_dtype=store_dtype, exclude_bos=exclude_bos,
                           batch_tokens=batch_tokens, shard_tokens=shard_tokens, limit_docs=limit_docs,
                           arrays=not no_arrays, engine=engine, num_workers=num_workers,
                           gpus_per_worker=gpus_per_worker, ray_address=ray_address, resume=resume,
                           push_to_hub=push_to_hub, private=private, progress=not no_progress and not as_json)
    p = plan(config)  # every check before the model load
    summary = run(p, load_model(model_name, dtype, device) if p.needs_model else None)
    if as_json:
        emit_json(summary)
        return
    _print_summary(summary)


def _print_summary(s: dict) -> None:
    head = "already complete" if s["already_finished"] else "done"
    click.echo(f"{head}: {s['tokens']:,} tokens from {s['documents']:,} documents ({s['records']:,} records read) "
               f"-> {s['out']}")
    click.echo(f"  sites: {', '.join(s['sites'])}  dtype: {s['dtype']}  shards: {s['shards']}  "
               f"size: {s['bytes'] / 1e6:,.1f} MB")
    if not s["already_finished"]:
        click.echo(f"  time: {s['seconds']:,.1f} s  ({s['tokens_per_s'] or 0:,.0f} tokens/s)")
    if s["skipped"]:
        click.echo("  skipped: " + ", ".join(f"{n:,} {why}" for why, n in sorted(s["skipped"].items())))
    else:
        click.echo("  skipped: none")
    for w in s["warnings"]:
        click.echo(f"  warning: {w}", err=True)
    if s.get("hub_url"):
        click.echo(f"  pushed to {s['hub_url']}")
    click.echo(f"  read it: mechscope.ActivationDataset({s['out']!r}) or datasets.load_dataset({s['out']!r})")
