"""The web app as a person uses it: served on a free local port, driven with Playwright on the system Chromium.

Needs gradio and playwright (``pip install -e ".[dev]"``) and Debian's ``chromium`` package (no browser download:
Playwright launches ``/usr/bin/chromium``). Without them the tests skip with the reason, except under ``CI=true``,
where a missing piece fails the run. Set ``MIDI_EVENT_TRANSFORMER_APP_SCREENSHOT=docs/app.png`` to keep the
README's screenshot.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
import wave
from pathlib import Path

import mido
import pytest
import torch
from generation_helpers import midi_bytes, multitrack_song, notes_by_track, programs, reloaded, tiny_model

from midi_event_transformer import DEFAULT_MODEL, EOS_ID, generate_midi
from midi_event_transformer.evaluation.audio import audio_problem
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import EVENT_TYPE_IDS, parameter_range

torch.set_num_threads(1)

CHROMIUM_NAMES = ("chromium", "chromium-browser")
SCREENSHOT_ENV = "MIDI_EVENT_TRANSFORMER_APP_SCREENSHOT"
RESULT_TIMEOUT_MS = 180_000
DAMAGED_FIXTURE = "midi/fixtures/jazzsoft/midi/test-corrupt-file-missing-byte.mid"

# Every frame the live piano roll draws (its note count, set by the page's script), with the progress bar's value
# and the status line at that moment.
RECORD_LIVE_ROLL = """() => {
  window.__liveRolls = [];
  const root = document.querySelector('#met-live-roll');
  const record = () => {
    const canvas = root.querySelector('canvas');
    const bar = document.querySelector('#met-status progress');
    const status = document.querySelector('#met-status');
    if (canvas && canvas.dataset.frames && (!window.__liveRolls.length
                                            || window.__liveRolls.at(-1).frames !== canvas.dataset.frames))
      window.__liveRolls.push({frames: canvas.dataset.frames, notes: Number(canvas.dataset.notes),
                               done: bar ? Number(bar.value) : null, max: bar ? Number(bar.max) : null,
                               status: status ? status.innerText : ''});
  };
  new MutationObserver(record).observe(root, {subtree: true, childList: true, attributes: true,
                                              attributeFilter: ['data-frames']});
}"""


def _missing(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the app's browser tests must run; .ci/run installs it)")
    pytest.skip(reason)


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    _missing("Chromium not found (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny random model, kept to short pieces so that their audio renders at once: events at most a beat
    apart, notes shorter than two beats, no tempo changes, 4 tracks (a random model's pieces otherwise last hours,
    on up to 128 tracks, which fluidsynth does not play)."""
    model = tiny_model()
    model.generation_config.suppress_tokens = [
        EOS_ID, EVENT_TYPE_IDS["set_tempo"], *parameter_range("time1")[2:], *parameter_range("duration")[32:],
        *parameter_range("track")[4:]]
    directory = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(directory)
    MidiEventTransformerTokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def app_url(model_dir):
    try:
        import gradio  # noqa: F401
    except ImportError:
        _missing('gradio not installed (pip install -e ".[app]")')
    from midi_event_transformer.apps.web import launch_app

    port = _free_port()
    app = launch_app(str(model_dir), host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
    with pytest.raises(OSError):  # the server is stopped
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright not installed (pip install playwright)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    opened.goto(app_url)
    opened.wait_for_selector("#met-generate")
    yield opened
    context.close()


def set_number(page, element_id: str, value: int | float) -> None:
    """Type a value into a slider's or number box's input and leave it (Gradio takes it on blur)."""
    box = page.locator(f"#{element_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def choose(page, element_id: str, *options: str) -> None:
    """Pick options of a (searchable) dropdown by typing them."""
    box = page.locator(f"#{element_id} input")
    for option in options:
        box.click()
        box.fill(option)
        box.press("Enter")
    box.press("Escape")


def set_seed(page, seed: int) -> None:
    page.locator("#met-random-seed input").uncheck()
    set_number(page, "met-seed", seed)


def flute_song(path: Path) -> None:
    """Write a one-track file to ``path``: a flute (program 73) playing C, E, G, C' a beat each."""
    song = mido.MidiFile(type=1, ticks_per_beat=480)
    song.tracks.append(mido.MidiTrack([mido.Message("program_change", channel=0, program=73)]))
    for pitch in (60, 64, 67, 72):
        song.tracks[0] += [mido.Message("note_on", note=pitch, velocity=80),
                           mido.Message("note_off", note=pitch, time=480)]
    song.save(path)


def download_sample(page, index: int, directory: Path) -> Path:
    link = page.locator(f"#met-sample-{index}-midi a").first
    link.wait_for(state="visible", timeout=RESULT_TIMEOUT_MS)
    with page.expect_download() as download:
        link.click()
    path = directory / download.value.suggested_filename
    download.value.save_as(path)
    return path


def shows_image(page, selector: str) -> bool:
    return page.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0")


def test_generate_streams_the_piano_roll_and_downloads_a_midi_file(page, model_dir, tmp_path):
    choose(page, "met-instruments", "Violin", "Cello")
    set_number(page, "met-bpm", 120)
    choose(page, "met-time-signature", "3/4")
    set_number(page, "met-events", 48)
    set_seed(page, 7)
    page.evaluate(RECORD_LIVE_ROLL)
    page.click("#met-generate")

    path = download_sample(page, 0, tmp_path)
    assert path.name == "generated_seed7_0.mid"
    midi = reloaded(path)
    assert programs(midi) == {(0, 40), (1, 42)}
    assert [(m.numerator, m.denominator) for track in midi.tracks for m in track
            if m.type == "time_signature"][0] == (3, 4)
    assert round(mido.tempo2bpm(next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo"))) == 120
    # a thin layer: the same request through Python gives the same file
    expected = generate_midi(str(model_dir), instruments=["Violin", "Cello"], bpm=120, time_signature="3/4",
                             events=48, seed=7, progress=False)[0]
    assert path.read_bytes() == midi_bytes(expected)

    assert shows_image(page, "#met-sample-0-roll img")
    if audio_problem() is None:  # fluidsynth and a soundfont: a player with the rendered WAV
        link = page.locator("#met-sample-0-audio a[download]")
        assert link.get_attribute("download") == "generated_seed7_0.wav"
        with wave.open(io.BytesIO(page.request.get(link.get_attribute("href")).body())) as audio:
            seconds = audio.getnframes() / audio.getframerate()
        assert midi.length <= seconds <= midi.length + 5  # + fluidsynth's release tail
        page.wait_for_function("document.querySelector('#met-sample-0-audio #duration')?.innerText !== '0:00'")
        # the player read it (it comes last: after the .mid and the piano roll)
    else:
        assert "fluidsynth" in page.locator("#met-audio-note").inner_text()
    assert page.locator("#met-sample-1").is_hidden()
    status = page.locator("#met-status").inner_text()
    assert status.startswith("Done: 1 sample, seed 7: 48 events generated in ") and "events/s, plus " in status
    assert page.locator("#met-seed input").input_value() == "7"
    live = page.evaluate("window.__liveRolls")
    assert live and max(shown["notes"] for shown in live) > 0, live  # the page drew the notes
    assert page.locator("#met-live-roll canvas").get_attribute("data-notes") == "0"  # the sample's roll replaces it

    screenshot = tmp_path / "app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_ENV])


def test_bad_input_is_reported_and_the_page_still_generates(page, shared_dir, tmp_path):
    page.get_by_role("tab", name="Continue a MIDI file").click()
    page.click("#met-generate")  # at once: the open tab is known in the page, without a round trip
    page.locator("#met-status .met-error", has_text="Cannot generate: upload a MIDI file to continue").wait_for()
    page.set_input_files("#met-prompt-file input[type=file]", str(shared_dir / DAMAGED_FIXTURE))
    page.locator("#met-status .met-error", has_text="test-corrupt-file-missing-byte.mid is not a readable MIDI file: "
                 "truncated chunk").wait_for()
    page.click("#met-generate")  # Generate with it says so too
    error = page.locator("#met-status .met-error", has_text="Cannot generate: ")
    error.wait_for()
    assert "Cannot generate: test-corrupt-file-missing-byte.mid is not a readable MIDI file" in error.inner_text()
    assert page.locator("#met-sample-0").is_hidden()

    page.get_by_role("tab", name="New piece").click()  # an impossible time signature is reported too
    choose(page, "met-time-signature", "7/3")
    page.click("#met-generate")
    page.locator("#met-status .met-error", has_text="denominator must be a power of two, got 3 in 7/3").wait_for()

    page.get_by_role("tab", name="Continue a MIDI file").click()
    flute_song(tmp_path / "flute.mid")
    page.locator("#met-prompt-file button[aria-label='Clear']").click()
    page.set_input_files("#met-prompt-file input[type=file]", str(tmp_path / "flute.mid"))
    page.locator("#met-status", has_text="flute.mid: ").wait_for()
    set_number(page, "met-events", 16)
    set_seed(page, 3)
    page.click("#met-generate")
    path = download_sample(page, 0, tmp_path / "downloads")
    continued = reloaded(path)
    notes = [m.note for track in continued.tracks for m in track if m.type == "note_on" and m.velocity]
    assert notes[:4] == [60, 64, 67, 72]  # the prompt comes first
    assert "Done: 1 sample, seed 3: 16 events generated" in page.locator("#met-status").inner_text()


def test_a_track_is_added_to_an_uploaded_file(page, model_dir, tmp_path):
    flute_song(tmp_path / "flute.mid")
    page.get_by_role("tab", name="Continue a MIDI file").click()
    page.set_input_files("#met-prompt-file input[type=file]", str(tmp_path / "flute.mid"))
    page.locator("#met-status", has_text="tracks with notes: 1: Flute (channel 1, 4 notes)").wait_for()
    page.locator("#met-prompt-action").get_by_label("add a track").check()
    choose(page, "met-new-track", "Violin")
    set_number(page, "met-events", 16)  # the new track's events at most
    set_seed(page, 5)
    page.click("#met-generate")

    path = download_sample(page, 0, tmp_path / "downloads")
    added = reloaded(path)
    tokenizer = MidiEventTransformerTokenizer()
    before = notes_by_track(tokenizer.decode_midi(tokenizer.encode_midi(str(tmp_path / "flute.mid"))))
    after = notes_by_track(added)
    assert set(after) <= {1, 2} and after[1] == before[1]  # the flute is kept note for note
    assert {(0, 73), (1, 40)} <= programs(added)  # and a violin joins it on the next channel
    expected = generate_midi(str(model_dir), prompt=str(tmp_path / "flute.mid"), add_track="Violin", events=16,
                             seed=5, progress=False)[0]
    assert path.read_bytes() == midi_bytes(expected)
    assert "Done: 1 sample, seed 5: " in page.locator("#met-status").inner_text()


def test_bars_of_an_uploaded_file_are_rewritten(page, model_dir, tmp_path):
    """The "rewrite bars" choice: bars 2-3 of a 4-bar song, its first track only; no events are sent."""
    song = tmp_path / "song.mid"
    multitrack_song(bars=4).save(song)
    page.get_by_role("tab", name="Continue a MIDI file").click()
    page.set_input_files("#met-prompt-file input[type=file]", str(song))
    page.locator("#met-status", has_text="tracks with notes: 1: ").wait_for()
    page.locator("#met-prompt-action").get_by_label("rewrite bars").check()
    page.locator("#met-infill-bars textarea, #met-infill-bars input").first.fill("2-3")
    choose(page, "met-infill-tracks", "1: ")
    set_number(page, "met-events", 7)  # not sent: the span decides
    set_seed(page, 3)
    page.click("#met-generate")

    path = download_sample(page, 0, tmp_path / "downloads")
    expected = generate_midi(str(model_dir), prompt=str(song), infill_bars="2-3", infill_tracks=[1], seed=3,
                             progress=False)[0]
    assert path.read_bytes() == midi_bytes(expected)
    tokenizer = MidiEventTransformerTokenizer()
    before = notes_by_track(tokenizer.decode_midi(tokenizer.encode_midi(str(song))))
    after = notes_by_track(reloaded(path))
    assert after[2] == before[2] and after[3] == before[3]  # the other tracks are kept, inside the span too
    assert page.locator("#met-sample-0-roll img").wait_for(state="visible") is None


def test_two_tabs_generating_at_once_both_get_their_own_files(browser, page, model_dir, tmp_path):
    other = page.context.new_page()
    other.set_default_timeout(60_000)
    other.goto(page.url)
    other.wait_for_selector("#met-generate")
    for tab, seed in ((page, 11), (other, 12)):
        set_number(tab, "met-events", 32)
        set_seed(tab, seed)
    page.click("#met-generate")
    other.click("#met-generate")  # queued behind the first: one generation at a time
    first, second = download_sample(page, 0, tmp_path / "a"), download_sample(other, 0, tmp_path / "b")
    assert (first.name, second.name) == ("generated_seed11_0.mid", "generated_seed12_0.mid")
    for path, seed in ((first, 11), (second, 12)):
        expected = generate_midi(str(model_dir), events=32, seed=seed, progress=False)[0]
        assert path.read_bytes() == midi_bytes(expected)


@pytest.mark.skipif(not (Path(DEFAULT_MODEL) / "config.json").is_file(), reason="the embedded model is missing")
def test_the_live_roll_grows_during_a_512_event_generation_of_the_shipped_model(page, tmp_path):
    page.locator("#met-model input, #met-model textarea").first.fill(DEFAULT_MODEL)
    set_number(page, "met-events", 512)
    set_seed(page, 0)
    page.evaluate(RECORD_LIVE_ROLL)
    page.click("#met-generate")
    path = download_sample(page, 0, tmp_path)
    assert path.read_bytes() == midi_bytes(generate_midi(events=512, seed=0, progress=False)[0])
    live = page.evaluate("window.__liveRolls")
    while_generating = [shown for shown in live if not shown["status"].startswith("Done")
                        and shown["done"] is not None and 0 < shown["done"] < 512]
    counts = [shown["notes"] for shown in while_generating]
    assert len(set(counts)) >= 2 and counts == sorted(counts), live  # it changed at least twice, growing
    status = page.locator("#met-status").inner_text()
    assert status.startswith("Done: 1 sample, seed 0: 512 events generated in ") and "events/s" in status


def test_an_int8_model_can_be_chosen(page, model_dir, tmp_path):
    choose(page, "met-dtype", "int8")
    set_number(page, "met-events", 16)
    set_seed(page, 4)
    page.click("#met-generate")
    path = download_sample(page, 0, tmp_path)
    expected = generate_midi(str(model_dir), dtype="int8", events=16, seed=4, progress=False)[0]
    assert path.read_bytes() == midi_bytes(expected)


def test_stop_ends_the_generation_and_the_page_goes_on(page):
    set_number(page, "met-events", 4000)
    page.click("#met-generate")
    page.wait_for_function("document.querySelector('#met-status progress')?.value > 8")
    page.click("#met-stop")
    page.locator("#met-status", has_text="Stopped.").wait_for()
    deadline = time.monotonic() + 10  # the worker thread (in this process) stops at its next token
    while any(t.name == "midi-event-transformer-generate" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the generation thread is still running"
        time.sleep(0.05)
    assert page.locator("#met-sample-0").is_hidden()  # stopped mid-generation: no file
    set_number(page, "met-events", 8)
    page.click("#met-generate")
    page.locator("#met-sample-0-midi a").wait_for(timeout=RESULT_TIMEOUT_MS)
