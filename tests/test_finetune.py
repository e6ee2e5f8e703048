"""`finetune` on tiny random models (a few steps): the output folder opens in mechscope and in transformers with the
same logits, metrics.json agrees with scikit-learn on the reopened model's predictions, a resumed run equals an
uninterrupted one, causal LMs classify from the last real token, and bad input is refused before DIR exists."""
import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mechscope
from mechscope.cli import main
from mechscope.encoders import finetune, metrics, training

from conftest import tiny

EVIL = "<script>window.__pwned=1</script>"


def rows(n, seed=0):
    """A task a tiny char-level model learns in a few steps: positive texts are made of letters from the first half
    of the alphabet, negative ones from the second half (plus shared spaces and punctuation)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pos = i % 2 == 0
        chars = list(("abcdefghijkl" if pos else "nopqrstuvwxy") + " .,")
        out.append({"text": "".join(rng.choice(chars, size=int(rng.integers(3, 40)))),
                    "label": "positive" if pos else "negative"})
    return out


def write_csv(path, data, fields=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(data)
    return str(path)


KW = dict(epochs=2, lr=2e-3, batch_size=8, max_length=24, device="cpu", progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ftdata")
    ev = rows(24, seed=1)
    ev[1]["text"] = EVIL + ev[1]["text"]
    return write_csv(d / "train.csv", rows(64)), write_csv(d / "eval.csv", ev), d


@pytest.fixture(scope="module")
def run(data):
    train, ev, d = data
    out = d / "clf"
    return finetune(tiny("bert"), train, ev, out=out, **KW), out


def test_folder_opens_in_transformers_and_mechscope_with_the_same_logits(run, data):
    import transformers as tf

    result, out = run
    assert sorted(p.name for p in out.iterdir()) >= sorted(["config.json", "model.safetensors", "metrics.json",
                                                            "curves.png", "report.html", "tokenizer.json"])
    assert not list(out.parent.glob(".clf*"))  # no partial folder left behind
    texts = [r["text"] for r in csv.DictReader(open(data[1], encoding="utf-8"))]
    hf = tf.AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = tf.AutoTokenizer.from_pretrained(out)
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    m = mechscope.load(str(out), device="cpu")
    assert type(m.hf).__name__ == "BertForSequenceClassification" and not m.has_lm_head
    logits, cache = m.run(texts[:3], capture=["blocks.0.hook_resid_post"])
    enc = tok(texts[:3], padding=True, return_tensors="pt")  # Model.run reads whole texts too
    with torch.no_grad():
        want = hf(**enc).logits
    torch.testing.assert_close(logits, want, rtol=0, atol=1e-5)
    assert cache["blocks.0.hook_resid_post"].shape[-1] == 64


def test_metrics_match_sklearn_on_the_reopened_model(run, data):
    import transformers as tf
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    result, out = run
    saved = json.loads((out / "metrics.json").read_text())
    ev = list(csv.DictReader(open(data[1], encoding="utf-8")))
    hf = tf.AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = tf.AutoTokenizer.from_pretrained(out)
    pred = []
    for r in ev:  # one text at a time: no padding at all
        with torch.no_grad():
            pred.append(int(hf(**tok(r["text"], truncation=True, max_length=24, return_tensors="pt")).logits.argmax()))
    y = [hf.config.label2id[r["label"]] for r in ev]
    assert saved["eval"]["n"] == len(ev) == 24
    assert saved["eval"]["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert saved["eval"]["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert saved["eval"]["confusion"] == confusion_matrix(y, pred).tolist()
    assert saved["label_names"] == ["negative", "positive"]
    assert [h["epoch"] for h in saved["history"]] == [1, 2]
    assert all({"loss", "eval_accuracy"} <= set(h) for h in saved["history"])
    assert saved["settings"]["epochs"] == 2 and saved["settings"]["max_length"] == 24
    assert saved["eval"]["accuracy"] > 0.75  # the task is learnable in two epochs
    assert saved["baselines"]["majority"]["accuracy"] == pytest.approx(0.5)
    # texts longer than 24 tokens ([CLS] + characters + [SEP]) were truncated, and counted
    n_long = sum(len(r["text"]) + 2 > 24 for r in ev)
    assert saved["truncated"]["eval"] == n_long > 0
    worst = saved["worst"][0]
    assert worst["p_label"] == min(w["p_label"] for w in saved["worst"])


def test_metric_helpers_match_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    p[p == 3] = 2  # a label never predicted
    s = metrics.scores(y.tolist(), p.tolist(), 4)
    assert s["confusion"] == confusion_matrix(y, p, labels=range(4)).tolist()
    assert s["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert s["f1"] == pytest.approx(f1_score(y, p, average="macro", labels=range(4), zero_division=0))


def test_report_escapes_text(run):
    html = (run[1] / "report.html").read_text()
    assert EVIL not in html and "&lt;script&gt;" in html
    assert "bag-of-words" in html and "Confusion" in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html


@pytest.mark.heavy  # two more training runs
def test_resume_after_interruption_equals_uninterrupted_run(run, data, monkeypatch):
    """Interrupt after epoch 1's checkpoint; the resumed run ends with the same weights as the fixture's run."""
    from safetensors.torch import load_file

    train, ev, d = data
    out = d / "resumed"
    real = training.predict
    calls = []

    def stop_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(training, "predict", stop_second)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny("bert"), train, ev, out=out, **KW)
    monkeypatch.setattr(training, "predict", real)
    assert not out.exists() and (d / ".resumed.partial" / "checkpoint.pt").exists()
    with pytest.raises(mechscope.MechscopeError, match="--resume"):
        finetune(tiny("bert"), train, ev, out=out, **KW)
    with pytest.raises(mechscope.MechscopeError, match="other settings"):
        finetune(tiny("bert"), train, ev, out=out, resume=True, **dict(KW, lr=1e-3))
    result = finetune(tiny("bert"), train, ev, out=out, resume=True, **KW)
    a, b = load_file(out / "model.safetensors"), load_file(run[1] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in result["history"]] == [h["loss"] for h in run[0]["history"]]


@pytest.mark.parametrize("family", ["llama", pytest.param("gpt2", marks=pytest.mark.heavy)])
def test_causal_lm_classifies_from_last_real_token(family, data, tmp_path):
    import transformers as tf

    train, ev, _ = data
    out = tmp_path / "clf"
    finetune(tiny(family), train, ev, out=out, **dict(KW, epochs=1))
    hf = tf.AutoModelForSequenceClassification.from_pretrained(out).eval()
    m = mechscope.load(str(out), device="cpu")
    texts = ["abc mz", "n", "a much longer text, zz mm"]
    logits, cache = m.run(texts, capture=[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"])  # right-padded
    head = hf.score  # the classification head transformers put on the final normed hidden state
    final = hf.base_model(**{k: v for k, v in m.forward_kwargs(m.batch(texts)).items() if k != "use_cache"})
    for i, t in enumerate(texts):
        alone = torch.tensor([m.encode(t)])
        with torch.no_grad():
            want = hf(input_ids=alone).logits[0]  # no padding: the last token is the last real one
            last = final.last_hidden_state[i, len(m.encode(t)) - 1]
            torch.testing.assert_close(head(last), want, rtol=0, atol=1e-4)
        torch.testing.assert_close(logits[i], want, rtol=0, atol=1e-4)


def test_hub_dataset_from_a_local_dataset_folder(data, tmp_path):
    """--dataset takes what datasets.load_dataset takes; a local folder works offline (train + validation)."""
    folder = tmp_path / "ds"
    folder.mkdir()
    write_csv(folder / "train.csv", rows(32))
    write_csv(folder / "validation.csv", rows(8, seed=2))
    r = CliRunner().invoke(main, ["finetune", "--model", str(_tiny_folder(tmp_path)), "--dataset", str(folder),
                                  "--epochs", "1", "--max-length", "16", "--device", "cpu", "--no-progress",
                                  "--out", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["eval"]["n"] == 8 and saved["settings"]["n_train"] == 32
    assert saved["settings"]["data"]["eval"] == "validation"


def _tiny_folder(tmp_path):
    folder = tmp_path / "tiny-bert"
    if not folder.exists():
        mechscope.save(tiny("bert"), folder)
    return folder


@pytest.mark.parametrize("case", ["missing_field", "one_label", "empty", "non_utf8", "out_not_empty", "offline_hub",
                                  "max_length"])
def test_bad_input_is_one_paragraph_and_writes_nothing(case, tmp_path):
    train = tmp_path / "train.csv"
    write_csv(train, rows(16))
    out = tmp_path / "out"
    args = ["finetune", "--model", str(_tiny_folder(tmp_path)), "--train", str(train), "--out", str(out),
            "--epochs", "1", "--device", "cpu", "--no-progress"]
    want = {"missing_field": "Its fields: text, label", "one_label": "same label", "empty": "empty",
            "non_utf8": "not UTF-8", "out_not_empty": "not empty", "offline_hub": "cannot be loaded",
            "max_length": "more than the model reads"}[case]
    if case == "missing_field":
        args += ["--text-field", "review"]
    elif case == "one_label":
        write_csv(train, [dict(r, label="positive") for r in rows(16)])
    elif case == "empty":
        train.write_bytes(b"")
    elif case == "non_utf8":
        train.write_bytes(b"text,label\nfine,positive\ncaf\xe9 awful,negative\n")
    elif case == "out_not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "offline_hub":
        args = [a for a in args if a not in ("--train", str(train))] + ["--dataset", "no-such-user/no-such-set"]
    elif case == "max_length":
        args += ["--max-length", "100000"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert want in r.output and "Traceback" not in r.output
    if case == "out_not_empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not list(tmp_path.glob(".out*"))
