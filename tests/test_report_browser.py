"""report.html in a real headless browser: hover a cell and read its value; hostile token text is shown, not run.

Needs Chromium (Debian: /usr/bin/chromium, `make browser`) and the Python playwright package; skipped otherwise.
"""
from __future__ import annotations

import pytest

from browser import EVIL, EVIL2, launch, open_page
from mechscope.patching import PatchResult
from mechscope.patching import save_result


def _result() -> PatchResult:
    texts = ["Hello", EVIL, " world", EVIL2]
    toks = [{"position": i, "id": 10 + i, "token": t} for i, t in enumerate(texts)]
    corrupt = [dict(t, id=t["id"] + (100 if i == 2 else 0)) for i, t in enumerate(toks)]
    matrix = [[0.0, -1.25, 2.5, 0.125], [3.75, 0.5, -0.25, 1.0]]
    top = [{"rank": r + 1, "id": r, "token": EVIL if r == 0 else f"t{r}", "logit": 1.0 / (r + 1), "prob": 0.5 / (r + 1)} for r in range(20)]
    return PatchResult(
        model="tiny", clean="Hello <script>alert(1)</script> world", corrupt="Hello <b>x</b> world", tokens=toks,
        answers=[{"role": "A", "token": EVIL, "id": 1}, {"role": "B", "token": " b", "id": 2}],
        kind="resid_post", metric="logit_diff", direction="denoise", method="exact", layers=[0, 1],
        positions=[0, 1, 2, 3], matrix=matrix, clean_value=3.0, corrupt_value=-1.0, seconds=0.5,
        corrupt_tokens=corrupt, columns=[0, 1, 2, 3], clean_top=top, corrupt_top=top,
        command="mechscope patch --clean 'x' --corrupt 'y' --tokens '<script>' b --out out/patching")


def test_report_hover_and_escaping(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    paths = save_result(_result(), tmp_path)
    html = paths["report.html"].read_text()
    assert EVIL not in html and "&lt;script&gt;" in html
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, requests = open_page(browser, paths["report.html"])
            # hover layer 1, position 0 (value 3.75)
            page.hover("#heat td.cell[data-layer='1'][data-col='0']")
            tip = page.inner_text("#tip")
            assert "layer 1" in tip and "position 0" in tip and "3.75" in tip and "Hello" in tip
            assert page.is_visible("#tip")
            # hover the hostile token's column: its text is displayed literally
            page.hover("#heat td.cell[data-layer='0'][data-col='1']")
            tip = page.inner_text("#tip")
            assert "-1.25" in tip and "<script>window.__pwned=1</script>" in tip
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.evaluate("typeof window.__pwned2") == "undefined"
            body = page.inner_text("body")
            assert "<script>" in body and "onerror" in body  # shown as text
            assert "rank" in body and "prob" in body and "Token index" not in body
            assert "mechscope patch --clean" in page.inner_text("#command")
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
        finally:
            browser.close()
