"""`mechscope lab` commands through click's CliRunner."""
from click.testing import CliRunner
from PIL import Image

from mechscope.cli import main


def test_lab_pe_and_attention_write_pngs(tmp_path):
    r = CliRunner().invoke(main, ["lab", "pe", "--out", str(tmp_path), "--positions", "40", "--d-model", "16"])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "positional_encoding.png").format == "PNG"
    r = CliRunner().invoke(main, ["lab", "attention", "--out", str(tmp_path), "--causal"])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "attention.png").size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention.png", "positional_encoding.png"]


def test_lab_bad_input_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["lab", "pe", "--out", str(tmp_path), "--d-model", "7"])
    assert r.exit_code == 2 and "--d-model 7" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["lab", "attention", "--out", str(tmp_path), "--text", "  "])
    assert r.exit_code == 2 and "--text" in r.output
    assert not any(tmp_path.iterdir())


STUDENT = '''
from mechscope.lab import from_scratch

def forward(input_ids, record, model):
    return from_scratch(model)(input_ids, record)

def no_bias(input_ids, record, model):
    s = from_scratch(model)
    for key in [k for k in s.w if k.endswith("attn.c_proj.bias")]:
        s.w[key] = s.w[key] + 0.5  # a wrong output bias
    return s(input_ids, record)

def crash(input_ids, record):
    return input_ids @ input_ids
'''


def test_lab_compare_cli(tmp_path):
    import json

    import mechscope
    from mechscope.tiny import tiny_model

    mechscope.save(tiny_model("gpt2"), tmp_path / "model")
    (tmp_path / "me.py").write_text(STUDENT)
    base = ["lab", "compare", "--model", str(tmp_path / "model"), "--prompt", "Hello there"]
    r = CliRunner().invoke(main, base + ["--student", f"{tmp_path}/me.py:forward"])
    assert r.exit_code == 0, r.output
    assert "blocks.2.hook_resid_post" in r.output and "All sites match." in r.output
    r = CliRunner().invoke(main, base + ["--student", f"{tmp_path}/me.py:no_bias", "--json"])
    assert r.exit_code == 1
    out = json.loads(r.output)
    assert out["first_divergence"] == "blocks.0.hook_attn_out" and "bias" in out["hint"]
    r = CliRunner().invoke(main, base + ["--student", f"{tmp_path}/me.py:forwrd"])
    assert r.exit_code == 2 and "forward, no_bias" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, base + ["--student", f"{tmp_path}/me.py:crash"])
    assert r.exit_code == 2 and "RuntimeError" in r.output and "me.py line 14" in r.output
