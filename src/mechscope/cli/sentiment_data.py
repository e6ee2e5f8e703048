"""`mechscope sentiment-data`: an offline labeled sentiment set from the VADER lexicon's rated words."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from ..errors import ConfigError


@click.command("sentiment-data")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output file: .csv or .jsonl (columns text, label, split, form, words).")
@click.option("--n", "n", default=2000, show_default=True, help="Rows in all (train + test).")
@click.option("--seed", default=0, show_default=True, help="Seed of the word split and the sentences.")
@click.option("--test-fraction", default=0.2, show_default=True,
              help="Share of the lexicon words (and of the rows) set aside for the test split.")
@click.option("--split", "split", type=click.Choice(["all", "train", "test"]), default="all", show_default=True,
              help="Write every row (with a split column), or only one side.")
@click.option("--forms", default="plain,negated,contrast", show_default=True,
              help="Sentence forms to use, comma-separated.")
@click.option("--min-strength", default=1.5, show_default=True,
              help="Keep words whose mean rating is at least this far from neutral (ratings run -4..+4).")
@click.option("--max-std", default=1.2, show_default=True, help="Keep words whose raters agreed to this std.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def sentiment_data_cmd(out, n, seed, test_fraction, split, forms, min_strength, max_std, overwrite):
    """Write a labeled sentiment set built offline from the 7,520-entry human-rated VADER lexicon: short
    review-like sentences around strong words, in plain, negated ("not X": label flipped) and contrast
    ("X, but Y": label of Y) forms. Labels are "negative"/"positive", balanced. The split is by lexicon word:
    no word appears in both train and test. The same --seed gives the same file.

    Accuracy on this set is not accuracy on real reviews (the sentences are templated and unambiguous); use it to
    try the tools offline, and your own files or a Hub dataset to measure a model.

    \b
    Examples:
      mechscope sentiment-data --out sentiment.csv --n 2000
      mechscope sentiment-data --out train.jsonl --split train && \\
        mechscope sentiment-data --out test.jsonl --split test
    """
    from ..data.sentiment import make_sentiment_data, write_rows

    path = Path(out).expanduser()
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"--out {out!r}: unsupported file type {path.suffix or '(none)'!r}. End the name in .csv "
                          "or .jsonl.", argument="out")
    if path.exists() and not overwrite:
        raise ConfigError(f"--out {out!r} already exists. Pass --overwrite to replace it, or choose another name.",
                          argument="out")
    rows = make_sentiment_data(n=n, seed=seed, test_fraction=test_fraction,
                               forms=[f.strip() for f in forms.split(",") if f.strip()],
                               min_strength=min_strength, max_std=max_std)
    if split != "all":
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise ConfigError(f"--split {split} is empty with --n {n} --test-fraction {test_fraction}. Raise --n or "
                              "change --test-fraction.", argument="split")
    write_rows(rows, path)
    counts = Counter((r["split"], r["label"]) for r in rows)
    parts = ", ".join(f"{s}/{lab} {c}" for (s, lab), c in sorted(counts.items()))
    click.echo(f"wrote {len(rows)} rows to {path} ({parts})")
