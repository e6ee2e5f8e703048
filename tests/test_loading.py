"""Loading: embedded default model, folders, GGUF conversion cache, hub ids offline, dtype/device errors."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import mechscope
from mechscope import MechscopeError
from mechscope.loading import cache_dir, default_gguf

from conftest import ALL_FAMILIES, tiny


@pytest.mark.slow
def test_default_model_says_paris(default_model):
    m = default_model
    assert m.cfg.family == "llama" and m.cfg.n_layers == 30 and m.cfg.d_model == 576
    assert (m.cfg.n_heads, m.cfg.n_kv_heads, m.cfg.d_head, m.cfg.d_mlp) == (9, 3, 64, 1536)
    logits, _ = m.run("The capital of France is")
    assert m.tokenizer.decode(logits[0, -1].argmax()) == " Paris"


@pytest.mark.slow
def test_default_model_save_load_round_trip(default_model, tmp_path):
    ref, _ = default_model.run("The capital of France is")
    folder = mechscope.save(default_model, tmp_path / "smol")
    back = mechscope.load(str(folder))
    got, _ = back.run("The capital of France is")
    assert torch.equal(got, ref)
    with pytest.raises(MechscopeError, match="not empty"):
        mechscope.save(default_model, folder)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_folder_round_trip_every_family(family, tmp_path):
    m = tiny(family)
    ids = [m.encode("some text"), m.encode("more")]  # same ids for both (AutoTokenizer may pick a family class)
    ref, _ = m.run(ids)
    back = mechscope.load(str(mechscope.save(m, tmp_path / family)), device="cpu")
    assert back.cfg == m.cfg
    got, _ = back.run(ids)
    assert torch.equal(got, ref)


def test_fp16_llama_warns(tmp_path, capfd):
    folder = mechscope.save(tiny("llama"), tmp_path / "llama")
    m = mechscope.load(str(folder), dtype="fp16", device="cpu")
    assert m.dtype == torch.float16
    assert "bf16" in capfd.readouterr().err


def test_offline_unknown_hub_id_is_one_clear_paragraph(monkeypatch):
    with pytest.raises(MechscopeError) as e:
        mechscope.load("nobody-here/not-a-model-xyz")
    msg = str(e.value)
    assert "nobody-here/not-a-model-xyz" in msg and "hf download" in msg and "config.json" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("kwargs,match", [
    (dict(dtype="fp8"), "--dtype"),
    (dict(device="tpu"), "--device"),
    (dict(device="cuda:7"), "--device"),
])
def test_bad_dtype_and_device(kwargs, match, tmp_path):
    with pytest.raises(MechscopeError, match=match):
        mechscope.load("gpt2", **kwargs)


def test_missing_gguf_file():
    with pytest.raises(MechscopeError, match="no such .gguf"):
        mechscope.load("/nonexistent/model.gguf")


def test_killed_conversion_leaves_no_broken_cache(tmp_path):
    """SIGKILL the first conversion half-way: nothing that looks like a finished cache remains; a rerun works."""
    env = dict(os.environ, MECHSCOPE_CACHE=str(tmp_path), HF_HUB_OFFLINE="1")
    code = "import mechscope.loading as L; L.gguf_to_folder(L.default_gguf(), 'kill-test')"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    models = tmp_path / "models"
    deadline = time.time() + 120
    while time.time() < deadline and not (models.exists() and any(models.glob(".convert-*"))):
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the conversion
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [p for p in models.iterdir() if not p.name.startswith(".")]
    assert finished == []
    from mechscope.loading import gguf_to_folder

    old = os.environ.get("MECHSCOPE_CACHE")
    os.environ["MECHSCOPE_CACHE"] = str(tmp_path)
    try:
        folder = gguf_to_folder(default_gguf(), "kill-test")
    finally:
        if old is None:
            os.environ.pop("MECHSCOPE_CACHE")
        else:
            os.environ["MECHSCOPE_CACHE"] = old
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert folder.parent == tmp_path / "models"


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
