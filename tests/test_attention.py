"""`mechscope attention`: the patterns against an eager-attention forward of plain HF, and the four outputs."""
import json
import re

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import mechscope
from mechscope.attention import attention_patterns, view
from mechscope.cli import main
from mechscope.tiny import tiny_hf, tiny_model

from conftest import tiny


def eager_attentions(family, **inputs):
    hf, _ = tiny_hf(family)  # same seed: same weights as tiny(family)
    hf.set_attn_implementation("eager")
    with torch.no_grad():
        return hf(**inputs, output_attentions=True).attentions  # per layer (1, H, T, T)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_patterns_equal_eager_hf(family):
    m = tiny(family)
    text = "Attention, please: 12 tokens."
    r = attention_patterns(m, text, layers="0,2", heads="3,1")
    ids = torch.tensor([m.encode(text)])
    ref = eager_attentions(family, input_ids=ids)
    assert r.ids == ids[0].tolist() and r.layers == [0, 2] and r.heads == [1, 3]
    assert r.pieces == [m.tokenizer.decode([i]) for i in r.ids]
    for L in r.layers:
        torch.testing.assert_close(r.patterns[L], ref[L][0, [1, 3]], rtol=0, atol=1e-6)


def test_bert_pair_uses_token_types():
    m = tiny("bert")
    r = attention_patterns(m, "Hi there.", pair="<b>ok</b>")
    enc = m.tokenizer("Hi there.", "<b>ok</b>", return_token_type_ids=True)
    assert r.ids == enc["input_ids"] and r.segments == enc["token_type_ids"] and 1 in r.segments
    ref = eager_attentions("bert", input_ids=torch.tensor([enc["input_ids"]]),
                           token_type_ids=torch.tensor([enc["token_type_ids"]]))
    without = eager_attentions("bert", input_ids=torch.tensor([enc["input_ids"]]))
    for L in r.layers:
        torch.testing.assert_close(r.patterns[L], ref[L][0], rtol=0, atol=1e-6)
    assert not torch.allclose(ref[0], without[0])  # the token types do change the patterns
    assert bool((r.patterns[0] > 0).all())  # bidirectional: every key gets weight


def test_outputs(tmp_path):
    m = tiny("llama")
    text = 'a <script>x</script> "q" & b'
    res = view(m, text, out=tmp_path / "o", layers="1-2")
    r, paths = res["result"], res["paths"]
    assert sorted(paths) == sorted(["attention.html", "patterns.safetensors", "tokens.json", "grid.png"])
    with safe_open(str(paths["patterns.safetensors"]), "pt") as f:
        assert sorted(f.keys()) == ["blocks.1.attn.hook_pattern", "blocks.2.attn.hook_pattern"]
        t = f.get_tensor("blocks.2.attn.hook_pattern")
        assert t.dtype == torch.float32 and t.shape == (m.cfg.n_heads, len(r.ids), len(r.ids))
        assert json.loads(f.metadata()["heads"]) == list(range(m.cfg.n_heads))
    _, cache = m.run(text, capture=["blocks.2.attn.hook_pattern"])
    torch.testing.assert_close(t, cache["blocks.2.attn.hook_pattern"][0], rtol=0, atol=1e-6)
    tok = json.loads(paths["tokens.json"].read_text())
    assert tok["ids"] == m.encode(text) and tok["pieces"] == m.to_str_tokens(tok["ids"]) and tok["text"] == text
    assert paths["grid.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = paths["attention.html"].read_text()
    assert "<script>x" not in html and "&lt;script&gt;x" in html  # the text, escaped
    assert "http" not in html.lower().replace("http-equiv", "") and " src=" not in html  # nothing to fetch
    # refused when not empty, replaced with overwrite; nothing partial beside the outputs
    with pytest.raises(mechscope.MechscopeError, match="--overwrite"):
        view(m, text, out=tmp_path / "o")
    view(m, "other", out=tmp_path / "o", layers="0", overwrite=True)
    assert json.loads((tmp_path / "o" / "tokens.json").read_text())["text"] == "other"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(paths)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for family in ("llama", "bert"):
        out[family] = str(tmp_path_factory.mktemp("model") / family)
        mechscope.save(tiny_model(family), out[family])
    return out


def test_cli(folders, tmp_path):
    res = CliRunner().invoke(main, ["attention", "Hello world", "--model", folders["bert"], "--pair", "Bye.",
                                    "--layers", "-1", "--heads", "0-1", "--out", str(tmp_path / "a"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["layers"] == [2] and summary["heads"] == [0, 1]
    assert (tmp_path / "a" / "attention.html").exists()


@pytest.mark.parametrize("args, needle", [
    (["--layers", "7"], "--layers|layers"), (["--heads", "2-1"], "reversed"), (["--pair", "x"], "causal"),
    ([], "not empty"),
])
def test_cli_errors_exit_2_and_write_nothing(folders, tmp_path, args, needle):
    out = tmp_path / "b"
    if needle == "not empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    res = CliRunner().invoke(main, ["attention", "Hi", "--model", folders["llama"], "--out", str(out), *args])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert re.search(needle, res.output), res.output
    if needle == "not empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    else:
        assert not out.exists() or not any(out.iterdir())
