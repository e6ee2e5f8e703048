"""Head scores: planted heads score ~1, every score equals a naive loop over a plain eager HF forward, the causal
check finds the planted induction head, and the command writes its files (or refuses before loading anything)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import tiny
from heads_models import planted_model
from mechscope.attention import SCORE_TYPES, head_scores
from mechscope.attention.heads import prompt_inputs, repeated_inputs, score_heads
from mechscope.cli import main


@pytest.fixture(scope="module")
def planted():
    return planted_model()


def test_planted_heads_score_one_and_others_low(planted):
    r = head_scores(planted, seq_len=10, batch=4, seed=1)
    prev, ind = np.asarray(r.scores["previous_token"]), np.asarray(r.scores["induction"])
    assert prev[0, 0] > 0.99 and ind[1, 0] > 0.99
    others_prev = np.delete(prev.reshape(-1), 0)
    others_ind = np.delete(ind.reshape(-1), 1 * 4 + 0)
    assert others_prev.max() < 0.3 and others_ind.max() < 0.3
    assert r.top("induction", 1)[0][:2] == (1, 0) and r.top("previous_token", 1)[0][:2] == (0, 0)
    # the baseline (same positions, no repeat) removes the induction score but not the positional one
    assert r.baseline["induction"][1][0] < 0.2 and r.baseline["previous_token"][0][0] > 0.99
    assert r.spread["induction"][1][0] < 1e-3


def test_planted_induction_head_is_causal(planted):
    for ablation in ("zero", "mean"):
        r = head_scores(planted, seq_len=10, batch=3, verify=1, ablation=ablation, draws=4)
        v = r.verify
        assert v["top_heads"] == [[1, 0]]
        assert v["loss_before"] < 0.05 and v["increase"] > 3.0
        # the other heads of layer 1 and layer 0's zero heads do nothing; only L0H0 (the previous-token head that
        # feeds the induction head) may matter when a draw picks it
        for d in v["random"]:
            if [0, 0] not in d["heads"]:
                assert abs(d["increase"]) < 1e-4
        assert len(v["random"]) == 4 and all([1, 0] not in d["heads"] for d in v["random"])


def _naive_targets(ids, kind, i):
    """Target key positions of query i, written out as loops (independent of target_masks)."""
    if kind == "previous_token":
        return [i - 1] if i >= 1 else []
    if kind == "current_token":
        return [i] if i >= 1 else []
    if kind == "first_token":
        return [0] if i >= 1 else []
    if kind == "duplicate_token":
        return [j for j in range(i) if ids[j] == ids[i]]
    return [j for j in range(1, i) if ids[j - 1] == ids[i]]  # induction


def _naive_scores(hf, sequences, masks_from):
    """(B, L, 5, H): per sequence alone, eager attention, output_attentions=True, python loops over positions."""
    out = []
    for seq, ref in zip(sequences, masks_from):
        with torch.no_grad():
            att = hf(torch.tensor([seq]), output_attentions=True).attentions  # L x (1, H, T, T)
        per_layer = []
        for a in att:
            per_type = []
            for kind in SCORE_TYPES:
                vals, n = torch.zeros(a.shape[1]), 0
                for i in range(len(seq)):
                    tg = _naive_targets(ref, kind, i)
                    if tg:
                        vals += a[0, :, i, tg].sum(-1)
                        n += 1
                per_type.append(vals / n if n else torch.full_like(vals, float("nan")))
            per_layer.append(torch.stack(per_type))
        out.append(torch.stack(per_layer))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_scores_equal_naive_eager_hf(family):
    from mechscope.tiny import tiny_hf

    model = tiny(family)
    plain, _ = tiny_hf(family)  # same seed, same weights, never touched by mechscope
    plain.config._attn_implementation = "eager"
    for inputs in (repeated_inputs(model, seq_len=7, batch=3, seed=2),
                   prompt_inputs(model, ["abcabcab", "hello hello", "xy"], seed=3)):  # unequal lengths: padding
        r = score_heads(model, inputs, batch_size=2)
        naive = _naive_scores(plain, inputs.tokens, inputs.tokens)
        naive_ctrl = _naive_scores(plain, inputs.control, inputs.tokens)
        for ti, kind in enumerate(SCORE_TYPES):
            np.testing.assert_allclose(r.per_sequence[kind], naive[:, :, ti], atol=1e-5, equal_nan=True)
            np.testing.assert_allclose(r.scores[kind], np.nanmean(naive[:, :, ti], 0), atol=1e-5)
            np.testing.assert_allclose(r.baseline[kind], np.nanmean(naive_ctrl[:, :, ti], 0), atol=1e-5)
            if len(inputs.tokens) > 1 and inputs.kind == "repeated":
                np.testing.assert_allclose(r.spread[kind], np.std(naive[:, :, ti], 0, ddof=1), atol=1e-5)


def test_repeated_inputs_layout():
    model = tiny("gpt2")
    inp = repeated_inputs(model, seq_len=6, batch=2, seed=0)
    bos = model.tokenizer.bos_token_id
    for s, c in zip(inp.tokens, inp.control):
        assert len(s) == len(c) == 13 and s[0] == c[0] == bos
        assert s[1:7] == s[7:] and len(set(s[1:7])) == 6 and c[1:7] == s[1:7]
        assert not set(s[1:]) & set(model.tokenizer.all_special_ids)
    assert repeated_inputs(model, 6, 2, seed=0).tokens == inp.tokens
    assert repeated_inputs(model, 6, 2, seed=1).tokens != inp.tokens


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory, planted):
    from mechscope.loading import save

    d = tmp_path_factory.mktemp("planted")
    save(planted, d / "m")
    return d / "m"


def test_cli_writes_outputs_and_refuses_overwrite(planted_dir, tmp_path):
    out = tmp_path / "h"
    args = ["heads", "--model", str(planted_dir), "--seq-len", "8", "--batch", "3", "--verify", "1",
            "--draws", "2", "--out", str(out), "--device", "cpu"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "L1H0" in res.output and "verify" in res.output
    data = json.loads((out / "heads.json").read_text())
    assert set(SCORE_TYPES) == set(data["scores"]) == set(data["baseline"]) == set(data["spread"])
    assert len(data["inputs"]) == 3 and len(data["inputs"][0]) == 17 and data["model"]
    assert np.asarray(data["scores"]["induction"]).shape == (2, 4) and data["scores"]["induction"][1][0] > 0.99
    assert data["verify"]["top_heads"] == [[1, 0]] and data["verify"]["increase"] > 3
    assert (out / "heads.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text()
    assert "induction" in html and "http://" not in html and "https://" not in html
    before = (out / "heads.json").read_bytes()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "--overwrite" in res.output and (out / "heads.json").read_bytes() == before
    res = CliRunner().invoke(main, args + ["--overwrite", "--seed", "5"])
    assert res.exit_code == 0 and (out / "heads.json").read_bytes() != before


def test_cli_prompts_file(planted_dir, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("abcdefg abcdefg\n\n<script>x</script><script>\n")
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["heads", "--model", str(planted_dir), "--prompts", str(f), "--out", str(out),
                                    "--verify", "1", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["input_info"]["texts"] == ["abcdefg abcdefg", "<script>x</script><script>"]
    assert data["scores"]["induction"][1][0] > 0.9 and data["verify"]["increase"] > 1
    html = (out / "report.html").read_text()
    assert "<script>x" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


@pytest.mark.parametrize("args, flag", [
    (["--seq-len", "1"], "seq_len"), (["--batch", "0"], "batch"), (["--verify", "0"], "verify"),
    (["--draws", "0", "--verify", "2"], "draws"), (["--prompts", "nope.txt"], "prompts"),
    (["--prompts", "p.txt", "--seq-len", "5"], "prompts"), (["--ablation", "half"], "ablation"),
])
def test_cli_argument_errors_before_loading(tmp_path, monkeypatch, args, flag):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("hello\n")
    res = CliRunner().invoke(main, ["heads", "--model", "no/such-model-anywhere", "--out", "o"] + args)
    assert res.exit_code == 2, res.output
    assert flag.replace("_", "-") in res.output or flag in res.output
    assert "no/such-model-anywhere" not in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_verify_k_too_large(planted):
    from mechscope import MechscopeError

    with pytest.raises(MechscopeError, match="K <= 4"):
        head_scores(planted, seq_len=5, batch=1, verify=5)
