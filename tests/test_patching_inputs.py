"""Patching's inputs and outputs: strict index lists, refusing to overwrite, specs checked up front, answers without
their leading space, what the attribution check covers, raw values beside normalized ones, the deprecated names."""
from __future__ import annotations

import json
import types
import warnings

import pytest
import torch
from click.testing import CliRunner

import mechscope
from mechscope.cli import main
from mechscope.errors import ConfigError
from mechscope.patching import save_result, sweep, sweep_spec
from mechscope.patching.attribution import pearson
from mechscope.patching.experiment import space_warnings
from mechscope.tiny import tiny_model

CLEAN, CORRUPT = "The cat sat on", "The dog sat on"


@pytest.fixture(scope="module")
def m():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, m):
    path = tmp_path_factory.mktemp("tiny") / "llama"
    mechscope.save(m, path)
    return str(path)


def patch(*args):
    res = CliRunner().invoke(main, ["patch", *args])
    return res.exit_code, res.output


@pytest.mark.parametrize("flag", ["--layers", "--positions"])
def test_reversed_range_is_an_error_before_the_model_loads(tmp_path, flag):
    out = tmp_path / "o"
    code, text = patch("--model", str(tmp_path / "no-such-model"), "--clean", CLEAN, "--corrupt", CORRUPT,
                       "--answers", "a", "b", flag, "5-2", "--out", str(out))
    assert code == 2 and "reversed" in text and "2-5" in text and "Traceback" not in text
    assert not out.exists()


def test_layer_out_of_range_names_the_layer_asked_for(m):
    with pytest.raises(ConfigError) as err:
        sweep(m, CLEAN, CORRUPT, ("a", "b"), layers="0-40")
    assert "40" in str(err.value) and f"0 to {m.cfg.n_layers - 1}" in str(err.value)
    assert err.value.argument == "layers"


def test_empty_prompts_are_empty_not_missing(folder, tmp_path):
    code, text = patch("--model", folder, "--clean", "", "--corrupt", "", "--answers", "a", "b",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and "empty" in text and "Missing" not in text


def test_an_earlier_result_is_kept_unless_overwrite(folder, tmp_path):
    out = tmp_path / "o"
    args = ("--model", folder, "--clean", CLEAN, "--corrupt", CORRUPT, "--answers", "a", "b", "--layers", "0",
            "--out", str(out))
    assert patch(*args)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, text = patch(*args[:-2], "--layers", "1", "--out", str(out))
    assert code == 2 and "already holds" in text and "--overwrite" in text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, text = patch(*args[:-2], "--layers", "1", "--out", str(out), "--overwrite")
    assert code == 0, text
    assert json.loads((out / "result.json").read_text())["layers"] == [1]
    with pytest.raises(ConfigError):  # the Python API refuses too
        save_result(sweep(mechscope.load(folder), CLEAN, CORRUPT, ("a", "b"), layers="0"), out)


def _spec(tmp_path, pairs):
    path = tmp_path / "pairs.yaml"
    path.write_text("pairs:\n" + "".join(f"  - {{clean: '{c}', corrupt: '{k}', answers: {a}}}\n"
                                         for c, k, a in pairs))
    return str(path)


def test_a_bad_pair_is_named_before_any_pair_runs(folder, tmp_path):
    spec = _spec(tmp_path, [(CLEAN, CORRUPT, "['a', 'b']"), ("Our cat ran", "Our dog ran", "['xy', 'b']")])
    code, text = patch("--model", folder, "--spec", spec, "--out", str(tmp_path / "o"))
    assert code == 2 and "pair 1" in text and "not a single token" in text
    assert not (tmp_path / "o").exists()
    spec = _spec(tmp_path, [(CLEAN, CORRUPT, "['a', 'b']"), ("A cat", "A dog", "['a', 'b']")])
    code, text = patch("--model", folder, "--spec", spec, "--out", str(tmp_path / "o"))
    assert code == 2 and "different shapes" in text and "Nothing was run" in text
    assert not (tmp_path / "o").exists()


def test_each_pair_is_handed_over_as_it_finishes(m):
    spec = {"pairs": [{"clean": CLEAN, "corrupt": CORRUPT, "answers": ["a", "b"]},
                      {"clean": "The cow ran on", "corrupt": "The pig ran on", "answers": ["x", "y"]}]}
    seen = []
    res = sweep_spec(m, spec, on_pair=lambda i, r: seen.append((i, r.clean)), layers="0")
    assert seen == [(0, CLEAN), (1, "The cow ran on")] and len(res.pairs) == 2


def test_answer_without_its_space_warns_with_both_ids_and_probabilities():
    vocab = {"Paris": 5, " Paris": 7, " Rome": 9}
    tok = lambda text, add_special_tokens=False: {"input_ids": [vocab[text]] if text in vocab else [1, 2]}  # noqa
    model = types.SimpleNamespace(tokenizer=tok)
    logits = torch.zeros(10)
    logits[7] = 3.0
    notes = space_warnings(model, ["Paris", " Rome"], [5, 9], logits)
    p = torch.softmax(logits, -1)
    assert len(notes) == 1 and "id 5" in notes[0] and "id 7" in notes[0]
    assert f"p={float(p[7]):.4g}" in notes[0] and f"p={float(p[5]):.4g}" in notes[0]


def test_verify_top_all_covers_every_cell_and_says_so(m):
    exact = sweep(m, CLEAN, CORRUPT, ("a", "b"), kind="resid_pre")
    with pytest.warns(UserWarning, match="linear approximation"):
        some = sweep(m, CLEAN, CORRUPT, ("a", "b"), kind="resid_pre", method="attribution", verify_top=3)
    assert "3 verified cells only" in some.verify_scope and len(some.verify) == 3
    every = sweep(m, CLEAN, CORRUPT, ("a", "b"), kind="resid_pre", method="attribution", verify_top="all")
    n = len(exact.layers) * len(exact.columns)
    assert len(every.verify) == n and every.verify_scope == f"all {n} cells"
    by_cell = {(v["layer"], v["column"]): v for v in every.verify}
    flat_exact = [exact.matrix[i][j] for i, L in enumerate(exact.layers) for j, c in enumerate(exact.columns)]
    flat_attr = [every.matrix[i][j] for i, L in enumerate(exact.layers) for j, c in enumerate(exact.columns)]
    for i, L in enumerate(exact.layers):
        for j, c in enumerate(exact.columns):
            assert abs(by_cell[(L, c)]["exact"] - exact.matrix[i][j]) < 1e-4
    assert abs(every.verify_correlation - pearson(flat_attr, flat_exact)) < 1e-4


def test_normalized_keeps_the_raw_logit_differences_and_corrupt_tokens(m, tmp_path):
    norm = sweep(m, CLEAN, CORRUPT, ("a", "b"), metric="normalized", layers="0,2")
    ld = sweep(m, CLEAN, CORRUPT, ("a", "b"), metric="logit_diff", layers="0,2")
    assert norm.clean_value == pytest.approx(1.0) and norm.corrupt_value == pytest.approx(0.0)
    assert norm.raw["clean_value"] == pytest.approx(ld.clean_value, abs=1e-5)
    assert norm.raw["corrupt_value"] == pytest.approx(ld.corrupt_value, abs=1e-5)
    assert torch.allclose(torch.tensor(norm.raw["matrix"]).double(), torch.tensor(ld.matrix).double(), atol=1e-4)
    save_result(norm, tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert [t["id"] for t in data["corrupt_tokens"]] == m.encode(CORRUPT)
    assert data["raw"]["matrix"] == norm.raw["matrix"]


def test_top_rows_share_the_next_token_schema(m):
    res = sweep(m, CLEAN, CORRUPT, ("a", "b"), layers="0")
    with torch.no_grad():
        logits = m.hf(torch.tensor([m.encode(CLEAN)])).logits[0, -1].float()
    row = res.clean_top[0]
    assert set(row) == {"rank", "id", "token", "logit", "prob"} and row["rank"] == 1
    assert row["id"] == int(logits.argmax()) and row["logit"] == pytest.approx(float(logits.max()), abs=1e-4)


def test_deprecated_names_still_work(m):
    new = sweep(m, CLEAN, CORRUPT, ("a", "b"), kind="attn_out", layers="1")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        old = sweep(m, CLEAN, CORRUPT, tokens=("a", "b"), site="attn_out", layers="1")
        assert old.site == "attn_out" and old.metric_tokens == old.answers
    assert old.matrix == new.matrix
    assert sum(issubclass(w.category, DeprecationWarning) for w in seen) >= 3


def test_a_full_site_name_as_kind_gets_a_hint(m):
    with pytest.raises(mechscope.MechscopeError, match="full site name"):
        sweep(m, CLEAN, CORRUPT, ("a", "b"), kind="blocks.0.hook_resid_post")
