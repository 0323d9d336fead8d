#!/usr/bin/env python
"""How long the web app takes from the click to each output, against ``generate_midi``'s own time, as JSON.

Serves the app (``launch_app``) on a free local port in this process, drives it with Playwright on the system
Chromium, and for each round: presses Generate for a new piece of ``--events`` events with ``--seed``, and records
the seconds from the click to the ``.mid`` download link, to the final piano roll and to the audio player (when
fluidsynth is installed); then runs ``generate_midi`` for the same request in the same process (the model already
loaded). ``--busy N`` starts N processes that keep a core busy for the whole run (a shared server).

    python scripts/bench_app.py --events 512 --rounds 3
    python scripts/bench_app.py --events 512 --rounds 3 --busy 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import socket
import statistics
import time

from bench_common import cpu_model, versions

from midi_event_transformer import DEFAULT_MODEL, generate_midi
from midi_event_transformer.apps.web import launch_app
from midi_event_transformer.generation.loading import load_model_and_tokenizer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spin() -> None:  # a busy process: one core, until terminated
    while True:
        pass


def _click_to_outputs(page, events: int, seed: int, timeout_s: float, audio: bool) -> dict[str, float | str]:
    page.locator("#met-random-seed input").uncheck()
    for element, value in (("met-events", events), ("met-seed", seed)):
        box = page.locator(f"#{element} input[type=number]")
        box.fill(str(value))
        box.press("Tab")
    timings: dict[str, float | str] = {}
    start = time.perf_counter()
    page.click("#met-generate")
    page.locator("#met-sample-0-midi a").first.wait_for(state="attached", timeout=timeout_s * 1000)
    timings["click_to_midi_s"] = time.perf_counter() - start
    page.locator("#met-sample-0-roll img").wait_for(state="visible", timeout=timeout_s * 1000)
    timings["click_to_piano_roll_s"] = time.perf_counter() - start
    if audio:
        page.locator("#met-sample-0-audio audio").first.wait_for(state="attached", timeout=timeout_s * 1000)
        timings["click_to_audio_s"] = time.perf_counter() - start
    page.wait_for_function("document.querySelector('#met-status').innerText.includes('Done')",
                           timeout=timeout_s * 1000)
    timings["status"] = page.locator("#met-status").inner_text().strip()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0, help="processes that keep a core busy during the run")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from midi_event_transformer.evaluation.audio import audio_problem

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.error("Chromium not found (apt-get install chromium)")
    audio = audio_problem() is None
    model, tokenizer = load_model_and_tokenizer(DEFAULT_MODEL, None)
    port = _free_port()
    app = launch_app(DEFAULT_MODEL, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    rounds = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            _click_to_outputs(page, 16, args.seed, args.timeout_s, audio)  # warm-up: the model loaded in the app
            for _ in range(args.rounds):
                timings = _click_to_outputs(page, args.events, args.seed, args.timeout_s, audio)
                start = time.perf_counter()
                generate_midi(model, tokenizer, events=args.events, seed=args.seed, progress=False)
                timings["generate_midi_s"] = time.perf_counter() - start
                timings["midi_over_generate"] = timings["click_to_midi_s"] / timings["generate_midi_s"]
                rounds.append(timings)
            browser.close()
    finally:
        for spinner in spinners:
            spinner.terminate()
        app.close()

    def median(key: str) -> float | None:
        values = [r[key] for r in rounds if key in r]
        return round(statistics.median(values), 3) if values else None

    summary = {key: median(key) for key in ("click_to_midi_s", "click_to_piano_roll_s", "click_to_audio_s",
                                             "generate_midi_s", "midi_over_generate")}
    bound = summary["generate_midi_s"] * 1.2 + 1.0
    print(json.dumps({"events": args.events, "seed": args.seed, "busy_processes": args.busy, "rounds": rounds,
                      "median": summary, "target_click_to_midi_s": round(bound, 3),
                      "target_met": summary["click_to_midi_s"] <= bound, "cpu": cpu_model(), "versions": versions()},
                     indent=2))


if __name__ == "__main__":
    main()
