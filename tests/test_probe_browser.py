"""The probe report in headless Chromium: it opens from disk, makes no network request, shows hostile label
names and model names as text. Needs Chromium (`make browser`) and playwright; skipped otherwise."""
from __future__ import annotations

import pytest

from browser import EVIL, EVIL2, launch, open_page
from mechscope.encoders.probe import ProbeResult
from mechscope.encoders.probe_report import write_outputs

pytestmark = pytest.mark.heavy


def _result() -> ProbeResult:
    sites = {"resid_post": {"accuracy": [0.6, 0.9], "control_accuracy": [0.55, 0.6], "selectivity": [0.05, 0.3],
                            "random_model_accuracy": [0.58, 0.61], "mean_diff_accuracy": [0.6, 0.85],
                            "C": [0.1, 1.0]}}
    ablation = {"site": "blocks.1.hook_resid_post", "layer": 1, "metric": "accuracy", "labels": "by name", "n": 40,
                "baseline": 0.95, "ablated": 0.5, "drop": 0.45, "random_ablated": [0.94, 0.95], "random_drop": 0.005}
    return ProbeResult(model=EVIL, family="bert", pool="cls", kinds=["resid_post"], layers=[0, 1],
                       label_names=[EVIL2, "pos"], n_train=160, n_test=40, sites=sites,
                       best={"site": "resid_post", "layer": 1, "accuracy": 0.9, "selectivity": 0.3},
                       majority_accuracy=0.5, control_majority_accuracy=0.52, settings={"data": EVIL},
                       info={"forwards": 7, "tokens": 900, "truncated": 0, "seconds": 1.5}, ablation=ablation)


def test_probe_report_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    paths = write_outputs(_result(), tmp_path, command=f"mechscope probe --data '{EVIL}'")
    assert EVIL not in paths["report.html"].read_text(encoding="utf-8")
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, requests = open_page(browser, paths["report.html"])
            body = page.inner_text("body")
            assert EVIL in body and EVIL2 in body  # shown as text, never run
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.evaluate("typeof window.__pwned2") == "undefined"
            assert "selectivity" in body and "0.450" in body and "random directions" in body
            assert page.evaluate("document.querySelector('img').naturalWidth") > 0  # the embedded figure decodes
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
        finally:
            browser.close()
