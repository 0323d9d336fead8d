#!/usr/bin/env python
"""The README's screenshot of the web app: the embedded model generates a piece, then the page is photographed.

Serves ``midi-event-transformer app`` on a free local port, drives it with Playwright on the system Chromium (as
``tests/test_app_browser.py`` does), generates ``--events`` events with ``--seed``, waits for every output (the
audio too) and saves a full-page PNG; prints the status line.

    python scripts/app_screenshot.py docs/app.png
"""

from __future__ import annotations

import argparse
import shutil
import socket

from midi_event_transformer.apps.web import launch_app


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="where to write the PNG")
    parser.add_argument("--events", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.error("Chromium not found (apt-get install chromium)")
    port = _free_port()
    app = launch_app(None, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(args.timeout_s * 1000)
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#met-random-seed input").uncheck()
            for element, value in (("met-events", args.events), ("met-seed", args.seed)):
                box = page.locator(f"#{element} input[type=number]")
                box.fill(str(value))
                box.press("Tab")
            page.click("#met-generate")
            page.locator("#met-sample-0-roll img").wait_for(state="visible")
            page.wait_for_function("() => { const text = document.querySelector('#met-status').innerText; "
                                   "return text.startsWith('Done') && !text.includes('Now '); }")  # audio too
            page.screenshot(path=args.output, full_page=True)
            print(page.locator("#met-status").inner_text().strip())  # the status line, for the README
            browser.close()
    finally:
        app.close()


if __name__ == "__main__":
    main()
