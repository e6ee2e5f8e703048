"""The offline sentiment set: labels follow the negation/contrast logic, split by word, deterministic by seed."""
import csv
import json
import re
from importlib.resources import files

from click.testing import CliRunner

from mechscope.cli import main
from mechscope.data import make_sentiment_data
from mechscope.data.sentiment import TEMPLATES


def _vader():
    """The lexicon read straight from the installed file: {entry: mean rating}."""
    text = (files("vaderSentiment") / "vader_lexicon.txt").read_text(encoding="utf-8")
    return {p[0]: float(p[1]) for p in (line.split("\t") for line in text.splitlines()) if len(p) >= 3}


VADER = _vader()


def _lexicon_words(text):
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w in VADER}


def test_templates_carry_no_rated_word():
    for group in TEMPLATES.values():
        for t in group:
            assert not _lexicon_words(t.replace("{w}", "").replace("{a}", "").replace("{b}", "")), t


def test_labels_follow_negation_and_contrast():
    rows = make_sentiment_data(n=600, seed=3)
    polarity = {True: "positive", False: "negative"}
    for r in rows:
        quoted = re.findall(r'"([a-z]+)"', r["text"])
        if r["form"] == "plain":
            assert len(quoted) == 1 and r["label"] == polarity[VADER[quoted[0]] > 0], r
        elif r["form"] == "negated":
            assert len(quoted) == 1 and r["label"] == polarity[VADER[quoted[0]] < 0], r
            assert re.search(r"\b(not|never|nobody|anything but)\b", r["text"].lower()), r
        else:
            a, b = quoted
            assert ", but " in r["text"] and r["text"].index(a) < r["text"].index(", but ") < r["text"].rindex(b)
            assert (VADER[a] > 0) != (VADER[b] > 0) and r["label"] == polarity[VADER[b] > 0], r
    labels = [r["label"] for r in rows]
    assert labels.count("positive") == labels.count("negative") == 300
    assert {r["form"] for r in rows} == {"plain", "negated", "contrast"}
    assert len({r["text"] for r in rows}) == len(rows)


def test_no_word_in_both_splits():
    rows = make_sentiment_data(n=3000, seed=0, test_fraction=0.25)
    train = set().union(*(_lexicon_words(r["text"]) for r in rows if r["split"] == "train"))
    test = set().union(*(_lexicon_words(r["text"]) for r in rows if r["split"] == "test"))
    assert sum(r["split"] == "test" for r in rows) == 750
    assert len(train) > 1000 and len(test) > 300
    assert not train & test


def test_deterministic_by_seed():
    a, b, c = (make_sentiment_data(n=400, seed=s) for s in (7, 7, 8))
    assert a == b and a != c
    # the word split does not depend on n: a bigger set never puts a test word on the train side
    small_test = set().union(*(_lexicon_words(r["text"]) for r in a if r["split"] == "test"))
    big_train = set().union(*(_lexicon_words(r["text"]) for r in make_sentiment_data(n=2000, seed=7)
                              if r["split"] == "train"))
    assert not small_test & big_train


def test_cli_writes_csv_and_jsonl(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["sentiment-data", "--out", str(tmp_path / "all.csv"), "--n", "200", "--seed", "1"])
    assert res.exit_code == 0, res.output
    with open(tmp_path / "all.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == make_sentiment_data(n=200, seed=1)
    for side in ("train", "test"):
        out = tmp_path / f"{side}.jsonl"
        res = runner.invoke(main, ["sentiment-data", "--out", str(out), "--n", "200", "--seed", "1", "--split", side])
        assert res.exit_code == 0, res.output
        got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert got == [r for r in rows if r["split"] == side]
    res = runner.invoke(main, ["sentiment-data", "--out", str(tmp_path / "all.csv"), "--n", "10"])
    assert res.exit_code == 2 and "--overwrite" in res.output and "Traceback" not in res.output
    assert len((tmp_path / "all.csv").read_text(encoding="utf-8").splitlines()) == 201  # untouched
    res = runner.invoke(main, ["sentiment-data", "--out", str(tmp_path / "x.txt")])
    assert res.exit_code == 2 and ".csv" in res.output and not (tmp_path / "x.txt").exists()
    res = runner.invoke(main, ["sentiment-data", "--out", str(tmp_path / "y.csv"), "--forms", "plain,sarcasm"])
    assert res.exit_code == 2 and "sarcasm" in res.output and not (tmp_path / "y.csv").exists()
