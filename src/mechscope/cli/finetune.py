"""`mechscope finetune`: a sequence classifier from an encoder (or a causal LM) and labeled texts."""
from __future__ import annotations

import click

from . import common


@click.command("finetune")
@click.option("--model", "-m", "model_name", default="minilm", show_default=True,
              help="What to fine-tune: 'minilm' (the embedded encoder), a hub id, a local folder, a .gguf, or "
              "'default' (the embedded SmolLM2, classified from its last token).")
@click.option("--train", "train", default=None, type=click.Path(dir_okay=False),
              help="Training data: .csv, .jsonl or .parquet with a text and a label column.")
@click.option("--eval", "eval_path", default=None, type=click.Path(dir_okay=False),
              help="Evaluation data, same format (default: --eval-fraction of --train, stratified).")
@click.option("--dataset", default=None, help="A Hugging Face dataset instead of --train (e.g. glue; needs network "
              "or the local cache). Its train split trains, its validation (else test) split evaluates.")
@click.option("--config", "ds_config", default=None, help="The --dataset configuration (e.g. sst2).")
@click.option("--text-field", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-field", default="label", show_default=True, help="Column holding the label (strings or "
              "integers; the names are kept).")
@click.option("--epochs", default=3, show_default=True, type=int)
@click.option("--lr", default=5e-5, show_default=True, type=float, help="AdamW learning rate (linear decay to 0).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--max-length", default=128, show_default=True, type=int,
              help="Tokens per text; longer texts are truncated (and counted).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--eval-fraction", default=0.2, show_default=True, type=float,
              help="Share of --train held out for evaluation when there is no --eval.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Output model folder (must be new or empty).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into --out from its last finished epoch.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@common.json_option
def finetune_cmd(model_name, train, eval_path, dataset, ds_config, text_field, label_field, epochs, lr, batch_size,
                 max_length, seed, eval_fraction, out, resume, no_progress, device, as_json):
    """Fine-tune MODEL as a sequence classifier (transformers' classification head; the whole model trains) on
    labeled texts, and write OUT: a model folder that `mechscope.load(OUT)` and
    `AutoModelForSequenceClassification.from_pretrained(OUT)` open, with metrics.json (eval accuracy, macro F1,
    confusion matrix; loss and eval accuracy per epoch; label names; settings), curves.png and report.html (curves,
    confusion matrix, worst-classified examples, and two baselines on the same split: the majority class and a
    bag-of-words logistic regression).

    Encoders classify from their own pooling (BERT: [CLS]); causal LMs from the last real token. OUT appears only
    when the run is complete; a killed run continues with --resume.

    \b
    Examples:
      mechscope finetune --train train.csv --eval test.csv --out clf/
      mechscope finetune --model minilm --dataset glue --config sst2 --epochs 1 --out sst2/
    """
    from ..encoders import finetune

    r = finetune(model_name, train, eval_path, out=out, dataset=dataset, config=ds_config, text_field=text_field,
                 label_field=label_field, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
                 seed=seed, eval_fraction=eval_fraction, device=device, resume=resume, progress=not no_progress,
                 quiet=not common.verbose())
    if as_json:
        common.emit_json({k: r[k] for k in ("eval", "history", "label_names", "baselines", "truncated")})
        return
    ev, base = r["eval"], r["baselines"]
    click.echo(f"eval accuracy {ev['accuracy']:.4f}  macro F1 {ev['f1']:.4f}  (n={ev['n']}; majority class "
               f"{base['majority']['accuracy']:.4f}, bag-of-words logistic regression "
               f"{base['bag_of_words_logreg']['accuracy']:.4f})")
    click.echo(f"model folder, metrics.json, curves.png, report.html: {out}")

