"""SAE commands on a real activation dataset extracted from a tiny model: CLI train/eval/features/export/import,
the splice test through the engine, and resume after a real SIGKILL of the training process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

import mechscope
from mechscope.cli import main
from mechscope.sae import SAE, evaluate, train
from mechscope.tiny import tiny_model

SITE = "blocks.1.hook_mlp_out"
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()


@pytest.fixture(scope="module")
def acts(tmp_path_factory):
    import random

    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + "." for _ in range(160)]
    out = tmp_path_factory.mktemp("sae_ds") / "acts"
    model = tiny_model("llama")
    mechscope.extract(model, [SITE], texts, out, max_length=64, store_dtype="fp32", progress=False)
    return out, model


def run(*args):
    res = CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)
    return res


def test_cli_train_eval_features_export_import(acts, tmp_path):
    data, model = acts
    ds = mechscope.ActivationDataset(data)
    assert len(ds) > 3000
    res = run("sae", "train", "--data", data, "--out", tmp_path / "sae", "--k", 8, "--expansion", 4,
              "--batch-tokens", 256, "--tokens", 20000, "--lr", 3e-3, "--no-progress", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["site"] == SITE and summary["d_sae"] == 4 * model.cfg.d_model
    cfg = json.loads((tmp_path / "sae" / "config.json").read_text())
    assert cfg["extra"]["train"]["lr"] == 3e-3 and cfg["extra"]["data"]["model"] == "tiny-llama"
    assert cfg["input_scale"] > 0 and (tmp_path / "sae" / "sae.safetensors").exists()

    res = run("sae", "eval", "--sae", tmp_path / "sae", "--data", data, "--no-splice", "--json")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)["reconstruction"]
    assert 0 <= rec["fvu"] < 0.5 and rec["l0"] <= 8 and rec["rows"][1] == len(ds)
    assert json.loads((tmp_path / "sae" / "metrics.json").read_text())["reconstruction"]["fvu"] == rec["fvu"]
    assert "batch FVU vs tokens" in (tmp_path / "sae" / "report.html").read_text()  # training curves

    # the splice test on held-out documents of the dataset, through the engine
    sae = SAE.load(tmp_path / "sae")
    out = evaluate(sae, data, model=model, out=tmp_path / "ev")
    sp = out["splice"]
    assert sp["tokens"] > 0 and sp["ce_sae"] >= sp["ce_clean"] - 0.05 and sp["ce_zero"] != sp["ce_clean"]

    res = run("sae", "features", "--sae", tmp_path / "sae", "--data", data, "--latents", "0-9", "--out",
              tmp_path / "feat", "--examples", 3, "--json")
    assert res.exit_code == 0, res.output
    html = (tmp_path / "feat" / "features.html").read_text()
    assert html.count("<details") == 10 and "<script" not in html

    res = run("sae", "export", tmp_path / "sae", "--out", tmp_path / "sl")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "sl" / "cfg.json").read_text())["metadata"]["hook_name"] == SITE
    res = run("sae", "import", tmp_path / "sl", "--out", tmp_path / "back", "--json")
    assert res.exit_code == 0, res.output
    x = torch.from_numpy(ds.read(SITE, range(100)))
    torch.testing.assert_close(SAE.load(tmp_path / "back")(x), sae(x), rtol=1e-5, atol=1e-5)

    # clear errors, exit code 2
    res = CliRunner().invoke(main, ["sae", "train", "--data", str(data), "--out", str(tmp_path / "sae")])
    assert res.exit_code == 2 and "--resume" in res.output
    res = CliRunner().invoke(main, ["sae", "train", "--data", str(data), "--site", "blocks.9.hook_mlp_out",
                                    "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and SITE in res.output
    res = CliRunner().invoke(main, ["sae", "eval", "--sae", str(tmp_path / "sl"), "--data", str(data)])
    assert res.exit_code == 2 and "SAELens" in res.output


@pytest.mark.heavy
def test_resume_after_sigkill_matches_uninterrupted_run(acts, tmp_path):
    data, _ = acts
    args = ["--k", "8", "--d-sae", "128", "--batch-tokens", "64", "--tokens", str(64 * 2500), "--lr", "2e-3",
            "--checkpoint-every", "25", "--seed", "3", "--device", "cpu"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from mechscope.cli import main; main()", "sae", "train",
                             "--data", str(data), "--out", str(killed), "--no-progress", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (killed / "sae.safetensors").exists()
    step = torch.load(killed / "checkpoint.pt", weights_only=False)["step"]
    assert 0 < step < 2500
    torch.set_num_threads(1)  # the same arithmetic as the killed process
    try:
        kw = dict(k=8, d_sae=128, batch_tokens=64, tokens=64 * 2500, lr=2e-3, checkpoint_every=25, seed=3,
                  device="cpu", progress=False)
        resumed = train(data, None, killed, resume=True, **kw)
        full = train(data, None, tmp_path / "full", **kw)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    for name, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_truncated_site_array_is_one_paragraph_exit_2_nothing_touched(acts, tmp_path):
    """issue 10 item 6: a half-copied arrays/<site>.npy in `sae train`: DataError, exit 2, no --out, data untouched."""
    import shutil

    data = tmp_path / "acts"
    shutil.copytree(acts[0], data)
    npy = data / "arrays" / f"{SITE}.npy"
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 3])
    before = _files(data)
    res = CliRunner().invoke(main, ["sae", "train", "--data", str(data), "--out", str(tmp_path / "sae"),
                                    "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "truncated or corrupt" in res.output and f"{SITE}.npy" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "sae").exists() and _files(data) == before


def test_not_a_dataset_gives_the_fix(tmp_path):
    """issue 10 item 9: `sae train --data notadataset` says how to make one."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for bad in ("notadataset", "folder", "file.txt"):
        res = CliRunner().invoke(main, ["sae", "train", "--data", str(tmp_path / bad), "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and "mechscope extract --sites" in res.output, res.output
    assert not (tmp_path / "o").exists()


def test_fewer_rows_than_one_batch_warns_with_a_batch_size(acts, tmp_path):
    """issue 10 item 9: fewer training rows than one batch trains with a warning that suggests a batch size."""
    data, _ = acts
    n = len(mechscope.ActivationDataset(data))
    res = CliRunner().invoke(main, ["sae", "train", "--data", str(data), "--out", str(tmp_path / "s"), "--k", "4",
                                    "--expansion", "2", "--batch-tokens", str(4 * n), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "fewer than one batch" in res.output and "--batch-tokens " in res.output
    suggested = int(res.output.split("--batch-tokens ")[1].split(")")[0])
    assert 1 <= suggested <= n // 10


def test_splice_test_uses_the_datasets_max_length_and_heldout_documents(tmp_path):
    """issue 10 item 3: the splice test reads held-out documents cut at the dataset's max_length (the positions the
    SAE was trained on), not at 256, and says so."""
    import numpy as np

    model = tiny_model("llama")
    texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(8)) for i in range(60)]  # ~50 tokens each
    out = tmp_path / "acts"
    mechscope.extract(model, [SITE], texts, out, max_length=16, progress=False)
    ds = mechscope.ActivationDataset(out)
    sae = SAE.identity(ds.d(SITE))
    sae.cfg.site = SITE
    res = evaluate(sae, ds, model=model)
    sp = res["splice"]
    assert sp["max_length"] == 16 and "dataset" in sp["max_length_source"]
    a, b = res["reconstruction"]["rows"]
    held = sorted(set(np.asarray(ds.doc_ids[a:b]).tolist()) - {int(ds.doc_ids[a - 1])})
    assert sp["text_source"].startswith(f"{sp['texts']} held-out document(s)") and sp["texts"] == len(held)
    assert sp["tokens"] == sum(min(len(model.encode(texts[d])), 16) - 1 for d in held)
    assert abs(sp["ce_sae"] - sp["ce_clean"]) < 1e-4  # the identity SAE changes nothing
