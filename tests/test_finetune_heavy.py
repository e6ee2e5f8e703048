"""finetune, heavy: a run SIGKILLed after an epoch checkpoint resumes to the same weights as an uninterrupted run
(separate processes), and report.html in headless Chromium (no request, hostile text shown, not run)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import mechscope

from browser import EVIL, EVIL2, launch, open_page
from conftest import tiny
from test_finetune import rows, write_csv

pytestmark = pytest.mark.heavy


def _cmd(model, train, out, *extra):
    return [sys.executable, "-c", "import sys; from mechscope.cli import main; sys.exit(main())", "finetune",
            "--model", str(model), "--train", str(train), "--out", str(out), "--epochs", "3", "--batch-size", "8",
            "--lr", "2e-3", "--max-length", "24", "--device", "cpu", "--no-progress", *extra]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    from safetensors.torch import load_file

    model = tmp_path / "tiny-bert"
    mechscope.save(tiny("bert"), model)
    train = write_csv(tmp_path / "train.csv", rows(96))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(model, train, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / ".killed.partial" / "checkpoint.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "no epoch checkpoint appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not killed.exists()  # DIR never half-written
    again = subprocess.run(_cmd(model, train, killed, "--resume"), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch" in again.stderr
    whole = subprocess.run(_cmd(model, train, tmp_path / "whole"), env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    a, b = load_file(killed / "model.safetensors"), load_file(tmp_path / "whole" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (killed / "checkpoint.pt").exists() and (killed / "report.html").exists()


def test_report_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from mechscope.encoders import finetune

    ev = rows(16, seed=1)
    ev[0]["text"], ev[1]["text"] = EVIL, EVIL2
    train = write_csv(tmp_path / "train.csv", [dict(r, label=EVIL if r["label"] == "positive" else r["label"])
                                               for r in rows(48)])
    evf = write_csv(tmp_path / "eval.csv", [dict(r, label=EVIL if r["label"] == "positive" else r["label"])
                                            for r in ev])
    out = tmp_path / "clf"
    finetune(tiny("bert"), train, evf, out=out, epochs=1, batch_size=8, lr=2e-3, max_length=24, device="cpu",
             progress=False)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, requests = open_page(browser, out / "report.html")
            assert page.evaluate("window.__pwned === undefined && window.__pwned2 === undefined")
            assert page.evaluate("document.querySelector('img').naturalWidth") > 100  # the embedded curves
            body = page.inner_text("body")
            assert EVIL in body and EVIL2 in body  # shown as text
            cells = page.eval_on_selector_all("table.conf td", "els => els.map(e => parseInt(e.textContent))")
            assert sum(cells) == 16
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
        finally:
            browser.close()
