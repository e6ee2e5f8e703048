"""What `finetune` writes beside the model: metrics.json, curves.png and report.html (one self-contained page:
the curves as an embedded PNG, the confusion matrix, the baselines and the worst-classified examples; every text
escaped through htmlkit)."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import htmlkit
from ..fsio import save_figure, write_json, write_text
from .training import softmax

N_WORST = 20


def worst_examples(texts: Sequence[str], labels: Sequence[int], logits: np.ndarray, names: Sequence[str],
                   k: int = N_WORST) -> list[dict]:
    """The k evaluation texts whose true label got the lowest probability."""
    p = softmax(logits)
    p_true = p[np.arange(len(labels)), np.asarray(labels)]
    order = np.argsort(p_true, kind="stable")[:k]
    return [{"index": int(i), "text": texts[i], "label": names[labels[i]], "predicted": names[int(p[i].argmax())],
             "p_label": float(p_true[i])} for i in order]


def plot_curves(results: dict):
    """Training loss per step (and its mean per epoch) and evaluation accuracy per epoch, with the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist, steps = results["history"], results["step_loss"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(range(1, len(steps) + 1), steps, lw=0.8, alpha=0.6, label="train loss (step)")
    per = len(steps) / max(1, len(hist))
    a.plot([h["epoch"] * per for h in hist], [h["loss"] for h in hist], "o-", label="train loss (epoch mean)")
    a.plot([h["epoch"] * per for h in hist], [h["eval_loss"] for h in hist], "s--", label="eval loss")
    a.set_xlabel("step")
    a.set_ylabel("cross-entropy")
    a.legend(fontsize=8)
    b.plot([h["epoch"] for h in hist], [h["eval_accuracy"] for h in hist], "o-", label="fine-tuned")
    for name, style in (("majority", ":"), ("bag_of_words_logreg", "--")):
        b.axhline(results["baselines"][name]["accuracy"], ls=style, color="grey", label=name.replace("_", " "))
    b.set_xlabel("epoch")
    b.set_ylabel("eval accuracy")
    b.set_ylim(0, 1.02)
    b.set_xticks([h["epoch"] for h in hist])
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _confusion_table(conf: list, names: Sequence[str]) -> str:
    m = np.asarray(conf, dtype=float)
    top = m.max() or 1.0
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{htmlkit.esc(n)}</th>" for n in names) + "</tr>"
    rows = []
    for i, n in enumerate(names):
        cells = "".join(f'<td style="background:rgba(40,90,200,{0.1 + 0.8 * v / top:.2f})">{int(v)}</td>'
                        for v in m[i])
        rows.append(f"<tr><th>{htmlkit.esc(n)}</th>{cells}</tr>")
    return f'<table class="conf">{head}{"".join(rows)}</table>'


def render_html(results: dict, png: bytes) -> str:
    s, ev, base = results["settings"], results["eval"], results["baselines"]
    summary = htmlkit.table([
        ("fine-tuned " + s["model"], f"{ev['accuracy']:.4f}", f"{ev['f1']:.4f}"),
        ("majority class (" + results["label_names"][base["majority"]["predicts"]] + ")",
         f"{base['majority']['accuracy']:.4f}", f"{base['majority']['f1']:.4f}"),
        ("bag-of-words logistic regression", f"{base['bag_of_words_logreg']['accuracy']:.4f}",
         f"{base['bag_of_words_logreg']['f1']:.4f}"),
    ], head=("model", "eval accuracy", "macro F1"))
    history = htmlkit.table([(h["epoch"], f"{h['loss']:.4f}", f"{h['eval_loss']:.4f}", f"{h['eval_accuracy']:.4f}",
                              f"{h['eval_f1']:.4f}", f"{h['examples_per_s']:.1f}") for h in results["history"]],
                            head=("epoch", "train loss", "eval loss", "eval accuracy", "macro F1", "examples/s"))
    worst = htmlkit.table([(w["index"], w["text"], w["label"], w["predicted"], f"{w['p_label']:.3f}")
                           for w in results["worst"]], head=("#", "text", "label", "predicted", "P(label)"))
    t = results["truncated"]
    b64 = base64.b64encode(png).decode()
    settings = htmlkit.table([(k, v) for k, v in s.items() if k not in ("model_source",)], head=("setting", "value"))
    body = (f"<h1>Fine-tuning {htmlkit.esc(s['model'])}: {htmlkit.esc(', '.join(results['label_names']))}</h1>"
            f"<p class=muted>{s['n_train']} training and {ev['n']} evaluation texts; {t['train']} training and "
            f"{t['eval']} evaluation texts were truncated to {t['max_length']} tokens.</p>"
            f"<h2>Evaluation, against baselines on the same split</h2>{summary}"
            f"<h2>Curves</h2><img alt=\"training curves\" src=\"data:image/png;base64,{b64}\">"
            f"<h2>Per epoch</h2>{history}"
            f"<h2>Confusion matrix (evaluation)</h2>{_confusion_table(ev['confusion'], results['label_names'])}"
            f"<h2>Worst-classified evaluation examples</h2>{worst}"
            f"<h2>Settings</h2>{settings}")
    css = "img{max-width:100%}.conf td{text-align:right;min-width:3em}"
    return htmlkit.page(f"finetune {s['model']}", body, css=css)


def write_all(folder: Path, results: dict) -> None:
    """metrics.json, curves.png, report.html into `folder`."""
    import matplotlib.pyplot as plt

    write_json(folder / "metrics.json", results)
    fig = plot_curves(results)
    try:
        save_figure(fig, folder / "curves.png", dpi=100)
    finally:
        plt.close(fig)
    write_text(folder / "report.html", render_html(results, (folder / "curves.png").read_bytes()))
