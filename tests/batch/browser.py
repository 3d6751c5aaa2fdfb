"""A batch report opened as a user opens it: in headless Chromium (the
system's ``chromium``, driven by Playwright; no browser is downloaded).

    python -m tests.batch.browser REPORT.html SCREENSHOT.jpg   # the docs' screenshot
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

# what Chromium needs on a machine without a network or a display (as root)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, ("the browser test needs Chromium: `./pipeline test` installs Debian's chromium package as root; "
                   "elsewhere install chromium (or chromium-browser) yourself")
    return found


def open_report(report: Path, screenshot: Path | None = None, height: int | None = None) -> dict:
    """What the page shows: ``counts`` (each ``data-count``), ``images`` and
    ``broken`` (images that did not load), ``errors`` (console errors and
    uncaught exceptions), ``requests`` (anything fetched besides the page)."""
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.resolve().as_uri(), wait_until="load", timeout=60_000)
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])")
            counts = page.eval_on_selector_all(
                "[data-count]", "els => Object.fromEntries(els.map(e => [e.dataset.count, e.textContent]))")
            if screenshot is not None:
                clip = {"x": 0, "y": 0, "width": 1400, "height": height} if height else None
                page.screenshot(path=str(screenshot), full_page=True, clip=clip,
                                **({"type": "jpeg", "quality": 80} if screenshot.suffix == ".jpg" else {}))
        finally:
            context.close()
    return {"counts": {name: int(text.replace(",", "")) for name, text in counts.items()},
            "images": len(images), "broken": [alt for alt, ok in images if not ok], "errors": errors,
            "requests": [url for url in requests if url != report.resolve().as_uri()]}


if __name__ == "__main__":
    seen = open_report(Path(sys.argv[1]), Path(sys.argv[2]), height=int(sys.argv[3]) if len(sys.argv) > 3 else 1800)
    print(seen["counts"], f"{seen['images']} images, {len(seen['broken'])} broken, errors: {seen['errors']}")
