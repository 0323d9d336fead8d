#!/usr/bin/env python
"""How long the web app takes from the click to each output, against ``generate_midi``'s own time, as JSON.

Serves the app (``launch_app``) on a free local port in this process, with the model it also hands to
``generate_midi`` (loaded once, in ``--dtype``), and drives it with Playwright on the system Chromium. Each round
presses Generate for a new piece of ``--events`` events with ``--seed`` and reads, from the page itself (a
``MutationObserver`` and the click's own time, ``performance.now()``), the seconds from the click to the ``.mid``
download link, to the final piano roll (its picture loaded) and to the audio player (when fluidsynth is
installed); then it runs ``generate_midi`` for the same request in the same process, from the main thread (as the
CLI) and from a worker thread (as the app), and compares with the faster (the order alternates from round to
round). One warm-up round of each comes first. ``--busy N`` starts N processes that each keep a core busy
for the whole run (a shared machine). The target the issue sets: the click to the ``.mid`` link within
1.2 x ``generate_midi``'s time + 1 s (medians of the rounds).

    python scripts/bench_app.py --events 512 --rounds 5
    python scripts/bench_app.py --events 512 --rounds 5 --busy 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout

from bench_common import cpu_model, versions

from midi_event_transformer import DEFAULT_MODEL, generate_midi
from midi_event_transformer.apps.web import launch_app
from midi_event_transformer.generation.loading import DTYPE_NAMES, load_model_and_tokenizer

#: Records, in the page, the click on Generate and when each output of sample 1 appears after it (ms since the
#: click): ``midi`` (the download link), ``roll`` (the piano-roll picture, loaded), ``audio`` (the player's WAV
#: download link), ``done`` (the status line says Done). The page clears the last request's outputs first: an output
#: counts once it has been absent since the click.
RECORDER = """() => {
  const selectors = {midi: ['#met-sample-0-midi a[href]', 'href'], roll: ['#met-sample-0-roll img', 'src'],
                     audio: ['#met-sample-0-audio a[download]', 'href']};
  const bench = window.__bench = {t0: null, marks: {}, cleared: {}};
  const check = () => {
    if (bench.t0 === null) return;
    const now = performance.now() - bench.t0;
    for (const [key, [selector, attribute]] of Object.entries(selectors)) {
      if (key in bench.marks) continue;
      const element = document.querySelector(selector);
      if (!element || !element.getAttribute(attribute)) { bench.cleared[key] = true; continue; }
      if (!bench.cleared[key]) continue;  // the last request's output, not cleared yet
      if (key === 'roll' && !(element.complete && element.naturalWidth > 0)) {
        element.addEventListener('load', check, {once: true});
        continue;
      }
      bench.marks[key] = now;
    }
    const status = document.querySelector('#met-status');
    const done = status && status.innerText.startsWith('Done');
    if (!done) bench.cleared.done = true;
    else if (bench.cleared.done && !('done' in bench.marks)) bench.marks.done = now;
  };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                      attributes: true, attributeFilter: ['href', 'src']});
  document.querySelector('#met-generate').addEventListener('click', () => {
    bench.t0 = performance.now(); bench.marks = {}; bench.cleared = {}; check();
  }, true);
}"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _set_request(page, events: int, seed: int) -> None:
    page.locator("#met-random-seed input").uncheck()
    for element, value in (("met-events", events), ("met-seed", seed)):
        box = page.locator(f"#{element} input[type=number]")
        box.fill(str(value))
        box.press("Tab")


def _app_round(page, audio: bool, timeout_s: float) -> dict[str, float | str]:
    """Press Generate and wait for every output; the seconds from the click to each, and the status line."""
    wanted = ["midi", "roll", "done"] + (["audio"] if audio else [])
    page.click("#met-generate")
    page.wait_for_function(f"() => {json.dumps(wanted)}.every((key) => key in window.__bench.marks) && "
                           "!document.querySelector('#met-status').innerText.includes('Now ')",
                           polling=250, timeout=timeout_s * 1000)
    marks = page.evaluate("() => window.__bench.marks")
    timings: dict[str, float | str] = {f"click_to_{name}_s": round(marks[key] / 1000, 3) for key, name in (
        ("midi", "midi"), ("roll", "piano_roll"), ("audio", "audio"), ("done", "done_status")) if key in marks}
    timings["status"] = page.locator("#met-status").inner_text().strip()
    return timings


def _generate_round(model, tokenizer, events: int, seed: int) -> dict[str, float]:
    """``generate_midi``'s seconds for the request, called from this (the main) thread as the CLI does, and from a
    worker thread as the app does (PyTorch's intra-op threads behave differently there: on a busy machine the main
    thread's two-thread operations can be many times slower)."""
    seconds = {}
    for where in ("main_thread", "worker_thread"):
        def run(where: str = where) -> None:
            start = time.perf_counter()
            generate_midi(model, tokenizer, events=events, seed=seed, progress=False)
            seconds[f"generate_midi_{where}_s"] = round(time.perf_counter() - start, 3)

        if where == "main_thread":
            run()
        else:
            worker = threading.Thread(target=run)
            worker.start()
            worker.join()
    seconds["generate_midi_s"] = min(seconds.values())
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="processes that keep a core busy during the run")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                        help="the model's dtype, for the app and generate_midi (default: the model's default)")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from midi_event_transformer.evaluation.audio import audio_problem

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.error("Chromium not found (apt-get install chromium)")
    audio = audio_problem() is None
    model, tokenizer = load_model_and_tokenizer(DEFAULT_MODEL, device="cpu", dtype=args.dtype)
    port = _free_port()
    with redirect_stdout(sys.stderr):
        app = launch_app(model, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    rounds = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#met-generate")
            page.evaluate(RECORDER)
            _set_request(page, 16, args.seed)  # warm-up: the app's first request, generate_midi's first call
            _app_round(page, audio, args.timeout_s)
            _generate_round(model, tokenizer, 16, args.seed)
            _set_request(page, args.events, args.seed)
            for index in range(args.rounds):
                if index % 2:
                    generated = _generate_round(model, tokenizer, args.events, args.seed)
                    timings = _app_round(page, audio, args.timeout_s)
                else:
                    timings = _app_round(page, audio, args.timeout_s)
                    generated = _generate_round(model, tokenizer, args.events, args.seed)
                timings.update(generated)
                timings["midi_over_generate"] = round(timings["click_to_midi_s"] / generated["generate_midi_s"], 3)
                rounds.append(timings)
            browser.close()
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.wait()
        with redirect_stdout(sys.stderr):  # gradio says it closes: stdout is the JSON only
            app.close()

    def median(key: str) -> float | None:
        values = [r[key] for r in rounds if key in r]
        return round(statistics.median(values), 3) if values else None

    summary = {key: median(key) for key in (
        "click_to_midi_s", "click_to_piano_roll_s", "click_to_audio_s", "click_to_done_status_s",
        "generate_midi_main_thread_s", "generate_midi_worker_thread_s", "generate_midi_s", "midi_over_generate")}
    bound = summary["generate_midi_s"] * 1.2 + 1.0
    print(json.dumps({"events": args.events, "seed": args.seed, "dtype": args.dtype, "busy_processes": args.busy,
                      "audio": audio, "rounds": rounds, "median": summary,
                      "target_click_to_midi_s": round(bound, 3), "target_met": summary["click_to_midi_s"] <= bound,
                      "rounds_within_target": sum(r["click_to_midi_s"] <= r["generate_midi_s"] * 1.2 + 1.0
                                                  for r in rounds),
                      "cpu": cpu_model(), "versions": versions()}, indent=2))


if __name__ == "__main__":
    main()
