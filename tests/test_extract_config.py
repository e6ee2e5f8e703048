"""The extraction's one config (`ExtractConfig`), its planning step (no model) and its resume rules: every setting
compared on every resume, finished or not, each refusal naming the key; argument errors before the model load; a
Ctrl-C stays a KeyboardInterrupt and leaves a resumable folder."""
import json

import pytest
from click.testing import CliRunner

import mechscope
from mechscope import ActivationDataset
from mechscope.cli import main
from mechscope.errors import ConfigError
from mechscope.extract import storage
from mechscope.extract.api import plan, run
from mechscope.extract.config import ExtractConfig

from conftest import tiny

DOCS = ["The quick brown fox jumps over the lazy dog.", "Hi!", "A much longer document, " * 6 + "which ends here.",
        "Short one.", "Numbers 1 2 3 4 5 6 7 8 9 and symbols #$%&.", "Medium length text about models."]
MLP = "blocks.1.hook_mlp_out"
KW = dict(max_length=40, batch_tokens=64, shard_tokens=60, progress=False)


def _tree(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "run.json")}


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fail the test if anything loads a model."""
    import mechscope.loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mechscope.loading, "load", refuse)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model saved to a folder (for the CLI), a corpus file and a finished dataset made from them."""
    root = tmp_path_factory.mktemp("cfg")
    model_dir = mechscope.save(tiny("gpt2"), root / "model")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(DOCS) + "\n")
    args = ["extract", "-m", str(model_dir), "--sites", MLP, "--input", str(corpus), "--max-length", "40",
            "--no-progress", "--device", "cpu"]
    r = CliRunner().invoke(main, args + ["--out", str(root / "acts")])
    assert r.exit_code == 0, r.output
    return root, args


def test_plan_needs_no_model_and_knows_the_folder(saved, no_model_load):
    root, _ = saved
    new = plan(ExtractConfig(sites=MLP, input=DOCS, out=root / "fresh"))
    assert new.state == "new" and new.needs_model and not (root / "fresh").exists()
    done = plan(ExtractConfig(sites=MLP, input=root / "corpus.txt", out=root / "acts", model=str(root / "model"),
                              max_length=40, device="cpu", resume=True))
    assert done.state == "finished" and not done.needs_model
    summary = run(done)
    assert summary["already_finished"] and summary["tokens"] == len(ActivationDataset(root / "acts"))


def test_resume_of_a_finished_dataset_names_the_changed_key(saved, no_model_load):
    """issue 10 item 2: --max-length 32 over a dataset built with 40, or another --input, is refused (not 'already
    complete'), before any model load, and the message names the key and both values."""
    root, args = saved
    out = ["--out", str(root / "acts"), "--resume"]
    before = _tree(root / "acts")
    r = CliRunner().invoke(main, [*args[:8], "32", *args[9:], *out])
    assert r.exit_code == 2 and "max_length: 40 before, 32 now" in r.output, r.output
    other = root / "other.txt"
    other.write_text("another corpus\n")
    r = CliRunner().invoke(main, [a if a != str(root / "corpus.txt") else str(other) for a in args] + out)
    assert r.exit_code == 2 and "input:" in r.output and "before" in r.output, r.output
    r = CliRunner().invoke(main, args + out + ["--store-dtype", "bf16"])
    assert r.exit_code == 2 and "store_dtype: 'float32' before, 'bfloat16' now" in r.output, r.output
    r = CliRunner().invoke(main, args + out + ["--mode", "packed"])
    assert r.exit_code == 2 and "mode: 'document' before, 'packed' now" in r.output, r.output
    r = CliRunner().invoke(main, args + out + ["--shard-tokens", "1000"])
    assert r.exit_code == 2 and "shard_tokens:" in r.output, r.output
    assert _tree(root / "acts") == before
    r = CliRunner().invoke(main, args + out)  # the same settings: finished, nothing loaded
    assert r.exit_code == 0 and "already complete" in r.output, r.output
    r = CliRunner().invoke(main, args + out + ["--max-length", "40"])  # asked explicitly as it was
    assert r.exit_code == 0, r.output


def test_interrupted_run_stays_keyboardinterrupt_refuses_changes_and_resumes_identically(tmp_path, monkeypatch):
    """issue 9 §5: a Ctrl-C in the middle is a KeyboardInterrupt (not a MechscopeError); the complete shards stay;
    a resume with another setting is refused naming it; the same settings finish it byte for byte."""
    from mechscope.extract import pipeline

    m = tiny("llama")
    site, docs = "blocks.2.hook_mlp_out", DOCS * 3
    real, calls = pipeline.Runner.run_chunk, {"n": 0}

    def interrupted(self, chunk, sink, progress=None):  # Ctrl-C in the model loop, during the third chunk
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, chunk, sink, progress)

    monkeypatch.setattr(pipeline.Runner, "run_chunk", interrupted)
    out = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        mechscope.extract(m, [site], docs, out, **KW)
    assert storage.complete_shards(out) == [0, 1] and not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(pipeline.Runner, "run_chunk", real)
    with pytest.raises(ConfigError, match="max_length: 40 before, 32 now") as err:
        mechscope.extract(m, [site], docs, out, resume=True, **{**KW, "max_length": 32})
    assert err.value.argument == "max_length"
    with pytest.raises(ConfigError, match="exclude_bos: False before, True now"):
        mechscope.extract(m, [site], docs, out, resume=True, exclude_bos=True, **KW)
    with pytest.raises(ConfigError, match="input:"):
        mechscope.extract(m, [site], DOCS, out, resume=True, **KW)
    s = mechscope.extract(m, [site], docs, out, resume=True, **KW)
    ref = mechscope.extract(m, [site], docs, tmp_path / "ref", **KW)
    assert s["tokens"] == ref["tokens"] and _tree(out) == _tree(tmp_path / "ref")
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["request"]["max_length"] == 40 and mf["settings"]["dims"] == {site: 64}


@pytest.mark.parametrize("flag, value, key", [("--batch-tokens", "0", "batch_tokens"),
                                              ("--max-length", "0", "max_length"),
                                              ("--store-dtype", "fp8", "store_dtype"),
                                              ("--shard-tokens", "-1", "shard_tokens"),
                                              ("--limit-docs", "0", "limit_docs"),
                                              ("--dtype", "fp8", "dtype")])
def test_argument_errors_come_before_the_model_load(tmp_path, no_model_load, flag, value, key):
    """issue 10 item 11: errors that need no model are reported first (the monkeypatched load would fail the test),
    exit 2, naming the flag; nothing is created."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\n")
    args = ["extract", "--sites", MLP, "--input", str(corpus), "--out", str(tmp_path / "o"), flag, value]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and key in r.output and value in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError) as err:
        plan(ExtractConfig(sites=MLP, input=str(corpus), out=tmp_path / "o",
                           **{key: int(value) if value.lstrip("-").isdigit() else value}))
    assert err.value.argument == key
