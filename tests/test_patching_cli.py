"""`mechscope patch` end to end on a tiny saved model (offline)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import mechscope
from mechscope.cli import main
from mechscope.patching import RESULT_FIELDS
from mechscope.tiny import tiny_model

CLEAN, CORRUPT = "The cat sat on a mat", "The dog sat on a mat"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "llama"
    mechscope.save(tiny_model("llama"), path)
    return str(path)


def run(*args):
    res = CliRunner().invoke(main, ["patch", *args], catch_exceptions=False)
    return res.exit_code, res.output


def test_patch_writes_everything_and_json(folder, tmp_path):
    out = tmp_path / "o"
    code, text = run("--model", folder, "--clean", CLEAN, "--corrupt", CORRUPT, "--tokens", "a", "b",
                     "--out", str(out), "--json")
    assert code == 0, text
    data = json.loads(text)
    assert tuple(data) == RESULT_FIELDS
    assert data["kind"] == "resid_post" and data["metric"] == "logit_diff" and data["direction"] == "denoise"
    assert len(data["matrix"]) == 3 and len(data["matrix"][0]) == len(data["tokens"])
    assert json.loads((out / "result.json").read_text()) == data
    for f in ("result.csv", "heatmap.png", "report.html"):
        assert (out / f).stat().st_size > 0
    html = (out / "report.html").read_text()
    assert "mechscope patch --model" in html and "--answers a b" in html


def test_patch_table_echoes_inputs(folder, tmp_path):
    code, text = run("--model", folder, "--clean", CLEAN, "--corrupt", CORRUPT, "--tokens", "a", "b",
                     "--kind", "z", "--positions", "-1", "--metric", "kl", "--out", str(tmp_path))
    assert code == 0, text
    assert CLEAN in text and CORRUPT in text and "kind     z" in text and "A='a'" in text
    assert "wrote" in text and "report.html" in text


def test_patch_attribution_verify(folder, tmp_path):
    code, text = run("--model", folder, "--clean", CLEAN, "--corrupt", CORRUPT, "--tokens", "a", "b",
                     "--method", "attribution", "--verify-top", "4", "--kind", "attn_out", "--out", str(tmp_path))
    assert code == 0, text
    assert "attribution vs exact" in text and "correlation" in text
    assert len(json.loads((tmp_path / "verify.json").read_text())["cells"]) == 4


def test_patch_spec(folder, tmp_path):
    spec = tmp_path / "pairs.yaml"
    spec.write_text("metric: normalized\npairs:\n"
                    "  - {clean: 'The cat sat', corrupt: 'The dog sat', tokens: ['a', 'b']}\n"
                    "  - {clean: 'Our cat ran', corrupt: 'Our dog ran', tokens: ['x', 'y']}\n")
    code, text = run("--model", folder, "--spec", str(spec), "--out", str(tmp_path / "o"), "--json")
    assert code == 0, text
    data = json.loads(text)
    assert data["clean"] == ["The cat sat", "Our cat ran"] and data["metric"] == "normalized"
    assert (tmp_path / "o" / "pairs" / "00" / "result.json").exists()


@pytest.mark.parametrize("args, needle", [
    (["--clean", "The cat sat", "--corrupt", "The mouse sat", "--tokens", "a", "b"], "<< differs"),
    (["--clean", CLEAN, "--corrupt", CORRUPT, "--tokens", "ab", "b"], "not a single token"),
    (["--clean", CLEAN, "--corrupt", CORRUPT, "--tokens", "a", "b", "--verify-top", "3"], "--method attribution"),
    (["--clean", CLEAN, "--tokens", "a", "b"], "Missing --corrupt"),
    (["--clean", CLEAN, "--corrupt", CORRUPT, "--tokens", "a", "b", "--site", "hook_z"], "Choose one of"),
    (["--spec", "/nonexistent/pairs.yaml"], "no such file"),
])
def test_patch_errors_exit_2(folder, tmp_path, args, needle):
    res = CliRunner().invoke(main, ["patch", "--model", folder, "--out", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_patch_help():
    code, text = run("--help")
    assert code == 0 and "--verify-top" in text and "Smith" in text
