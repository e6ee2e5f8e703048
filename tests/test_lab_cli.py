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
