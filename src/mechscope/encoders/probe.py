"""Per-layer linear probes with controls: where in the network a label becomes linearly readable.

`probe(model, data, ...)` captures every requested site of every requested layer in ONE forward per batch, pools
each text's activations to one vector per (site, layer), and fits on the train split:

  accuracy               scikit-learn's logistic regression (standardised features, C chosen by k-fold CV)
  control_accuracy       the same probe on a control task (Hewitt & Liang 2019): labels from a fixed random map
                         of word types (a text takes its rarest word's label) or of whole texts
  selectivity            accuracy - control_accuracy: what the representation adds beyond lexical memorisation
  random_model_accuracy  the same probe on a randomly initialised model of the same architecture (fixed seed)
  mean_diff_accuracy     the difference-of-means direction (nearest class mean), no fitting at all

all scored on the held-out split. `ablation` (see `probe_ablate`) checks whether the model uses the direction.
"""
from __future__ import annotations

import copy
import hashlib
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..errors import ConfigError, SiteError
from ..indices import parse_index_list
from ..sites import BLOCK_SITES, available_kinds, short_name
from .training import tokenize_for

POOLS = ("mean", "cls", "last")
CONTROLS = ("words", "texts")
# sites with one vector per token (hook_z and hook_pattern are per head)
PROBE_KINDS = ("resid_pre", "attn_out", "resid_mid", "mlp_post", "mlp_out", "resid_post")
DEFAULT_SITES = ("resid_post", "attn_out", "mlp_out")
METRICS = ("accuracy", "control_accuracy", "selectivity", "random_model_accuracy", "mean_diff_accuracy")


def parse_kinds(sites: Union[str, Sequence[str]]) -> list[str]:
    """'resid_post,attn_out' (or full names 'hook_resid_post') -> site kinds, checked before any model loads."""
    parts = [p.strip() for p in sites.split(",")] if isinstance(sites, str) else [str(p).strip() for p in sites]
    kinds = []
    for p in parts:
        kind = p.removeprefix("blocks.").removeprefix("hook_")
        if kind not in PROBE_KINDS:
            from ..errors import suggest

            raise SiteError(f"sites={p!r} cannot be probed: give block sites with one vector per token, "
                            f"comma-separated: {', '.join(PROBE_KINDS)}. {suggest(kind, PROBE_KINDS)}", "sites")
        if kind not in kinds:
            kinds.append(kind)
    if not kinds:
        raise SiteError("sites is empty: give e.g. 'resid_post,attn_out,mlp_out'.", "sites")
    return sorted(kinds, key=lambda k: BLOCK_SITES[k][2])


def check_settings(pool: str, test_fraction: float, control: str, batch_size: int, max_length: int) -> None:
    if pool not in POOLS:
        raise ConfigError(f"pool={pool!r} is not a pooling: use {', '.join(POOLS)}.", "pool")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction={test_fraction} must be between 0 and 1 (e.g. 0.2).", "test_fraction")
    if control not in CONTROLS:
        raise ConfigError(f"control={control!r}: use 'words' (a random map of word types) or 'texts'.", "control")
    if batch_size < 1 or max_length < 2:
        raise ConfigError(f"batch_size={batch_size} and max_length={max_length} must be at least 1 and 2.",
                          "batch_size" if batch_size < 1 else "max_length")


# ---- features ----------------------------------------------------------------------------------------------------
def pool_tokens(act: torch.Tensor, mask: torch.Tensor, pool: str, last: torch.Tensor) -> torch.Tensor:
    """(B, T, D) activations of a right-padded batch -> (B, D): mean over real tokens, the first token, or the
    last real token (`last`: (B,) index)."""
    if pool == "mean":
        m = mask[..., None].to(act.dtype)  # (B, T, 1)
        return (act * m).sum(1) / m.sum(1)
    if pool == "cls":
        return act[:, 0]
    return act[torch.arange(act.shape[0], device=act.device), last]


def pooled_features(model, texts: Sequence[str], site_names: Sequence[str], pool: str = "mean",
                    batch_size: int = 32, max_length: int = 128) -> tuple[dict[str, np.ndarray], dict]:
    """{site name: (N, D) float32 pooled activations} from one forward per batch (texts sorted by length so that
    batches pad little; rows come back in the input order) and {forwards, truncated, tokens}."""
    rows, truncated = tokenize_for(model, texts, max_length)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    feats = {name: [] for name in site_names}
    forwards = 0
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start:start + batch_size]]
        _, cache = model.run(chunk, capture=list(site_names), logits=False, padding_side="right")
        forwards += 1
        last = cache.last_positions()
        for name in site_names:
            feats[name].append(pool_tokens(cache[name].float(), cache.attention_mask, pool, last).cpu())
    inverse = torch.argsort(torch.tensor(order))
    out = {name: torch.cat(v)[inverse].numpy() for name, v in feats.items()}
    return out, {"forwards": forwards, "truncated": truncated, "tokens": sum(map(len, rows))}


def random_init(model, seed: int = 0):
    """A randomly initialised model of the same architecture and tokenizer (its config, the library's own init)."""
    from ..model import Model

    config = copy.deepcopy(model.hf.config)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = type(model.hf)(config)
    hf = hf.to(device=model.device, dtype=model.dtype)
    return Model(hf, model.tokenizer, name=f"random-init {model.name}", source={"random_init_of": model.source})


# ---- labels, splits, fits ----------------------------------------------------------------------------------------
def _hash_class(key: str, seed: int, n_classes: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{key}".encode()).digest()[:8], "little") % n_classes


def control_labels(texts: Sequence[str], n_classes: int, seed: int = 0, by: str = "words") -> np.ndarray:
    """Control-task labels (Hewitt & Liang): every word type (lower-cased \\w+) gets a fixed random class, and a
    text takes the class of its rarest word type (in the fewest texts here; ties by the type's hash), i.e. of the
    word that identifies it rather than of the words every text shares (templates, function words). A probe can
    only learn this by memorising word identities. With by="texts", each distinct text gets a random class."""
    if by == "texts":
        return np.array([_hash_class(t, seed, n_classes) for t in texts], dtype=np.int64)
    words = [set(re.findall(r"\w+", t.lower())) or {t} for t in texts]
    df: dict = {}
    for ws in words:
        for w in ws:
            df[w] = df.get(w, 0) + 1
    rarest = [min(ws, key=lambda w: (df[w], _hash_class(w, seed, 2**31))) for ws in words]
    return np.array([_hash_class(w, seed, n_classes) for w in rarest], dtype=np.int64)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int,
                  splits: Optional[Sequence[str]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices: the rows marked "test" in `splits` when given, else a stratified random split."""
    idx = np.arange(len(labels))
    if splits is not None:
        test = np.array([str(s).strip().lower() == "test" for s in splits])
        if test.all() or not test.any():
            raise ConfigError("The split field marks no row as 'test' (or every row): it must hold 'test' for the "
                              "held-out rows and anything else (e.g. 'train') for the rest.", "split_field")
        return idx[~test], idx[test]
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    strat = labels if counts[counts > 0].min() >= 2 else None
    try:
        tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=strat)
    except ValueError as err:
        raise ConfigError(f"test_fraction={test_fraction} cannot split {len(labels)} rows ({err}). Give more rows "
                          "or another fraction.", "test_fraction") from None
    return np.sort(tr), np.sort(te)


def _folds(y: np.ndarray, seed: int, k: int = 5):
    from sklearn.model_selection import StratifiedKFold

    smallest = np.bincount(y)[np.bincount(y) > 0].min()
    return StratifiedKFold(n_splits=int(max(2, min(k, smallest))), shuffle=True, random_state=seed)


def fit_logistic(x_tr, y_tr, x_te, y_te, seed: int = 0, cs: Sequence[float] = (1e-3, 1e-2, 1e-1, 1, 10),
                 folds: int = 5) -> dict:
    """Standardise, pick C by stratified k-fold CV on the train split, refit, score held-out.
    Returns {accuracy, C, direction}: `direction` is the (binary) weight vector in the raw feature space."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_tr)) < 2:  # a control map that happens to give one class: predict it
        return {"accuracy": float(np.mean(y_te == y_tr[0])), "C": None, "direction": None}
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegressionCV(Cs=list(cs), cv=_folds(y_tr, seed, folds), max_iter=500, random_state=seed)
    with warnings.catch_warnings():  # version-to-version FutureWarnings and convergence notes from scikit-learn
        warnings.simplefilter("ignore")
        clf.fit(scaler.transform(x_tr), y_tr)
    acc = float(clf.score(scaler.transform(x_te), y_te))
    direction = clf.coef_[0] / scaler.scale_ if clf.coef_.shape[0] == 1 else None
    return {"accuracy": acc, "C": float(np.ravel(clf.C_)[0]), "direction": direction}


def mean_diff_accuracy(x_tr, y_tr, x_te, y_te) -> float:
    """Nearest class mean (for two classes: the difference-of-means direction, threshold at the midpoint)."""
    from sklearn.neighbors import NearestCentroid

    return float(NearestCentroid().fit(x_tr, y_tr).score(x_te, y_te))


# ---- the sweep ---------------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    model: str
    family: str
    pool: str
    kinds: list
    layers: list
    label_names: list
    n_train: int
    n_test: int
    sites: dict                   # kind -> {metric: [value per layer], "C": [...]}
    best: dict                    # {site, layer, accuracy, selectivity}
    majority_accuracy: float      # always predicting the most frequent train label
    control_majority_accuracy: float
    settings: dict
    info: dict                    # forwards, truncated texts, tokens, seconds
    ablation: Optional[dict] = None
    directions: dict = field(default_factory=dict, repr=False)  # (kind, layer) -> raw-space probe direction
    means: dict = field(default_factory=dict, repr=False)       # (kind, layer) -> mean train feature vector

    def to_json(self) -> dict:
        keys = ("model", "family", "pool", "layers", "label_names", "n_train", "n_test", "sites", "best",
                "majority_accuracy", "control_majority_accuracy", "ablation", "settings", "info")
        return {k: getattr(self, k) for k in keys}

    def rows(self) -> list[dict]:
        """One row per (site, layer): the CSV."""
        return [{"site": kind, "layer": layer, **{m: self.sites[kind][m][j] for m in METRICS},
                 "C": self.sites[kind]["C"][j]} for kind in self.kinds for j, layer in enumerate(self.layers)]


def _majority(y_tr, y_te) -> float:
    return float(np.mean(y_te == np.bincount(y_tr).argmax()))


def _resolve(model, kinds, layers, pool) -> list[int]:
    n = model.cfg.n_layers
    chosen = parse_index_list(layers, n, "layers") or list(range(n))
    missing = [k for k in kinds if k not in available_kinds(model.adapter)]
    if missing:
        raise SiteError(f"sites: {', '.join(missing)} do not exist on {model.adapter.family} models (parallel "
                        "attention and MLP have no resid_mid). Drop them from --sites.", "sites")
    if pool == "cls" and model.adapter.causal:
        raise ConfigError(f"pool='cls' reads the first token, which a causal model ({model.adapter.family}) "
                          "computes before seeing the text. Use --pool last (or mean).", "pool")
    return chosen


def _fit_site(feats, rand, y, yc, tr, te, seed, folds) -> dict:
    """The four scores for one (site, layer) feature matrix."""
    fit = fit_logistic(feats[tr], y[tr], feats[te], y[te], seed, folds=folds)
    ctl = fit_logistic(feats[tr], yc[tr], feats[te], yc[te], seed, folds=folds)
    out = {"accuracy": fit["accuracy"], "control_accuracy": ctl["accuracy"],
           "selectivity": fit["accuracy"] - ctl["accuracy"], "C": fit["C"], "_direction": fit["direction"],
           "mean_diff_accuracy": mean_diff_accuracy(feats[tr], y[tr], feats[te], y[te]),
           "random_model_accuracy": None, "_mean": feats[tr].mean(0)}
    if rand is not None:
        out["random_model_accuracy"] = fit_logistic(rand[tr], y[tr], rand[te], y[te], seed, folds=folds)["accuracy"]
    return out


def probe(model, data, *, text_field: str = "text", label_field: str = "label", split_field: Optional[str] = None,
          sites=DEFAULT_SITES, layers=None, pool: str = "mean", test_fraction: float = 0.2, seed: int = 0,
          control: str = "words", random_model: bool = True, ablate: bool = False, label_words=None,
          n_random_directions: int = 5, batch_size: int = 32, max_length: int = 128, cv_folds: int = 5,
          ablate_layer: Optional[int] = None) -> ProbeResult:
    """Probe every (site, layer) of `model` (a Model or a name for mechscope.load) for the labels of `data`
    (a LabeledTexts or a csv/jsonl/parquet path). See the module doc for what is measured."""
    from ..data.labeled import LabeledTexts, read_labeled

    t0 = time.perf_counter()
    kinds = parse_kinds(sites)
    check_settings(pool, test_fraction, control, batch_size, max_length)
    if not isinstance(data, LabeledTexts):
        data = read_labeled(data, text_field, label_field, split_field)
    if isinstance(model, str):
        from ..loading import load

        model = load(model)
    layer_list = _resolve(model, kinds, layers, pool)
    if ablate:
        from .probe_ablate import check_ablation

        check_ablation(model, kinds, data.label_names, label_words)
    y = np.asarray(data.labels)
    tr, te = split_indices(y, test_fraction, seed, data.splits if split_field else None)
    names = {(k, layer): short_name(k, layer) for k in kinds for layer in layer_list}
    feats, info = pooled_features(model, data.texts, list(names.values()), pool, batch_size, max_length)
    rand = None
    if random_model:
        rand, rinfo = pooled_features(random_init(model, seed), data.texts, list(names.values()), pool,
                                      batch_size, max_length)
        info["random_model_forwards"] = rinfo["forwards"]
    yc = control_labels(data.texts, len(data.label_names), seed, control)
    per = {key: _fit_site(feats[name], None if rand is None else rand[name], y, yc, tr, te, seed, cv_folds)
           for key, name in names.items()}
    result = _assemble(model, data, kinds, layer_list, per, y, yc, tr, te, pool, info,
                       dict(sites=kinds, layers=layers or "all", pool=pool, test_fraction=test_fraction, seed=seed,
                            control=control, random_model=random_model, split_field=split_field,
                            batch_size=batch_size, max_length=max_length, cv_folds=cv_folds,
                            data=str(data.path)))
    if ablate:
        from .probe_ablate import ablate_best

        result.ablation = ablate_best(model, result, [data.texts[i] for i in te], y[te], data.label_names,
                                      label_words, seed, n_random_directions, batch_size, max_length,
                                      ablate_layer)
    result.info["seconds"] = time.perf_counter() - t0
    return result


def _assemble(model, data, kinds, layer_list, per, y, yc, tr, te, pool, info, settings) -> ProbeResult:
    sites = {k: {m: [per[(k, layer)][m] for layer in layer_list] for m in METRICS + ("C",)} for k in kinds}
    best_key = max(per, key=lambda key: (per[key]["accuracy"], -key[1]))  # ties: the earliest layer
    best = {"site": best_key[0], "layer": best_key[1], "accuracy": per[best_key]["accuracy"],
            "selectivity": per[best_key]["selectivity"]}
    return ProbeResult(
        model=model.name, family=model.adapter.family, pool=pool, kinds=kinds, layers=list(layer_list),
        label_names=list(data.label_names), n_train=len(tr), n_test=len(te), sites=sites, best=best,
        majority_accuracy=_majority(y[tr], y[te]), control_majority_accuracy=_majority(yc[tr], yc[te]),
        settings=settings, info=info, directions={key: v["_direction"] for key, v in per.items()},
        means={key: v["_mean"] for key, v in per.items()})
