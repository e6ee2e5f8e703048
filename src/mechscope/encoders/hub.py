"""Labeled texts from a Hugging Face dataset (`--dataset glue --config sst2`, or a local dataset folder).

The train split trains; `validation` (else `test`) evaluates, after dropping unlabeled rows (label -1, as in GLUE's
test splits). ClassLabel features keep their names; other labels are named by their values, as in files.
"""
from __future__ import annotations

from ..errors import DataError


def _labeled(split, text_field: str, label_field: str, what: str, names=None):
    from ..data.labeled import LabeledTexts

    cols = list(split.column_names)
    for name, flag in ((text_field, "text_field"), (label_field, "label_field")):
        if name not in cols:
            raise DataError(f"{what} has no field {name!r} (--{flag.replace('_', '-')}). Its fields: "
                            f"{', '.join(cols)}.", flag)
    feature = split.features[label_field]
    texts, raw = split[text_field], split[label_field]
    keep = [i for i, y in enumerate(raw) if y is not None and y != -1 and isinstance(texts[i], str)]
    texts, raw = [texts[i] for i in keep], [raw[i] for i in keep]
    if names is None:
        if hasattr(feature, "names"):
            names = list(feature.names)
        else:
            names = sorted({str(y) for y in raw})
            if all(n.lstrip("-").isdigit() for n in names):
                names.sort(key=int)
    if hasattr(feature, "names"):
        raw = [feature.names[y] for y in raw]
    index = {n: i for i, n in enumerate(names)}
    missing = sorted({str(y) for y in raw} - set(index))
    if missing:
        raise DataError(f"{what} has labels the training split lacks: {', '.join(missing[:10])}.", "dataset")
    return LabeledTexts(texts, [index[str(y)] for y in raw], names, what, cols)


def read_hub(dataset: str, config, text_field: str, label_field: str):
    """(train, eval or None, source description) from `datasets.load_dataset(dataset, config)`."""
    import datasets

    try:
        dd = datasets.load_dataset(dataset, config)
    except Exception as err:  # offline, unknown name, missing config: datasets raises many kinds
        raise DataError(f"--dataset {dataset!r}{f' --config {config!r}' if config else ''} cannot be loaded: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} Fix: check the name "
                        "and config on the Hub (this needs network, or the dataset in the local cache), or pass "
                        "--train FILE.", "dataset") from None
    if "train" not in dd:
        raise DataError(f"--dataset {dataset!r} has no 'train' split (its splits: {', '.join(dd)}).", "dataset")
    train = _labeled(dd["train"], text_field, label_field, f"{dataset} train")
    if len(train) == 0 or len(set(train.labels)) < 2:
        raise DataError(f"--dataset {dataset!r}: the train split needs labeled rows of at least two labels.",
                        "dataset")
    ev_name = next((s for s in ("validation", "test") if s in dd), None)
    ev = _labeled(dd[ev_name], text_field, label_field, f"{dataset} {ev_name}", train.label_names) \
        if ev_name else None
    if ev is not None and len(ev) == 0:
        ev, ev_name = None, None  # an unlabeled test split: split the training rows instead
    return train, ev, {"dataset": dataset, "config": config, "eval": ev_name,
                       "fingerprint": getattr(dd["train"], "_fingerprint", None)}
