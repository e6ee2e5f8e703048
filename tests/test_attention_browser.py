"""attention.html in headless Chromium: thumbnails drawn, hover shows the weights, no request, hostile text inert.

Needs Chromium (Debian: /usr/bin/chromium, `make browser`) and the Python playwright package; skipped otherwise.
"""
from __future__ import annotations

import pytest

from browser import EVIL, EVIL2, launch
from mechscope.attention import attention_patterns, write_outputs

from conftest import tiny

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    m = tiny("llama")
    r = attention_patterns(m, "Look at this: a test of the viewer.", layers="0-2")
    r.pieces[3], r.pieces[5] = EVIL, EVIL2  # hostile token text
    r.text = "prompt " + EVIL
    return r, write_outputs(r, tmp_path_factory.mktemp("attn"))["attention.html"]


def test_page(page_file):
    sync_api = pytest.importorskip("playwright.sync_api")
    r, path = page_file
    t, nh = len(r.ids), len(r.heads)
    html = path.read_text()
    assert EVIL not in html and EVIL2 not in html
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            requests = []
            page.on("request", lambda q: requests.append(q.url))
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                       else route.abort())
            page.goto(path.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=20000)
            # every thumbnail has ink (a white canvas would mean nothing was drawn)
            inked = page.evaluate("""() => Array.from(document.querySelectorAll('.thumb')).map(c => {
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 200) n++; return n; })""")
            assert len(inked) == len(r.layers) * nh and min(inked) > 0, inked
            assert page.get_attribute("#big", "data-drawn") == f"{r.layers[0]},{r.heads[0]}"
            # hover a token: the others are shaded with the weight it gives them (8-bit, to 3 decimals)
            q = t - 1
            page.hover(f"#tokens .tok[data-i='{q}']")
            page.wait_for_function(f"document.querySelector(\"#tokens .tok[data-i='0']\").title !== ''")
            titles = page.eval_on_selector_all("#tokens .tok", "els => els.map(e => e.title)")
            want = r.patterns[r.layers[0]][0, q]
            assert [float(x) for x in titles] == pytest.approx(want.tolist(), abs=0.5 / 255 + 5e-4)
            weights = page.inner_text("#weights")
            top = int(want.argmax())
            assert f"where \"{r.pieces[q]}\" ({q}) attends" in weights and f"({top}) {round(float(want[top]) * 255) / 255:.3f}" in weights
            # toggled: what attends to token 2 (a column)
            page.check("#reverse")
            page.hover("#tokens .tok[data-i='2']")
            page.wait_for_function("document.getElementById('weights').textContent.includes('what attends to')")
            titles = page.eval_on_selector_all("#tokens .tok", "els => els.map(e => e.title)")
            col = r.patterns[r.layers[0]][0, :, 2]
            assert [float(x) for x in titles] == pytest.approx(col.tolist(), abs=0.5 / 255 + 5e-4)
            assert all(float(x) == 0 for x in titles[:2])  # causal: earlier tokens never attend to it
            # click a thumbnail: enlarged, and hovering a cell gives its weight
            page.click(".thumb[data-li='2'][data-hi='1']")
            page.wait_for_function(f"document.getElementById('big').dataset.drawn === '{r.layers[2]},{r.heads[1]}'")
            box = page.locator("#big").bounding_box()
            qq, kk = t - 2, 1
            page.mouse.move(box["x"] + (kk + 0.5) * box["width"] / t, box["y"] + (qq + 0.5) * box["height"] / t)
            page.wait_for_function("document.getElementById('cell').textContent.includes('query')")
            cell = page.inner_text("#cell")
            assert f"({qq}) -> key" in cell and f"{round(float(r.patterns[r.layers[2]][1, qq, kk]) * 255) / 255:.3f}" in cell, cell
            # the layer selector shows one layer's row
            page.select_option("#layer", "1")
            shown = page.eval_on_selector_all("#grid .row[data-layer]", "rs => rs.map(r => r.style.display)")
            assert shown == ["none", "", "none"]
            # hostile text is shown as text, never run
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.evaluate("typeof window.__pwned2") == "undefined"
            toks = page.inner_text("#tokens")
            assert "<script>window.__pwned=1</script>" in toks and "onerror" in toks
            assert EVIL in page.inner_text("body")
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
            assert len(requests) == 1  # the page itself, nothing else
        finally:
            browser.close()
