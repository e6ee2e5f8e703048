"""A labeled sentiment set that needs no network: template sentences around words of the VADER lexicon.

`vaderSentiment` ships 7,520 entries rated by ten people each on a -4..+4 scale. We keep the plain words whose mean
rating is strong (|mean| >= `min_strength`) and whose raters agreed (std <= `max_std`), and put each into short
review-like sentences of three forms:

    plain     'My review in one word: "dreadful".'                          label = the word's polarity
    negated   'Nobody leaving the theatre would call it "dreadful".'        label = the opposite polarity
    contrast  'The trailer was all "dreadful", but the film was "superb".'  label = the clause after "but"

The split is by lexicon word: the words are shuffled with the seed and a `test_fraction` of them is set aside, so
no word appears in both train and test (a contrast sentence takes both its words from the same side). The same
seed gives the same rows, and the train/test word sets do not depend on `n`.

Accuracy on this set is NOT accuracy on real reviews: the sentences are templated, short and unambiguous, and a
model can score well by recognising the templates and the words. Use it to exercise the tools offline; measure
a model on real text (your own files, or a Hub dataset such as glue/sst2) before drawing conclusions.
"""
from __future__ import annotations

import csv
import io
import json
import random
import re
from pathlib import Path
from typing import Union

from ..errors import ConfigError, DataError
from ..fsio import write_text

LABELS = ("negative", "positive")  # label names, in the order of their integer ids
FORMS = ("plain", "negated", "contrast")
COLUMNS = ("text", "label", "split", "form", "words")
_WORD = re.compile(r"^[a-z]+$")

PLAIN = (
    'My review in one word: "{w}".',
    'If I had to sum up the film in one word, it would be "{w}".',
    'The word that came to mind while watching was "{w}".',
    'Everyone leaving the theatre used the same word: "{w}".',
    'One word for this book: "{w}".',
    'Asked about the meal, she said just one word: "{w}".',
)
NEGATED = (
    'My review in one word: anything but "{w}".',
    'If I had to sum up the film in one word, it would not be "{w}".',
    'The word "{w}" never came to mind while watching.',
    'Nobody leaving the theatre would call it "{w}".',
    'One word for this book? Not "{w}".',
    'Asked about the meal, she said it was not "{w}" at all.',
)
CONTRAST = (  # {a} has the opposite polarity of {b}; the label is {b}'s
    'At first the word that came to mind was "{a}", but by the end it was "{b}".',
    'Some people called it "{a}", but I would call it "{b}".',
    'The trailer was all "{a}", but the film was "{b}".',
    'I expected "{a}", but what I got was "{b}".',
    'It had its "{a}" moments, but overall it was "{b}".',
)
TEMPLATES = {"plain": PLAIN, "negated": NEGATED, "contrast": CONTRAST}


def _lexicon_path() -> Path:
    from importlib.resources import files

    try:
        return Path(str(files("vaderSentiment") / "vader_lexicon.txt"))
    except ModuleNotFoundError:
        raise DataError("The sentiment data needs the `vaderSentiment` package (its lexicon). Install it with "
                        "`pip install vaderSentiment` (`make setup` does).") from None


def sentiment_lexicon(min_strength: float = 1.5, max_std: float = 1.2) -> dict[str, float]:
    """{word: mean rating} for the plain lowercase words rated at least `min_strength` away from neutral by raters
    who agreed to within `max_std` (standard deviation of the ten ratings)."""
    if not 0 < min_strength <= 4:
        raise ConfigError(f"min_strength={min_strength} is outside (0, 4]: ratings run from -4 to +4. Try 1.5.",
                          argument="min_strength")
    if max_std <= 0:
        raise ConfigError(f"max_std={max_std} must be positive. Try 1.2.", argument="max_std")
    words = {}
    for line in _lexicon_path().read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not _WORD.match(parts[0]):
            continue
        mean, std = float(parts[1]), float(parts[2])
        if abs(mean) >= min_strength and std <= max_std:
            words[parts[0]] = mean
    return words


def _template_words() -> set[str]:
    text = " ".join(t for group in TEMPLATES.values() for t in group)
    return set(re.findall(r"[a-z]+", text.lower().replace("{w}", " ").replace("{a}", " ").replace("{b}", " ")))


def split_words(lexicon: dict[str, float], test_fraction: float, seed: int) -> dict[str, dict[str, list[str]]]:
    """{"train"|"test": {"positive"|"negative": [words]}}: a seeded shuffle of the words, cut by `test_fraction`
    within each polarity (so both sides keep both polarities)."""
    rng = random.Random(f"mechscope-sentiment-split-{seed}")
    out = {"train": {}, "test": {}}
    for label in LABELS:
        pool = sorted(w for w, m in lexicon.items() if (m > 0) == (label == "positive"))
        rng.shuffle(pool)
        n_test = round(len(pool) * test_fraction)
        out["test"][label], out["train"][label] = pool[:n_test], pool[n_test:]
    return out


class _Draw:
    """Words of one split and polarity, drawn in a seeded order and reshuffled when used up (spreads use evenly)."""

    def __init__(self, words: list[str], rng: random.Random):
        self.words, self.rng, self.queue = list(words), rng, []

    def __call__(self) -> str:
        if not self.queue:
            self.queue = list(self.words)
            self.rng.shuffle(self.queue)
        return self.queue.pop()


def _rows_for_split(name: str, words: dict[str, list[str]], n: int, forms: tuple, rng: random.Random) -> list[dict]:
    draw = {label: _Draw(words[label], rng) for label in LABELS}
    rows, seen = [], set()
    for i in range(n):
        label, form = LABELS[i % 2], forms[(i // 2) % len(forms)]  # balanced labels and forms
        other = LABELS[1 - LABELS.index(label)]
        for _ in range(20):  # redraw on the rare duplicate sentence
            template = rng.choice(TEMPLATES[form])
            if form == "plain":
                used = [draw[label]()]
                text = template.format(w=used[0])
            elif form == "negated":
                used = [draw[other]()]
                text = template.format(w=used[0])
            else:
                used = [draw[other](), draw[label]()]
                text = template.format(a=used[0], b=used[1])
            if text not in seen:
                break
        seen.add(text)
        rows.append({"text": text, "label": label, "split": name, "form": form, "words": " ".join(used)})
    rng.shuffle(rows)
    return rows


def make_sentiment_data(n: int = 2000, seed: int = 0, test_fraction: float = 0.2, forms=FORMS,
                        min_strength: float = 1.5, max_std: float = 1.2) -> list[dict]:
    """`n` labeled rows {text, label, split, form, words}: train rows first, then test rows (`test_fraction` of
    `n`, rounded), each side shuffled. Labels are "negative"/"positive", balanced; forms cycle evenly.
    Deterministic in `seed`; no lexicon word is in both splits. Not a stand-in for real reviews (module doc)."""
    if n < 2:
        raise ConfigError(f"n={n}: ask for at least 2 rows (one per label).", argument="n")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction={test_fraction} must be in [0, 1). Try 0.2.", argument="test_fraction")
    forms = tuple(forms)
    bad = [f for f in forms if f not in FORMS]
    if bad or not forms:
        raise ConfigError(f"forms={list(forms)}: choose among {', '.join(FORMS)}.", argument="forms")
    lexicon = sentiment_lexicon(min_strength, max_std)
    for w in _template_words():
        lexicon.pop(w, None)  # a template's own words never fill a slot
    sides = split_words(lexicon, test_fraction, seed)
    n_test = round(n * test_fraction)
    rows = []
    for name, count in (("train", n - n_test), ("test", n_test)):
        if count and not all(sides[name][label] for label in LABELS):
            raise ConfigError(f"min_strength={min_strength}, max_std={max_std} leave no {name} words of one "
                              "polarity. Loosen them (defaults 1.5 and 1.2).", argument="min_strength")
        rows += _rows_for_split(name, sides[name], count, forms, random.Random(f"mechscope-sentiment-{name}-{seed}"))
    return rows


def write_rows(rows: list[dict], path: Union[str, Path]) -> Path:
    """Rows to `path` as .csv (header = the columns) or .jsonl (one object per line), written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    elif suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        raise ConfigError(f"out={str(path)!r}: unsupported file type {suffix or '(none)'!r}. End the name in .csv "
                          "or .jsonl.", argument="out")
    return write_text(path, text)
