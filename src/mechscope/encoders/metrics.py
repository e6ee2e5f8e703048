"""Classification metrics computed here (accuracy, macro F1, confusion matrix) and the two baselines a fine-tuned
classifier is judged against: the majority class and a bag-of-words logistic regression, on the same split.

The `evaluate` library fetches its metrics from the Hub and fails offline, hence these few lines.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_labels: int) -> np.ndarray:
    """(n_labels, n_labels) counts: row = true label, column = predicted label."""
    m = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


def macro_f1(m: np.ndarray) -> float:
    """Unweighted mean over labels of F1 = 2 TP / (2 TP + FP + FN); a label never true nor predicted scores 0."""
    tp = np.diag(m).astype(float)
    denom = 2 * tp + (m.sum(0) - tp) + (m.sum(1) - tp)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def scores(y_true: Sequence[int], y_pred: Sequence[int], n_labels: int) -> dict:
    """{accuracy, f1 (macro), confusion (list of rows), n}."""
    m = confusion(y_true, y_pred, n_labels)
    n = int(m.sum())
    return {"accuracy": float(np.trace(m) / n) if n else float("nan"), "f1": macro_f1(m),
            "confusion": m.tolist(), "n": n}


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int], n_labels: int) -> dict:
    """Always predict the most frequent training label."""
    top = int(np.bincount(np.asarray(train_labels), minlength=n_labels).argmax())
    return {"predicts": top, **scores(eval_labels, [top] * len(eval_labels), n_labels)}


def bow_baseline(train_texts, train_labels, eval_texts, eval_labels, n_labels: int, seed: int = 0) -> dict:
    """Word and bigram counts (lower-cased) -> scikit-learn's logistic regression, fit on train, scored on eval."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer(ngram_range=(1, 2), min_df=1)
    x_train = vec.fit_transform(train_texts)
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(x_train, train_labels)
    pred = clf.predict(vec.transform(eval_texts))
    return {"features": int(x_train.shape[1]), **scores(eval_labels, pred.tolist(), n_labels)}
