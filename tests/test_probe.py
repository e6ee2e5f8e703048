"""Probes: pooled features equal a naive per-text HF forward, one forward per batch, a planted signal is found
while its control task is not, and projecting out the probe direction hurts a classifier more than a random one."""
import math
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import tiny
from mechscope.data.labeled import LabeledTexts
from mechscope.encoders.probe import control_labels, pooled_features, probe
from mechscope.model import Model
from mechscope.tiny import char_tokenizer, tiny_config

TEXTS = ["a", "hello there", "the cat sat on the mat", "zq", "longer text with several words in it", "b c"]


def _naive(model, text, layer, module_path=None):
    """One text alone through the plain HF model: hidden_states[layer + 1], or a module's output by a torch hook."""
    ids = torch.tensor([model.tokenizer(text)["input_ids"]])
    got = {}
    handle = None
    if module_path:
        handle = dict(model.hf.named_modules())[module_path].register_forward_hook(
            lambda m, a, o: got.__setitem__("x", o))
    with torch.no_grad():
        out = model.hf(input_ids=ids, output_hidden_states=True)
    if handle:
        handle.remove()
    return (got["x"] if module_path else out.hidden_states[layer + 1])[0]  # (T, D)


def _count_forwards(model):
    calls = []
    return calls, model.hf.register_forward_pre_hook(lambda *a: calls.append(1))


@pytest.mark.parametrize("family,pool", [("bert", "mean"), ("bert", "cls"), ("gpt2", "last"), ("gpt2", "mean")])
def test_pooled_features_equal_naive_forward(family, pool):
    model = tiny(family)
    sites = ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"]
    mlp = "bert.encoder.layer.0.output.dense" if family == "bert" else "transformer.h.0.mlp"
    calls, handle = _count_forwards(model)
    try:
        feats, info = pooled_features(model, TEXTS, sites, pool=pool, batch_size=4)
    finally:
        handle.remove()
    assert len(calls) == info["forwards"] == math.ceil(len(TEXTS) / 4)  # every site, all layers: one forward/batch
    for i, text in enumerate(TEXTS):
        for name, ref in ((sites[0], _naive(model, text, 1)), (sites[1], _naive(model, text, 0, mlp))):
            want = {"mean": ref.mean(0), "cls": ref[0], "last": ref[-1]}[pool]
            torch.testing.assert_close(torch.from_numpy(feats[name][i]), want.float(), atol=2e-5, rtol=1e-4)


def _planted(n=240, seed=0):
    """Texts of random three-letter words; label 1 iff the word 'zzz' occurs (a signal any encoder carries)."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxy") for _ in range(3)) for _ in range(200)]
    texts, labels = [], []
    for i in range(n):
        words = [rng.choice(vocab) for _ in range(5)]
        if i % 2:
            words[rng.randrange(5)] = "zzz"
        texts.append(" ".join(words))
        labels.append(i % 2)
    return LabeledTexts(texts, labels, ["absent", "present"])


def test_planted_signal_found_control_not():
    model = tiny("bert")
    data = _planted()
    calls, handle = _count_forwards(model)
    try:
        r = probe(model, data, sites="resid_post", pool="mean", cv_folds=3, batch_size=32, random_model=False)
    finally:
        handle.remove()
    assert len(calls) == r.info["forwards"] == math.ceil(len(data) / 32)
    s = r.sites["resid_post"]
    assert min(s["accuracy"]) >= 0.9, s
    assert max(s["control_accuracy"]) <= 0.75 and min(s["selectivity"]) >= 0.2, s
    assert r.best["site"] == "resid_post" and r.best["accuracy"] == max(s["accuracy"])
    # shuffled labels: nothing to find, the probe must stay near chance
    rng = np.random.default_rng(1)
    shuffled = LabeledTexts(data.texts, list(rng.permutation(data.labels)), data.label_names)
    r0 = probe(model, shuffled, sites="resid_post", layers="-1", cv_folds=3, random_model=False)
    assert r0.sites["resid_post"]["accuracy"][0] <= 0.7


def test_control_labels_are_a_fixed_map_of_word_types():
    texts = ["good film", "film good", "bad film", "good film"]
    a, b = control_labels(texts, 2, seed=3), control_labels(texts, 2, seed=3)
    assert (a == b).all() and a[0] == a[1] == a[3]  # same bag of word types, same control label
    per_text = control_labels(texts, 5, seed=3, by="texts")
    assert per_text[0] == per_text[3]
    # on templated data the control follows the word that identifies a text, not the template: texts that share
    # their lexicon word share their control label, whatever the template around it
    from mechscope.data import make_sentiment_data

    rows = [r for r in make_sentiment_data(n=600, seed=0) if r["form"] != "contrast"]
    ctl = control_labels([r["text"] for r in rows], 2, seed=0)
    by_word = {}
    for r, c in zip(rows, ctl):
        by_word.setdefault(r["words"], set()).add(int(c))
    assert all(len(v) == 1 for v in by_word.values())
    assert 0.3 < ctl.mean() < 0.7


def _classifier(seed=0):
    """A tiny BERT sequence classifier whose logit difference is (nearly) linear in the last layer's [CLS]."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = tiny_config("bert")
    cfg.num_labels, cfg.id2label, cfg.label2id = 2, {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    hf = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.15)
        hf.bert.pooler.dense.weight.copy_(0.1 * torch.eye(cfg.hidden_size))
        hf.bert.pooler.dense.bias.zero_()
    return Model(hf, char_tokenizer(bert=True), name="tiny-bert-classifier")


def test_ablating_the_probe_direction_hurts_more_than_random():
    model = _classifier()
    texts = _planted(400, seed=2).texts
    with torch.no_grad():
        logits, _ = model.run(texts)
    diff = (logits[:, 1] - logits[:, 0]).numpy() - np.median((logits[:, 1] - logits[:, 0]).numpy())
    keep = np.abs(diff) > np.median(np.abs(diff))  # texts clearly on one side of the model's decision
    labels = (diff[keep] > 0).astype(int)  # the model's own decision, balanced: baseline accuracy 1
    with torch.no_grad():  # shift the bias so that the model predicts exactly these labels
        model.hf.classifier.bias[1] -= float(np.median((logits[:, 1] - logits[:, 0]).numpy()))
    data = LabeledTexts([t for t, k in zip(texts, keep) if k], labels.tolist(), ["neg", "pos"])
    r = probe(model, data, sites="resid_post", layers="-1", pool="cls", cv_folds=3, random_model=False,
              ablate=True, n_random_directions=3)
    a = r.ablation
    assert a["metric"] == "accuracy" and a["labels"] == "by name" and a["layer"] == 2
    assert a["baseline"] >= 0.95, a
    assert a["ablated"] <= 0.7, a
    assert min(a["random_ablated"]) >= 0.85, a
    assert a["drop"] > a["random_drop"] + 0.2


def test_cli_outputs_and_errors(tmp_path):
    import json

    import mechscope
    from mechscope.cli import main

    folder = tmp_path / "model"
    mechscope.save(tiny("bert"), folder)
    data = _planted(120)
    rows = [{"text": t, "label": data.label_names[y], "split": "test" if i % 5 == 0 else "train"}
            for i, (t, y) in enumerate(zip(data.texts, data.labels))]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    runner = CliRunner()
    base = ["probe", "--data", str(path), "--out", str(tmp_path / "out")]
    res = runner.invoke(main, base + ["--model", str(folder), "--sites", "resid_post,mlp_out", "--layers", "0,2",
                                      "--split-field", "split", "--batch-size", "16"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert out["layers"] == [0, 2] and set(out["sites"]) == {"resid_post", "mlp_out"} and out["n_test"] == 24
    for key in ("accuracy", "control_accuracy", "selectivity", "random_model_accuracy", "mean_diff_accuracy"):
        assert len(out["sites"]["mlp_out"][key]) == 2 and all(v is not None for v in out["sites"]["mlp_out"][key])
    assert out["best"]["site"] in ("resid_post", "mlp_out") and out["ablation"] is None
    assert len((tmp_path / "out" / "probe.csv").read_text().splitlines()) == 1 + 4
    assert (tmp_path / "out" / "probe.png").read_bytes()[:4] == b"\x89PNG"
    assert out["label_names"] == ["absent", "present"] and "report.html" in res.output
    # refuses to overwrite; argument and data errors come before any model load (the model path does not exist)
    res = runner.invoke(main, base + ["--model", str(folder)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    for extra, words in ((["--text-field", "sentence"], "Its fields: text, label, split"),
                         (["--sites", "resid_psot"], "resid_post"), (["--pool", "max"], "max"),
                         (["--test-fraction", "1.5"], "between 0 and 1")):
        res = runner.invoke(main, ["probe", "--data", str(path), "--out", str(tmp_path / "o2"),
                                   "--model", str(tmp_path / "no-such-model"), *extra])
        assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output, res.output
        assert not (tmp_path / "o2").exists()
    res = runner.invoke(main, base + ["--model", str(folder), "--out", str(tmp_path / "o3"), "--ablate"])
    assert res.exit_code == 2 and "no classification head" in res.output
    assert not (tmp_path / "o3").exists()


def test_causal_ablation_reads_label_word_logits():
    model = tiny("gpt2")
    data = _planted(80, seed=3)
    r = probe(model, data, sites="resid_post", layers="1", pool="last", cv_folds=2, random_model=False,
              ablate=True, label_words=["x", "y"], n_random_directions=1)
    a = r.ablation
    ids = [model.tokenizer.convert_tokens_to_ids(w) for w in ("x", "y")]
    from mechscope.encoders.probe import split_indices

    _, test = split_indices(np.asarray(data.labels), 0.2, 0)
    diffs = []
    for i in test:
        with torch.no_grad():
            logits = model.hf(input_ids=torch.tensor([model.tokenizer(data.texts[i])["input_ids"]])).logits[0, -1]
        y = data.labels[i]
        diffs.append(float(logits[ids[y]] - logits[ids[1 - y]]))
    assert a["metric"] == "logit_diff" and a["n"] == len(test) == 16
    assert a["baseline"] == pytest.approx(np.mean(diffs), abs=1e-4)
    assert isinstance(a["ablated"], float) and len(a["random_ablated"]) == 1
