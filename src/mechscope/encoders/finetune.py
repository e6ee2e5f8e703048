"""`finetune`: sequence classification on top of any supported model, written to a folder that both
`mechscope.load(DIR)` and `AutoModelForSequenceClassification.from_pretrained(DIR)` open.

    finetune(model="minilm", train="train.csv", eval=None, out="clf/")  -> metrics dict (also DIR/metrics.json)

The run is built in a hidden sibling folder `.DIR.partial` (with an epoch checkpoint after every epoch, so a killed
run continues with resume=True) and renamed to DIR only when complete: DIR is never half-written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Union

from ..errors import ConfigError, DataError
from . import metrics, training

TRAINER = "plain torch loop (AdamW, linear decay, length-grouped batches)"


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _fingerprint(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _check_settings(epochs, lr, batch_size, max_length, eval_fraction, n_ctx) -> None:
    for name, value, ok, want in (("epochs", epochs, epochs >= 1, "at least 1"), ("lr", lr, lr > 0, "> 0"),
                                  ("batch_size", batch_size, batch_size >= 1, "at least 1"),
                                  ("max_length", max_length, max_length >= 2, "at least 2"),
                                  ("eval_fraction", eval_fraction, 0 < eval_fraction < 1, "between 0 and 1")):
        if not ok:
            raise ConfigError(f"--{name.replace('_', '-')} {value} must be {want}.", name)
    if n_ctx and max_length > n_ctx:
        raise ConfigError(f"--max-length {max_length} is more than the model reads ({n_ctx} tokens). Use "
                          f"--max-length {n_ctx} or less.", "max_length")


def _relabel(data, names: list, what: str):
    """Map `data`'s labels onto `names` (the training labels); a label the training data lacks is an error."""
    extra = [n for n in data.label_names if n not in names]
    if extra:
        raise DataError(f"{what} has labels the training data lacks: {', '.join(map(repr, extra[:10]))}. The "
                        f"training labels are {', '.join(map(repr, names))}.", "eval")
    index = {n: i for i, n in enumerate(names)}
    data.labels = [index[data.label_names[y]] for y in data.labels]
    data.label_names = list(names)
    return data


def _split(data, fraction: float, seed: int):
    """A stratified train/eval split of one LabeledTexts (unstratified when a label is too rare)."""
    from sklearn.model_selection import train_test_split

    from ..data.labeled import LabeledTexts

    idx = list(range(len(data)))
    try:
        a, b = train_test_split(idx, test_size=fraction, random_state=seed, stratify=data.labels)
    except ValueError:
        a, b = train_test_split(idx, test_size=fraction, random_state=seed)
    pick = lambda rows: LabeledTexts([data.texts[i] for i in rows], [data.labels[i] for i in rows],  # noqa: E731
                                     list(data.label_names), data.path, data.columns)
    return pick(sorted(a)), pick(sorted(b))


def read_data(train, eval, dataset, config, text_field, label_field, eval_fraction, seed):
    """(train, eval, source description): files (--train/--eval) or a Hugging Face dataset (--dataset)."""
    from ..data.labeled import read_labeled

    if bool(train) == bool(dataset):
        raise ConfigError("Give exactly one of --train FILE (csv, jsonl or parquet) and --dataset NAME.", "train")
    if dataset:
        from .hub import read_hub

        tr, ev, source = read_hub(dataset, config, text_field, label_field)
    else:
        tr = read_labeled(train, text_field, label_field, argument="train")
        ev = read_labeled(eval, text_field, label_field, argument="eval") if eval else None
        source = {"train": str(train), "train_sha256": _fingerprint(train), "eval": str(eval) if eval else None,
                  "eval_sha256": _fingerprint(eval)}
    if ev is None:
        tr, ev = _split(tr, eval_fraction, seed)
        source["eval_split"] = f"{eval_fraction:g} of the training rows (stratified, seed {seed})"
    else:
        ev = _relabel(ev, tr.label_names, "The evaluation data")
    return tr, ev, source


def _prepare_out(out: Path, resume: bool) -> Path:
    part = partial_dir(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {str(out)!r} exists and is not empty. Choose a new folder (finetune writes a "
                          "whole model folder there).", "out")
    checkpoint = part / "checkpoint.pt"
    if part.exists() and not checkpoint.exists():  # killed before its first epoch ended: nothing to keep
        shutil.rmtree(part)
    if checkpoint.exists() and not resume:
        raise ConfigError(f"An interrupted finetune run into {str(out)!r} left {str(part)!r}. Pass --resume to "
                          "continue it from its last epoch, or delete that folder to start again.", "resume")
    if resume and not checkpoint.exists():
        raise ConfigError(f"--resume: there is no interrupted run into {str(out)!r} to continue. Drop --resume "
                          "to start the run.", "resume")
    part.mkdir(parents=True, exist_ok=True)
    return part


def _check_resume(part: Path, settings: dict) -> None:
    old = json.loads((part / "settings.json").read_text())
    keys = [k for k in settings if k not in ("device",) and old.get(k) != settings[k]]
    if keys:
        diff = "; ".join(f"{k}: {old.get(k)!r} then, {settings[k]!r} now" for k in keys[:6])
        raise ConfigError(f"--resume: the interrupted run had other settings ({diff}). Resume with the same "
                          f"settings, or delete {str(part)!r} to start again.", "resume")


def _say(msg: str) -> None:
    print(f"[mechscope] {msg}", file=sys.stderr, flush=True)


def finetune(model="minilm", train: Optional[str] = None, eval: Optional[str] = None, *,
             out: Union[str, Path], dataset: Optional[str] = None, config: Optional[str] = None,
             text_field: str = "text", label_field: str = "label", epochs: int = 3, lr: float = 5e-5,
             batch_size: int = 32, max_length: int = 128, seed: int = 0, eval_fraction: float = 0.2,
             device: str = "auto", resume: bool = False, progress: bool = True, quiet: bool = False) -> dict:
    """Fine-tune `model` (a name `mechscope.load` accepts, or a loaded Model) as a sequence classifier on labeled
    texts; write the model folder, metrics.json, curves.png and report.html to `out`. Returns the metrics.
    quiet=True silences Hugging Face's logs and progress bars while the model loads (`mechscope.load(quiet=)`)."""
    from ..loading import load
    from ..model import Model
    from . import report

    out = Path(out).expanduser()
    tr, ev, source = read_data(train, eval, dataset, config, text_field, label_field, eval_fraction, seed)
    base = model if isinstance(model, Model) else load(model, device=device, dtype="fp32", quiet=quiet)
    _check_settings(epochs, lr, batch_size, max_length, eval_fraction, base.cfg.n_ctx)
    settings = {"model": base.name, "model_source": base.source, "data": source, "text_field": text_field,
                "label_field": label_field, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "max_length": max_length, "seed": seed, "n_train": len(tr), "n_eval": len(ev),
                "label_names": tr.label_names, "pooling": "last token" if base.adapter.causal else "model's own "
                "(BERT: pooler over [CLS])", "trainer": TRAINER, "device": str(base.device)}
    tok = base.tokenizer
    ids_tr, cut_tr = training.tokenize(tok, tr.texts, max_length)
    ids_ev, cut_ev = training.tokenize(tok, ev.texts, max_length)
    if cut_tr or cut_ev:
        _say(f"{cut_tr} of {len(tr)} training and {cut_ev} of {len(ev)} evaluation texts are longer than "
             f"--max-length {max_length} tokens and were truncated"
             + (f" (the model reads up to {base.cfg.n_ctx})." if base.cfg.n_ctx else "."))
    part = _prepare_out(out, resume)
    try:
        if resume:
            _check_resume(part, settings)
        else:
            from ..fsio import write_json

            write_json(part / "settings.json", settings)
        clf, new = training.build_classifier(base, tr.label_names, seed)
        clf.to(base.device)
        if base is not model:
            del base
        result = _train(clf, tok, ids_tr, tr.labels, ids_ev, ev.labels, part, epochs, lr, batch_size, seed,
                        resume, progress)
        pred = result["logits"].argmax(-1).tolist()
        results = {"eval": metrics.scores(ev.labels, pred, len(tr.label_names)),
                   "history": result["history"], "step_loss": result["step_loss"],
                   "label_names": tr.label_names, "settings": settings, "new_parameters": new,
                   "truncated": {"train": cut_tr, "eval": cut_ev, "max_length": max_length},
                   "baselines": {"majority": metrics.majority_baseline(tr.labels, ev.labels, len(tr.label_names)),
                                 "bag_of_words_logreg": metrics.bow_baseline(tr.texts, tr.labels, ev.texts,
                                                                             ev.labels, len(tr.label_names),
                                                                             seed)},
                   "worst": report.worst_examples(ev.texts, ev.labels, result["logits"], tr.label_names)}
        clf.save_pretrained(part)
        tok.save_pretrained(part)
        report.write_all(part, results)
        for f in ("checkpoint.pt", "settings.json"):
            (part / f).unlink(missing_ok=True)
        if out.exists():
            out.rmdir()  # an empty folder given as --out
        os.rename(part, out)
    except BaseException:  # a kept checkpoint lets --resume continue from the last finished epoch
        if not (part / "checkpoint.pt").exists():
            shutil.rmtree(part, ignore_errors=True)
        raise
    return results


def _train(clf, tok, ids_tr, y_tr, ids_ev, y_ev, part: Path, epochs, lr, batch_size, seed, resume, progress):
    import torch
    from tqdm.auto import tqdm

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    lengths = [len(x) for x in ids_tr]
    steps_per_epoch = len(training.length_batches(lengths, batch_size, torch.Generator().manual_seed(0)))
    opt, sched = training.optimizer_and_schedule(clf, lr, steps_per_epoch * epochs)
    history, step_loss, done = [], [], 0
    if resume:
        state = training.load_checkpoint(part / "checkpoint.pt", clf, opt, sched)
        history, step_loss, done = state["history"], state["step_loss"], state["epoch"]
        _say(f"resuming after epoch {done} of {epochs}")
    logits = None
    bar = tqdm(total=epochs * len(ids_tr), initial=done * len(ids_tr), unit="ex", unit_scale=True,
               desc="finetune", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for epoch in range(done + 1, epochs + 1):
            t0 = time.perf_counter()
            torch.manual_seed(seed * 1000 + epoch)  # dropout: the same after a resume as without one
            batches = training.length_batches(lengths, batch_size, torch.Generator().manual_seed(seed * 1000 + epoch))
            losses = training.train_epoch(clf, ids_tr, y_tr, batches, opt, sched, pad, bar)
            seconds = time.perf_counter() - t0
            logits = training.predict(clf, ids_ev, pad, 2 * batch_size)
            s = metrics.scores(y_ev, logits.argmax(-1).tolist(), clf.config.num_labels)
            history.append({"epoch": epoch, "loss": sum(losses) / len(losses),
                            "eval_loss": training.eval_loss(logits, y_ev), "eval_accuracy": s["accuracy"],
                            "eval_f1": s["f1"], "train_seconds": seconds, "examples_per_s": len(ids_tr) / seconds})
            step_loss += losses
            bar.write(f"epoch {epoch}/{epochs}: loss {history[-1]['loss']:.4f}  eval accuracy {s['accuracy']:.4f}"
                      f"  ({history[-1]['examples_per_s']:.1f} examples/s)", file=sys.stderr)
            if epoch < epochs:
                training.save_checkpoint(part / "checkpoint.pt", clf, opt, sched, epoch, history, step_loss)
    finally:
        bar.close()
    if logits is None:  # resumed after the last epoch's checkpoint: nothing left to train
        logits = training.predict(clf, ids_ev, pad, 2 * batch_size)
    return {"history": history, "step_loss": step_loss, "logits": logits}
