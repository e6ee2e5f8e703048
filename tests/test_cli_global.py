"""The `mechscope` group itself: plain command registration, --threads, --verbose (quiet loading otherwise),
JSON errors with --json, Ctrl-C; and `loading.load(quiet=)` restoring Hugging Face's settings."""
import ast
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mechscope
import mechscope.loading as loading
from mechscope.cli import main
from mechscope.cli.common import default_threads

SRC = Path(mechscope.__file__).parent


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    from mechscope.tiny import tiny_model

    return mechscope.save(tiny_model("llama"), tmp_path_factory.mktemp("g") / "llama")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def hf_state():
    """transformers' logging verbosity and progress-bar switch, put back as they were after the test."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    yield hf_logging
    hf_logging.set_verbosity(before[0])
    (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()


def record_load(monkeypatch, result=None):
    """Replace loading.load by a recorder (of its keyword arguments and the torch threads at call time)."""
    calls = []

    def fake(name=None, **kw):
        calls.append(dict(kw, name=name, threads=torch.get_num_threads()))
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(loading, "load", fake)
    return calls


def test_commands_registered_with_plain_imports():
    tree = ast.parse((SRC / "cli" / "__init__.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert "importlib" not in imported and "import_module" not in imported
    assert {"inspect", "tokenize", "generate", "next-token", "lens", "patch", "extract", "sae", "attention", "heads",
            "lab", "finetune", "probe", "sentiment-data"} <= set(main.commands)


def test_load_quiet_only_during_the_load(llama_folder, hf_state, monkeypatch):
    import transformers as tf

    seen = []
    original = tf.AutoTokenizer.from_pretrained

    def spy(*a, **kw):  # called inside load, after the weights
        seen.append((hf_state.get_verbosity(), hf_state.is_progress_bar_enabled()))
        return original(*a, **kw)

    monkeypatch.setattr(tf.AutoTokenizer, "from_pretrained", spy)
    loading.load(str(llama_folder), device="cpu", quiet=True)
    assert seen[-1] == (hf_state.ERROR, False)
    assert (hf_state.get_verbosity(), hf_state.is_progress_bar_enabled()) == (hf_state.WARNING, True)
    loading.load(str(llama_folder), device="cpu")  # library default: nothing silenced
    assert seen[-1] == (hf_state.WARNING, True)


def test_cli_loads_quietly_unless_verbose_and_restores_hf_state(llama_folder, hf_state, monkeypatch):
    r = run("tokenize", "Hello", "--model", llama_folder)
    assert r.exit_code == 0, r.output
    assert (hf_state.get_verbosity(), hf_state.is_progress_bar_enabled()) == (hf_state.WARNING, True)
    calls = record_load(monkeypatch, mechscope.MechscopeError("stop"))
    run("tokenize", "Hello", "--model", llama_folder)
    run("--verbose", "tokenize", "Hello", "--model", llama_folder)
    assert [c["quiet"] for c in calls] == [True, False]


def test_finetune_loads_quietly_in_the_cli(tmp_path, monkeypatch):
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(10)))
    calls = record_load(monkeypatch, mechscope.MechscopeError("stop"))
    r = run("finetune", "--train", data, "--out", tmp_path / "o")
    assert r.exit_code == 2 and calls and calls[0]["quiet"] is True, r.output


def test_threads_option_and_default(llama_folder, monkeypatch):
    before = torch.get_num_threads()
    calls = record_load(monkeypatch, mechscope.MechscopeError("stop"))
    run("--threads", 1, "tokenize", "Hello", "--model", llama_folder)
    assert calls[-1]["threads"] == 1 and torch.get_num_threads() == before  # set for the command, then restored
    monkeypatch.setenv("MECHSCOPE_THREADS", "3")
    run("tokenize", "Hello", "--model", llama_folder)
    assert calls[-1]["threads"] == 3
    assert run("--threads", 0, "tokenize", "Hello").exit_code == 2
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 1 <= default_threads() <= 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads() is None  # torch already follows OMP_NUM_THREADS
    assert "OMP_NUM_THREADS" in run("--help").output


@pytest.mark.parametrize("args,argument", [
    (("next-token", "Hello", "--top-k", "0"), "--top-k"),
    (("generate", "Hello", "--max-new-tokens", "-5"), "--max-new-tokens"),
    (("tokenize", ""), "TEXT"),
    (("next-token", "Hello", "--top-k", "many"), "--top-k"),
])
def test_json_errors(args, argument, llama_folder):
    r = run(*args, "--model", llama_folder, "--json")
    assert r.exit_code == 2, r.output
    err = json.loads(r.stdout)
    assert set(err) == {"error", "argument"} and err["argument"] == argument and err["error"]
    plain = run(*args, "--model", llama_folder)
    assert plain.exit_code == 2 and plain.stdout == "" and "Error" in plain.stderr


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch):
    record_load(monkeypatch, KeyboardInterrupt())
    r = run("next-token", "Hello")
    assert r.exit_code == 130, (r.output, r.exception)
    assert r.stderr.strip().count("\n") == 0 and "Interrupted" in r.stderr and "Traceback" not in r.output


# ---- issue 10 item 11: argument errors that need no model come before the model load --------------------------

NO_MODEL_NEEDED = [
    ("generate", "Hello", "--max-new-tokens", "-5"),
    ("generate", "Hello", "--temperature", "0"),
    ("generate", "Hello", "--top-p", "2"),
    ("generate", "Hello", "--greedy", "--temperature", "0.5"),
    ("next-token", "Hello", "--top-k", "0"),
    ("next-token", "Hello", "--dtype", "fp8"),
    ("inspect", "--dtype", "int3"),
    ("tokenize", "Hello", "--device", "tpu"),
    ("lens", "Hello", "--target", ""),
    ("lens", "Hello", "--device", "cuda:99"),
]


@pytest.mark.parametrize("args", NO_MODEL_NEEDED, ids=[" ".join(a) for a in NO_MODEL_NEEDED])
def test_argument_errors_before_the_model_loads(args, monkeypatch):
    calls = record_load(monkeypatch, AssertionError("the model was loaded"))
    r = run(*args)
    assert r.exit_code == 2 and calls == [], (r.output, r.exception)
    assert "Error" in r.stderr and "Traceback" not in r.output


def test_text_errors_add_the_flag(monkeypatch):
    record_load(monkeypatch, AssertionError("the model was loaded"))
    err = run("generate", "Hello", "--max-new-tokens", "-5").stderr
    assert "--max-new-tokens" in err and "-5" in err


# ---- issue 10 item 5: generated text and titles verbatim, whatever the terminal width ----------------------------

LONG = "The quick brown fox jumps over the lazy dog, " * 2 + "and the cat sat on it"  # 111 characters


def test_generate_prints_verbatim_when_piped(llama_folder):
    completion = json.loads(run("generate", LONG, "-n", 5, "--model", llama_folder, "--json").stdout)["completion"]
    r = run("generate", LONG, "-n", 5, "--model", llama_folder)
    assert r.exit_code == 0 and r.stdout == LONG + completion + "\n"


def test_next_token_title_not_wrapped(llama_folder):
    out = run("next-token", LONG, "-k", 2, "--model", llama_folder).stdout
    assert out.splitlines()[0] == f"Next token after {LONG!r}"


def test_analysis_module_still_imports_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("mechscope.analysis", None)
    with pytest.warns(DeprecationWarning, match="mechscope.inspection"):
        old = importlib.import_module("mechscope.analysis")
    from mechscope.generation import generate
    from mechscope.inspection import describe

    assert old.describe is describe and old.generate is generate and old.next_token_table is mechscope.next_token_table
