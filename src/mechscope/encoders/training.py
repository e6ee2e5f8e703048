"""The pieces of `finetune`: transformers' classification head on a loaded body, tokenization with truncation
counts, length-grouped batches, one epoch of AdamW, prediction, and the epoch checkpoint.

The loop is a plain torch loop (benchmarks/finetune.py measures it against transformers' `Trainer` with its
defaults on the same data and model): AdamW with weight decay 0, a linear decay to 0 without warm-up and gradient
clipping at 1.0, as the Trainer does, but batches of similar length (less padding).
"""
from __future__ import annotations

import copy
import math
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import DataError


def build_classifier(base, label_names: Sequence[str], seed: int):
    """An `AutoModelForSequenceClassification` of `base`'s architecture with `len(label_names)` labels, its body
    holding `base`'s weights. Returns (classifier, names of the parameters that start new, e.g. the head).

    Encoders classify from their own pooling (BERT: the pooler over [CLS]); causal LMs from the last real token
    (transformers' causal classifiers read the last token that is not `pad_token_id`, so batches pad on the right).
    """
    import transformers as tf

    config = copy.deepcopy(base.hf.config)
    config.num_labels = len(label_names)
    config.id2label = {i: str(n) for i, n in enumerate(label_names)}
    config.label2id = {str(n): i for i, n in enumerate(label_names)}
    config.problem_type = "single_label_classification"
    config.architectures = None
    if base.adapter.causal:
        config.pad_token_id = base.tokenizer.pad_token_id
    torch.manual_seed(seed)  # the new head's initialization
    try:
        clf = tf.AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    except ValueError as err:
        raise DataError(f"transformers has no sequence-classification model for {config.model_type!r} ({err}).",
                        "model") from None
    body = base.hf.base_model.state_dict()
    missing, unexpected = clf.base_model.load_state_dict(body, strict=False)
    if unexpected:
        raise DataError(f"The weights of {base.name} do not fit a {type(clf).__name__} body (unexpected: "
                        f"{', '.join(unexpected[:5])}).", "model")
    prefix = clf.base_model_prefix
    new = [f"{prefix}.{k}" for k in missing] + [n for n, _ in clf.named_parameters()
                                                  if not n.startswith(prefix + ".")]
    return clf.float(), sorted(set(new))


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list, int]:
    """Token ids per text (special tokens included), cut to `max_length`; and how many texts were cut."""
    full = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    long = [i for i, ids in enumerate(full) if len(ids) > max_length]
    if long:
        cut = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length)["input_ids"]
        for i, ids in zip(long, cut):
            full[i] = ids
    return full, len(long)


def tokenize_for(model, texts: Sequence[str], max_length: int) -> tuple[list, int]:
    """`tokenize` with the model's tokenizer, cut at `max_length` or the model's context, whichever is shorter."""
    return tokenize(model.tokenizer, texts, min(max_length, model.cfg.n_ctx or max_length))


def length_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                   shuffle: bool = True) -> list:
    """Index batches of similar lengths: shuffle, sort within windows of 50 batches, cut, shuffle the batches."""
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    window = batch_size * 50
    batches = []
    for s in range(0, n, window):
        chunk = sorted(order[s:s + window], key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def collate(ids: Sequence[list], idx: Sequence[int], pad_id: int, device) -> dict:
    """Right-padded input_ids (B, T) and attention_mask (B, T) for the rows `idx`."""
    t = max(len(ids[i]) for i in idx)
    x = torch.full((len(idx), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), t), dtype=torch.long)
    for r, i in enumerate(idx):
        x[r, :len(ids[i])] = torch.tensor(ids[i])
        mask[r, :len(ids[i])] = 1
    return {"input_ids": x.to(device), "attention_mask": mask.to(device)}


def optimizer_and_schedule(clf, lr: float, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=0.0)
    return opt, get_linear_schedule_with_warmup(opt, 0, max(1, total_steps))


def autocast(device: torch.device):
    """bf16 autocast on a CUDA GPU that supports it (weights stay fp32); nothing elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def train_epoch(clf, ids, labels, batches, opt, sched, pad_id: int, bar=None) -> list[float]:
    """One pass over `batches`; returns the loss of every step."""
    dev = next(clf.parameters()).device
    y_all = torch.tensor(labels, dtype=torch.long)
    clf.train()
    losses = []
    for idx in batches:
        batch = collate(ids, idx, pad_id, dev)
        with autocast(dev):
            out = clf(**batch, labels=y_all[idx].to(dev))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise DataError(f"The training loss became {loss} (diverged). Lower --lr and start again.", "lr")
        losses.append(loss)
        if bar is not None:
            bar.update(len(idx))
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    clf.eval()
    return losses


@torch.no_grad()
def predict(clf, ids, pad_id: int, batch_size: int) -> np.ndarray:
    """Label logits (N, n_labels) as float32, in input order."""
    dev = next(clf.parameters()).device
    clf.eval()
    out = np.zeros((len(ids), clf.config.num_labels), dtype=np.float32)
    for idx in length_batches([len(x) for x in ids], batch_size, torch.Generator(), shuffle=False):
        with autocast(dev):
            logits = clf(**collate(ids, idx, pad_id, dev)).logits
        out[idx] = logits.float().cpu().numpy()
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def eval_loss(logits: np.ndarray, labels: Sequence[int]) -> float:
    p = softmax(logits)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def save_checkpoint(path, clf, opt, sched, epoch: int, history: list, step_loss: list) -> None:
    """Everything needed to continue after `epoch` (1-based), in one file written atomically."""
    from ..fsio import atomic_write

    state = {"model": clf.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": epoch, "history": history, "step_loss": step_loss}
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path, clf, opt, sched) -> Optional[dict]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    clf.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return state
