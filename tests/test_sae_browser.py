"""features.html (`mechscope sae features`) in a real headless browser: one section per latent, shading that follows
the activations, the outlined token, the index links and the collapsible sections work, hostile document text is shown
and not run.

The data is real: a tiny model (whose character tokenizer also knows `<script>` and `</script>` as whole tokens) saved
to a folder, a dataset extracted with it, a SAE trained on it for 20 steps and the page written by the CLI, which
decodes the token ids with the tokenizer the dataset's manifest names. Needs Chromium (Debian: /usr/bin/chromium,
`make browser`) and the Python playwright package; skipped otherwise.
"""
from __future__ import annotations

import json
import random
import re

import pytest
from click.testing import CliRunner

from browser import EVIL, EVIL2, launch, need_chromium

pytestmark = pytest.mark.heavy  # Chromium

SITE = "blocks.1.hook_mlp_out"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
N_LATENTS, N_EXAMPLES = 100, 3


def _cli(*args):
    from mechscope.cli import main

    res = CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def feature_page(tmp_path_factory):
    """(features.html, features.json contents) for latents 0-99 of a SAE trained on a tiny model's activations."""
    pytest.importorskip("playwright.sync_api")
    need_chromium()
    import mechscope
    from mechscope.loading import load, save
    from mechscope.model import Model
    from mechscope.tiny import tiny_hf

    root = tmp_path_factory.mktemp("sae_browser")
    hf, tok = tiny_hf("llama")
    assert tok.add_tokens(["<script>", "</script>"]) == 2 and len(tok) <= hf.config.vocab_size
    save(Model(hf, tok, name="tiny-llama"), root / "model")
    model = load(str(root / "model"), device="cpu")  # the manifest then names a tokenizer the CLI can load
    rng = random.Random(0)
    texts = []
    for i in range(120):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        texts.append(f"{words} {EVIL} {words} {EVIL2}." if i % 4 == 0 else words + ".")
    mechscope.extract(model, [SITE], texts, root / "acts", max_length=64, store_dtype="fp32", progress=False)
    _cli("sae", "train", "--data", root / "acts", "--out", root / "sae", "--k", 4, "--expansion", 2,
         "--batch-tokens", 256, "--tokens", 20 * 256, "--lr", 3e-3, "--device", "cpu", "--no-progress")
    _cli("sae", "features", "--sae", root / "sae", "--data", root / "acts", "--latents", f"0-{N_LATENTS - 1}",
         "--out", root / "feat", "--examples", N_EXAMPLES, "--device", "cpu")
    return root / "feat" / "features.html", json.loads((root / "feat" / "features.json").read_text())


def _alpha(css_color: str) -> float:
    """The alpha of a computed colour: 'rgba(255, 120, 0, 0.65)' -> 0.65, 'rgb(255, 120, 0)' -> 1."""
    nums = [float(v) for v in re.findall(r"[\d.]+", css_color)]
    assert len(nums) in (3, 4), css_color
    return nums[3] if len(nums) == 4 else 1.0


# every context of the page as the browser lays it out: per token its text, tooltip, class, colour and outline
CONTEXTS_JS = """() => [...document.querySelectorAll('details')].map(d => ({
    summary: d.querySelector('summary').innerText,
    target: d.querySelector('[id]') && d.querySelector('[id]').id,
    contexts: [...d.querySelectorAll('.ctx')].map(c => [...c.querySelectorAll('.tok')].map(s => ({
        text: s.textContent, title: s.title, max: s.classList.contains('max'),
        bg: getComputedStyle(s).backgroundColor, outline: getComputedStyle(s).outlineStyle})))}))"""


def test_feature_page_sections_shading_and_interaction(feature_page):
    from playwright.sync_api import sync_playwright

    path, res = feature_page
    html = path.read_text()
    assert "<script" not in html and "<img" not in html and not re.search(r"\b(src|href)=[\"']?(https?:)?//", html)
    items = res["latents"]
    assert [it["latent"] for it in items] == list(range(N_LATENTS))
    assert sum(len(it["examples"]) for it in items) > N_LATENTS  # most latents have contexts to show
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors, requests = [], []
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            assert page.title() == f"SAE features {SITE}"
            assert SITE in page.inner_text("h1")

            # one index row and one collapsed section per latent, each index link leads to its own section
            links = page.locator("table a[href^='#l']")
            assert links.count() == N_LATENTS and page.locator("details").count() == N_LATENTS
            assert page.locator("details[open]").count() == 0 and not page.locator(".ctx").first.is_visible()
            sections = page.evaluate(CONTEXTS_JS)
            for it, sec, href in zip(items, sections, links.evaluate_all("els => els.map(a => a.hash)")):
                n = it["latent"]
                assert href == f"#l{n}" and sec["target"] == f"l{n}", (href, sec["target"])
                assert sec["summary"].startswith(f"latent {n} ") and f"({it['count']} tokens)" in sec["summary"]
                assert len(sec["contexts"]) == len(it["examples"]) <= N_EXAMPLES

            # shading: per context, one outlined token (the row the context was chosen for); opacity = activation
            # relative to the context's peak, so the order of the shades is the order of the activations
            graded = 0
            for it, sec in zip(items, sections):
                for j, (ex, ctx) in enumerate(zip(it["examples"], sec["contexts"])):
                    assert [s["text"] for s in ctx] == [t["text"] for t in ex["tokens"]]  # shown as decoded
                    assert [s["max"] for s in ctx] == [t["max"] for t in ex["tokens"]]
                    assert sum(s["max"] for s in ctx) == 1
                    peak = max([t["act"] for t in ex["tokens"]] + [ex["activation"]])
                    alphas = [_alpha(s["bg"]) for s in ctx]
                    for s, t, a in zip(ctx, ex["tokens"], alphas):
                        assert a == pytest.approx(max(t["act"], 0) / peak, abs=0.006), (s, t)
                        assert f"act={t['act']:.3g}" in s["title"] and s["title"].startswith(repr(t["text"]))
                        assert (s["outline"] == "solid") == s["max"]
                    order = sorted(range(len(ctx)), key=lambda i: ex["tokens"][i]["act"])
                    assert all(alphas[a] <= alphas[b] + 1e-9 for a, b in zip(order, order[1:]))
                    graded += sum(0.05 < a < 0.95 for a in alphas)
                    if j == 0:  # the latent's strongest context: its outlined token is the most intense one
                        top = next(i for i, s in enumerate(ctx) if s["max"])
                        assert alphas[top] == 1.0 and alphas[top] == max(alphas)
                        assert ex["activation"] == pytest.approx(it["max_activation"])
            assert graded > 20  # intermediate shades exist: the check above is not all zeros and ones

            # a summary click opens a section and shows its contexts; a second click closes it
            n = next(it["latent"] for it in items if it["examples"])
            summary = page.locator(f"details:has(#l{n}) > summary")
            summary.click()
            assert page.locator(f"details:has(#l{n})").evaluate("d => d.open")
            assert page.locator(f"#l{n} .ctx").first.is_visible()
            tok = page.locator(f"#l{n} .ctx").first.locator(".tok.max")
            expected = next(t for t in items[n]["examples"][0]["tokens"] if t["max"])
            assert tok.is_visible() and tok.text_content() == expected["text"]
            summary.click()
            assert not page.locator(f"#l{n} .ctx").first.is_visible()

            # an index link far down the page opens that latent's section and scrolls it into view, summary included
            far = [it["latent"] for it in items if it["examples"]][-1]
            page.evaluate("window.scrollTo(0, 0)")
            page.click(f"table a[href='#l{far}']")
            page.wait_for_function(f"location.hash === '#l{far}'")
            assert page.locator(f"details:has(#l{far})").evaluate("d => d.open")
            assert page.locator(f"#l{far} .ctx").first.is_visible()
            box = page.locator(f"details:has(#l{far}) > summary").bounding_box()
            assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 800, box
            assert page.evaluate("window.scrollY") > 0

            assert errors == [], errors
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
        finally:
            browser.close()


def test_feature_page_shows_hostile_text_without_running_it(feature_page):
    from playwright.sync_api import sync_playwright

    path, res = feature_page
    html = path.read_text()
    assert "<script" not in html and "&lt;script&gt;" in html and "&lt;/script&gt;" in html
    # which contexts hold the hostile tokens: the corpus guarantees some (a quarter of its documents)
    hits = [(it["latent"], j) for it in res["latents"] for j, e in enumerate(it["examples"])
            if any(t["text"] == "<script>" for t in e["tokens"])]
    assert hits, "no context contains the <script> token: the escaping checks below would be vacuous"
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.evaluate("typeof window.__pwned2") == "undefined"
            assert page.evaluate("document.scripts.length") == 0 and page.evaluate("document.images.length") == 0
            lat, j = hits[0]
            page.click(f"table a[href='#l{lat}']")
            ctx = page.locator(f"#l{lat} .ctx").nth(j)
            assert ctx.is_visible()
            span = ctx.locator(".tok", has_text="<script>").first  # the whole token, shown as its text
            assert span.is_visible() and span.inner_text() == "<script>"
            assert span.get_attribute("title").startswith("'<script>' id=")
            text = "".join(t["text"] for t in res["latents"][lat]["examples"][j]["tokens"])
            assert "<script>" in ctx.inner_text() and text in ctx.inner_text().replace("\n", "")
            # every hostile character sequence that made it into a context is displayed literally
            body = page.evaluate("document.body.textContent")
            assert "<script>" in body and "</script>" in body
            shown = [e for it in res["latents"] for e in it["examples"]
                     if "onerror" in "".join(t["text"] for t in e["tokens"])]
            for e in shown:
                assert "".join(t["text"] for t in e["tokens"]) in body
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert errors == [], errors
        finally:
            browser.close()
