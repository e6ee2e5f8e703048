"""Benchmark: `mechscope finetune`'s training loop vs transformers' `Trainer` with its defaults, same run.

    python benchmarks/finetune.py [--model minilm] [--n-train 1024] [--epochs 1] [--batch-size 32]
                                  [--max-length 128] [--threads 1] [--device cpu]

Both fine-tune the same model (the embedded all-MiniLM-L6-v2 by default) with the same classification head
initialisation, learning rate, batch size, epochs and seed on the same rows (the offline VADER-lexicon sentiment set,
mechscope.data), truncated to the same max length. The Trainer gets its defaults for everything else (AdamW, linear
decay, dynamic padding through the tokenizer's collator, checkpoints every 500 steps, no evaluation during
training) and report_to="none". Reported: training examples/s of each (mechscope: the epochs' training time;
Trainer: its own `train_samples_per_second`), end-to-end wall time, and each model's accuracy on the same held-out
rows.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import mechscope
from mechscope.data import make_sentiment_data
from mechscope.encoders import finetune, metrics, training


def trainer_run(base, tr, ev, args, work: Path) -> dict:
    import datasets
    import transformers as tf

    names = ["negative", "positive"]
    clf, _ = training.build_classifier(base, names, args.seed)
    tok = base.tokenizer

    def encode(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=args.max_length)
        return datasets.Dataset.from_dict({**enc, "labels": [names.index(r["label"]) for r in rows]})

    targs = tf.TrainingArguments(output_dir=str(work / "trainer"), num_train_epochs=args.epochs,
                                 per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
                                 seed=args.seed, report_to="none", use_cpu=args.device == "cpu")
    trainer = tf.Trainer(model=clf, args=targs, train_dataset=encode(tr), processing_class=tok)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    ids, _ = training.tokenize(tok, [r["text"] for r in ev], args.max_length)
    pad = tok.pad_token_id
    pred = training.predict(trainer.model, ids, pad, 64).argmax(-1).tolist()
    acc = metrics.scores([names.index(r["label"]) for r in ev], pred, 2)["accuracy"]
    return {"examples_per_s": out.metrics["train_samples_per_second"], "train_wall_s": wall, "eval_accuracy": acc}


def ours_run(base, tr, ev, args, work: Path) -> dict:
    from mechscope.data import write_rows

    write_rows(tr, work / "train.csv")
    write_rows(ev, work / "eval.csv")
    t0 = time.perf_counter()
    r = finetune(base, str(work / "train.csv"), str(work / "eval.csv"), out=work / "ours", epochs=args.epochs,
                 lr=args.lr, batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                 device=args.device)
    wall = time.perf_counter() - t0
    train_s = sum(h["train_seconds"] for h in r["history"])
    return {"examples_per_s": len(tr) * args.epochs / train_s, "train_wall_s": train_s, "end_to_end_s": wall,
            "eval_accuracy": r["eval"]["accuracy"],
            "bow_accuracy": r["baselines"]["bag_of_words_logreg"]["accuracy"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-eval", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--order", choices=["ours-first", "trainer-first"], default="ours-first")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = make_sentiment_data(args.n_train + args.n_eval, seed=args.seed,
                               test_fraction=args.n_eval / (args.n_train + args.n_eval))
    tr = [r for r in rows if r["split"] == "train"]
    ev = [r for r in rows if r["split"] == "test"]
    base = mechscope.load(args.model, device=args.device, dtype="fp32")
    lengths = [len(x) for x in training.tokenize(base.tokenizer, [r["text"] for r in tr], args.max_length)[0]]
    with tempfile.TemporaryDirectory(prefix="mechscope-ft-bench-") as work:
        work = Path(work)
        runs = [("ours", ours_run), ("trainer", trainer_run)]
        if args.order == "trainer-first":
            runs.reverse()
        res = {name: fn(base, tr, ev, args, work) for name, fn in runs}
    res["ratio"] = res["ours"]["examples_per_s"] / res["trainer"]["examples_per_s"]
    res["setup"] = {**vars(args), "n_train": len(tr), "n_eval": len(ev), "tokens_per_text_median": float(
        np.median(lengths)), "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    print(json.dumps(res, indent=2))
    print(f"mechscope finetune {res['ours']['examples_per_s']:.1f} examples/s, Trainer (defaults) "
          f"{res['trainer']['examples_per_s']:.1f} examples/s: {res['ratio']:.2f}x", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
