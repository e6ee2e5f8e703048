"""Does the model use the probe's direction? Project it out of the residual stream and measure the damage.

The best layer's logistic-probe direction u (unit, raw activation space) is removed from every position of that
layer's residual-stream site through mechscope's patch API (an intervention on the site, one forward per batch):
x <- x - (x . u - m) u, where m is the mean of the pooled training features along u. The component along u is
thus set to its average: the variation the probe reads is gone, the average offset (which every later layer
expects) is kept, so removing a direction no model relies on costs little. The damage is measured on the
held-out texts:

  a sequence classifier (e.g. the output of `mechscope finetune`): its accuracy on the labels
  a causal LM: the mean logit difference, at the last token, of the true label's word minus the other label's

and compared with removing random unit directions (same layer, fixed seed). A probe direction the model relies
on drops the metric far more than a random one; a readable-but-unused direction does not.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..sites import short_name
from ..tokens import single_token_id
from .training import tokenize_for

RESID_KINDS = ("resid_post", "resid_mid", "resid_pre")


def is_classifier(model) -> bool:
    return type(model.hf).__name__.endswith("ForSequenceClassification")


def _class_ids(model, label_names: Sequence[str]) -> tuple[list[int], str]:
    """The classifier's class id for each data label: by name when the model's id2label has them, else by
    position when the counts agree."""
    id2label = {int(k): str(v) for k, v in (model.hf.config.id2label or {}).items()}
    by_name = {v: k for k, v in id2label.items()}
    if all(n in by_name for n in label_names):
        return [by_name[n] for n in label_names], "by name"
    if len(id2label) == len(label_names):
        return list(range(len(label_names))), "by position (the model's label names differ from the data's)"
    raise ConfigError(f"ablate: the classifier has {len(id2label)} labels ({', '.join(id2label.values())}), the "
                      f"data {len(label_names)} ({', '.join(label_names)}). Probe it with data of its labels.",
                      "ablate")


def _label_token_ids(model, label_names, label_words) -> list[int]:
    words = list(label_words) if label_words else [" " + n for n in label_names]
    if len(words) != len(label_names):
        raise ConfigError(f"label_words={words!r}: give one word per label ({', '.join(label_names)}).",
                          "label_words")
    return [single_token_id(model.tokenizer, w, "label_words", warn=False) for w in words]


def check_ablation(model, kinds: Sequence[str], label_names: Sequence[str], label_words=None) -> None:
    """Every reason the ablation cannot run, raised before any forward."""
    if not any(k in kinds for k in RESID_KINDS):
        raise ConfigError("ablate needs a residual-stream site among --sites (resid_post, resid_mid or resid_pre).",
                          "ablate")
    if len(label_names) != 2:
        raise ConfigError(f"ablate removes one direction, so it needs exactly two labels; the data has "
                          f"{len(label_names)} ({', '.join(label_names)}).", "ablate")
    if is_classifier(model):
        _class_ids(model, label_names)
    elif model.adapter.causal:
        _label_token_ids(model, label_names, label_words)
    else:
        raise ConfigError(f"ablate: {model.name} has no classification head (a bare encoder or masked LM), so "
                          "there is no prediction to damage. Fine-tune it first (`mechscope finetune`) and probe "
                          "the fine-tuned folder, or run without --ablate.", "ablate")


def _projector(u: torch.Tensor, mean: torch.Tensor):
    """x -> x - (x . u - mean . u) u for a unit vector u: the component along u replaced by its mean."""
    m = float(mean @ u)

    def remove(act: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        w = u.to(act.dtype)
        return act - ((act @ w) - m)[..., None] * w

    return remove


def _metric(model, rows, target, site, fn, batch_size, token_ids: Optional[list]) -> float:
    """Accuracy of a classifier, or mean true-minus-other logit difference of a causal LM, over `rows`."""
    total = 0.0
    for start in range(0, len(rows), batch_size):
        logits, cache = model.run(rows[start:start + batch_size], patch={site: fn} if fn else None)
        t = torch.as_tensor(target[start:start + batch_size], device=logits.device)
        if token_ids is None:  # (B, n_labels)
            total += float((logits.argmax(-1) == t).sum())
        else:  # (B, T, V) -> the last real token's logits of the two label words
            last = logits[torch.arange(len(t)), cache.last_positions()].float()  # (B, V)
            words = last[:, token_ids]  # (B, 2)
            total += float((words.gather(1, t[:, None]) - words.gather(1, 1 - t[:, None])).sum())
    return total / len(rows)


def ablate_best(model, result, texts: Sequence[str], labels: np.ndarray, label_names, label_words, seed: int,
                n_random: int, batch_size: int, max_length: int, layer: Optional[int] = None) -> dict:
    """Project the best (or the given) layer's probe direction out of its residual site; metric before/after,
    against `n_random` random directions."""
    kind = next(k for k in RESID_KINDS if k in result.kinds)
    if layer is None:
        accs = result.sites[kind]["accuracy"]
        layer = result.layers[int(np.argmax(accs))]
    if layer not in result.layers:
        raise ConfigError(f"ablate_layer={layer} was not probed (layers {result.layers}).", "ablate_layer")
    site = short_name(kind, layer)
    direction = torch.as_tensor(result.directions[(kind, layer)], dtype=torch.float32, device=model.device)
    mean = torch.as_tensor(result.means[(kind, layer)], dtype=torch.float32, device=model.device)
    rows, _ = tokenize_for(model, texts, max_length)
    if is_classifier(model):
        ids, how = _class_ids(model, label_names)
        target, token_ids, metric = np.asarray([ids[i] for i in labels]), None, "accuracy"
    else:
        token_ids, how, target, metric = _label_token_ids(model, label_names, label_words), "label words", \
            np.asarray(labels), "logit_diff"
    run = lambda fn: _metric(model, rows, target, site, fn, batch_size, token_ids)  # noqa: E731
    baseline, ablated = run(None), run(_projector(direction / direction.norm(), mean))
    gen = torch.Generator().manual_seed(seed)
    randoms = []
    for _ in range(n_random):
        r = torch.randn(direction.shape[0], generator=gen).to(model.device)
        randoms.append(run(_projector(r / r.norm(), mean)))
    return {"site": site, "layer": layer, "metric": metric, "labels": how, "n": len(rows), "baseline": baseline,
            "ablated": ablated, "drop": baseline - ablated, "random_ablated": randoms,
            "random_drop": baseline - float(np.mean(randoms)) if randoms else None}
