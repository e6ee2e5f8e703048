"""Shared by the browser tests: Debian's Chromium driven by playwright, skipped cleanly where it cannot run, and the
hostile strings a page must show as text and never run."""
from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("MECHSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<script>window.__pwned=1</script>"
EVIL2 = "<img src=x onerror=\"window.__pwned2=1\">"


def need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"chromium not installed at {CHROMIUM} (run `make browser`)")


def launch(p):
    """A headless Chromium from a `sync_playwright()` handle (skips the test if none can start here)."""
    need_chromium()
    try:
        return p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage"])
    except Exception as err:  # a chromium that cannot start here
        pytest.skip(f"chromium did not start: {err}")


def open_page(browser, path):
    """`path` opened in a new page of `browser`; returns (page, the URLs of every request it made)."""
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    return page, requests
