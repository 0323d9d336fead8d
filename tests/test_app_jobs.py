"""The web app's work without a browser (``web_jobs``): requests, the model store, the live preview streamer, the
generation job in its worker thread, and the files of each sample. No gradio needed."""

from __future__ import annotations

import time
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from generation_helpers import (
    midi_bytes,
    multitrack_song,
    notes_by_track,
    programs,
    random_model,
    reloaded,
    save_tiny_model,
    tiny_model,
)

from midi_event_transformer import generate_midi
from midi_event_transformer.apps.web import done_text, track_choices
from midi_event_transformer.apps.web_jobs import (
    AppRequest,
    GenerationCancelled,
    GenerationJob,
    LivePreview,
    ModelStore,
    write_samples,
    write_samples_in_stages,
)
from midi_event_transformer.evaluation.audio import audio_problem
from midi_event_transformer.generation.api import generate_rows
from midi_event_transformer.generation.known_instruments import write_training_data
from midi_event_transformer.generation.loading import is_int8_quantized
from midi_event_transformer.generation.musical_time import MusicalClock
from midi_event_transformer.generation.prompts import event_row
from midi_event_transformer.midi_writing import row_to_named_event
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import BOS_ID, EOS_ID, PAD_ID

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def models(model_dir) -> ModelStore:
    return ModelStore(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def loose_models(tmp_path_factory) -> ModelStore:
    """A tiny random model whose scores are not sharpened (it moves on in time and writes notes), EOS suppressed:
    for lengths in musical time and track edits, which end only when the piece reaches them."""
    model = random_model()
    model.generation_config.suppress_tokens = [EOS_ID]
    directory = tmp_path_factory.mktemp("loose_model")
    model.save_pretrained(directory)
    MidiEventTransformerTokenizer().save_pretrained(directory)
    return ModelStore(str(directory), device="cpu")


@pytest.fixture()
def song_file(tmp_path) -> Path:
    """A two-bar piece in three tracks (piano, bass, drums) with a tempo change."""
    path = tmp_path / "song.mid"
    multitrack_song(bars=2).save(path)
    return path


def run(job: GenerationJob) -> list:
    """Every update of a started job (frames included), once it has finished."""
    return list(job.start().updates(poll_seconds=0.05))


def notes_of(rows: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(start step, duration, pitch, channel)`` of each note of encoded rows (what a live frame holds)."""
    clock, notes = MusicalClock(), []
    for row in rows.tolist():
        clock.advance(row)
        event = row_to_named_event(row)
        if event is not None and event[0] == "note":
            notes.append((clock.step, event[1]["duration"], event[1]["pitch"], event[1]["channel"]))
    return notes


def test_request_gives_generate_midi_arguments():
    request = AppRequest(instruments=["Violin"], bpm=90.0, events=16, seed=3, num_samples=2)
    kwargs = request.generate_kwargs()
    assert kwargs["instruments"] == ["Violin"] and kwargs["bpm"] == 90.0 and kwargs["seed"] == 3
    assert kwargs["prompt"] is None and kwargs["time_signature"] is None and kwargs["progress"] is False
    assert AppRequest(prompt=Path("song.mid")).generate_kwargs()["prompt"] == "song.mid"
    assert AppRequest().generate_kwargs()["instruments"] is None  # none chosen: the model decides
    kwargs = AppRequest(prompt="song.mid", add_track="Violin", events=None, seconds=12.5).generate_kwargs()
    assert (kwargs["add_track"], kwargs["regenerate_track"], kwargs["events"], kwargs["seconds"], kwargs["bars"]) == (
        "Violin", None, None, 12.5, None)
    kwargs = AppRequest(prompt="song.mid", regenerate_track=2, bars=4).generate_kwargs()
    assert (kwargs["add_track"], kwargs["regenerate_track"], kwargs["bars"]) == (None, 2, 4)
    assert AppRequest(regenerate_track=2).edits_track and not AppRequest().edits_track


def test_model_store_loads_once_and_reloads_on_another_name(models, model_dir, tmp_path):
    model, tokenizer = models.get()
    assert models.get(None)[0] is model and models.get("")[0] is model
    assert models.get(str(model_dir))[0] is model  # the default by its name
    assert models.tokenizer() is tokenizer
    other = save_tiny_model(tmp_path / "other")
    assert models.get(str(other))[0] is not model
    with pytest.raises(ValueError, match="does not exist"):
        models.get(str(tmp_path / "no_model"))
    model = models.get()[0]
    assert model is not None and not is_int8_quantized(model)  # back to the default: loaded again (one at a time)
    quantized = models.get(None, "int8")  # the model and dtype are the key
    assert is_int8_quantized(quantized[0]) and models.get("", "int8") is quantized
    assert models.get(None, "float32")[0] is not quantized[0] and not is_int8_quantized(models.get()[0])
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        models.get(None, "int4")


def test_a_store_of_a_loaded_model_quantizes_a_copy():
    model = tiny_model()
    store = ModelStore(model, dtype="int8")
    quantized, _ = store.get()
    assert is_int8_quantized(quantized) and not is_int8_quantized(model)  # the app's model is left as it is
    assert store.get(None, "float32")[0] is model


def test_the_last_update_shows_the_whole_piece_when_the_files_take_time(models, monkeypatch):
    """The worker still writes the files after the last event: a frame taken then already holds every event, and
    the last update must show the whole piece all the same."""
    import midi_event_transformer.apps.web_jobs as web_jobs

    def slow_to_finish(*args, **kwargs):
        midis = generate_midi(*args, **kwargs)
        time.sleep(0.5)  # ten polls with every event generated and the job not done
        return midis

    monkeypatch.setattr(web_jobs, "generate_midi", slow_to_finish)
    job = GenerationJob(AppRequest(instruments=["Violin"], events=12, seed=0), models, frame_seconds=0.0)
    updates = list(job.start().updates(poll_seconds=0.05))
    whole = [update for update in updates[:-1] if update.frame is not None and update.frame.generated_events == [12]]
    assert whole  # a frame with every event came before the end
    assert updates[-1].frame is not None and updates[-1].frame.generated_events == [12]


def test_job_streams_frames_and_gives_the_files_of_generate_midi(models, model_dir):
    request = AppRequest(instruments=["Violin", "Cello"], time_signature="3/4", events=24, seed=5, num_samples=2)
    job = GenerationJob(request, models, frame_seconds=0.0)
    updates = run(job)
    midis = job.result()
    expected = generate_midi(str(model_dir), **request.generate_kwargs())
    assert [midi_bytes(m) for m in midis] == [midi_bytes(m) for m in expected]
    assert all(programs(m) == {(0, 40), (1, 42)} for m in midis)

    rows = generate_rows(str(model_dir), **request.generate_kwargs())
    frames = [update.frame for update in updates if update.frame is not None]
    assert frames and updates[-1].frame is frames[-1]  # the last update shows the whole piece
    assert frames[-1].notes == [notes_of(sample) for sample in rows] and frames[-1].generated_events == [24, 24]
    for earlier, later in zip(frames, frames[1:], strict=False):  # each frame extends the one before
        assert all(new[:len(old)] == old for old, new in zip(earlier.notes, later.notes, strict=True))
    assert updates[-1].events_done == 24 and updates[-1].events_total == 24
    assert job.preview.events_per_second() > 0 and job.preview.seconds() > 0
    assert job.preview.prompt_events == len(rows[0]) - 25  # BOS not counted


def test_generation_does_not_wait_for_a_page_that_never_takes_its_frames(models):
    job = GenerationJob(AppRequest(events=200, seed=1), models, frame_seconds=0.0)
    updates = job.start().updates(poll_seconds=0.01)
    assert next(updates).events_done == 0  # the page takes one update, then never asks again
    assert job._done.wait(60), "the generation waited for the page"
    assert job.preview.events_done == 200 and len(job.result()) == 1
    assert next(updates).frame.generated_events == [200]  # a page that comes back gets the newest frame

    preview = LivePreview(num_samples=1, events=1000)  # the streamer alone: put never blocks
    preview.put(torch.tensor([[BOS_ID] + [PAD_ID] * 7]))
    note = event_row("note", time1=1, time2=0, track=0, channel=0, pitch=60, velocity=80, duration=8).tolist()
    began = time.monotonic()
    for token in note * 1000:  # nobody reads a frame
        preview.put(torch.tensor([token]))
    assert time.monotonic() - began < 10 and preview.events_done == 1000
    assert preview.frame().notes == [[(16 * (i + 1), 8, 60, 0) for i in range(1000)]]


def test_job_reports_a_bad_request_and_an_unreadable_prompt(models, tmp_path):
    job = GenerationJob(AppRequest(time_signature="7/3", events=8, seed=0), models)
    run(job)
    with pytest.raises(ValueError, match="denominator must be a power of two"):
        job.result()
    text = tmp_path / "notes.mid"
    text.write_text("not a MIDI file")
    job = GenerationJob(AppRequest(prompt=text, events=8, seed=0), models)
    run(job)
    with pytest.raises(ValueError, match="notes.mid"):
        job.result()


def test_job_adds_a_track_and_keeps_the_others_note_for_note(loose_models, song_file):
    request = AppRequest(prompt=song_file, add_track="Violin", events=None, seed=4)
    job = GenerationJob(request, loose_models)
    updates = run(job)
    (midi,) = job.result()
    tokenizer = loose_models.tokenizer()
    before = notes_by_track(tokenizer.decode_midi(tokenizer.encode_midi(str(song_file))))  # the round trip
    after = notes_by_track(reloaded(midi))
    assert set(after) == {*before, 4} and after[4]  # the new track (after tracks 1-3) has notes
    assert all(after[track] == notes for track, notes in before.items())
    assert (2, 40) in programs(midi)  # a violin on the first free channel (0, 1 and 9 are taken)
    # the page's progress follows the time reached, up to where the prompt ends (a track edit ends there)
    prompt_end = MusicalClock.after(tokenizer.encode_midi(str(song_file))).seconds
    totals = {u.time_total for u in updates if u.stage == "generating"}
    assert len(totals) == 1 and totals.pop() == pytest.approx(prompt_end)
    assert all(u.events_total is None and u.time_unit == "s" for u in updates)
    assert job.progress().time_done == pytest.approx(prompt_end)
    assert updates[-1].frame is not None and len(updates[-1].frame.notes[0]) > len(before[1])
    assert [midi_bytes(m) for m in generate_midi(loose_models.default, **request.generate_kwargs())] == [
        midi_bytes(midi)]  # a thin layer over generate_midi


def test_job_with_a_length_in_seconds_gives_a_file_of_that_length(loose_models):
    request = AppRequest(instruments=["Violin"], bpm=120, events=None, seconds=6.0, seed=2)
    job = GenerationJob(request, loose_models)
    updates = run(job)
    (midi,) = job.result()
    tempo = max(m.tempo for track in midi.tracks for m in track if m.type == "set_tempo")
    assert abs(reloaded(midi).length - 6.0) <= tempo / 1e6  # within one beat at the piece's tempo
    assert all((u.time_total, u.time_unit, u.events_total) == (6.0, "s", None) for u in updates)
    done = [u.time_done for u in updates]
    assert done == sorted(done) and job.progress().time_done == pytest.approx(6.0, abs=tempo / 1e6)
    assert updates[-1].frame is not None


def test_job_reports_a_bad_track_edit(loose_models, song_file):
    for request, message in ((AppRequest(prompt=song_file, regenerate_track=7, seed=0), "the prompt has no track 7"),
                             (AppRequest(prompt=song_file, add_track="Not An Instrument", seed=0),
                              "Not An Instrument"),
                             (AppRequest(prompt=song_file, add_track="Violin", seconds=-1.0, seed=0),
                              "seconds must be a positive number")):
        job = GenerationJob(request, loose_models)
        run(job)
        with pytest.raises(ValueError, match=message):
            job.result()


def test_track_choices_number_the_tracks_as_tokenize_does(song_file):
    rows = MidiEventTransformerTokenizer().encode_midi(str(song_file))
    assert track_choices(rows) == [("1: Acoustic Grand Piano (channel 1, 16 notes)", 1),
                                   ("2: Electric Bass (finger) (channel 2, 4 notes)", 2),
                                   ("3: drums (channel 10, 8 notes)", 3)]


def test_cancel_stops_the_generation(models):
    job = GenerationJob(AppRequest(events=4000, seed=0), models)
    for update in job.start().updates(poll_seconds=0.05):
        if update.events_done > 0:
            job.cancel()
    assert not job.running
    with pytest.raises(GenerationCancelled):
        job.result()
    assert 0 < job.preview.events_done < 4000


def test_an_int8_request_gives_the_files_of_generate_midi_int8(models, model_dir):
    request = AppRequest(instruments=["Violin"], events=16, seed=2, dtype="int8")
    job = GenerationJob(request, models)
    run(job)
    expected = generate_midi(str(model_dir), dtype="int8", **request.generate_kwargs())
    assert [midi_bytes(m) for m in job.result()] == [midi_bytes(m) for m in expected]
    assert is_int8_quantized(models.get(None, "int8")[0])
    job = GenerationJob(AppRequest(events=8, seed=0, dtype="int4"), models)
    run(job)
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        job.result()


def test_the_live_roll_value_only_grows_while_a_piece_is_generated():
    from midi_event_transformer.apps.web_jobs import PreviewFrame
    from midi_event_transformer.apps.web_roll import roll_value

    first = roll_value(PreviewFrame([[(0, 8, 60, 0)], []], [1, 0]))
    assert first == {"steps_per_beat": 16, "drum_channel": 9, "samples": [
        {"label": "Sample 1", "notes": "0,8,60,0;"}, {"label": "Sample 2", "notes": ""}]}
    later = roll_value(PreviewFrame([[(0, 8, 60, 0), (16, 4, 36, 9)], [(4, 2, 64, 1)]], [2, 1]))
    for old, new in zip(first["samples"], later["samples"], strict=True):  # Gradio sends only what was appended
        assert new["notes"].startswith(old["notes"]) and len(new["notes"]) > len(old["notes"])


def test_done_text_counts_the_generated_events_and_the_prompt_apart():
    assert done_text(0, [512], 4, 2.94, 174.15) == ("Done: 1 sample, seed 0: 512 events generated in 2.9 s, "
                                                    "174.2 events/s, plus 4 prompt events.")
    assert done_text(7, [512, 498], 1, 3.0, 170.0) == ("Done: 2 samples, seed 7: 512 and 498 events generated in "
                                                       "3.0 s, 170.0 events/s per sample, plus 1 prompt event each.")
    assert done_text(3, [16], 0, 0.5, 32.0) == "Done: 1 sample, seed 3: 16 events generated in 0.5 s, 32.0 events/s."
    warning = "the model never saw Violin in training: expect it to be played like the instruments it knows (Oboe)"
    assert done_text(3, [16], 0, 0.5, 32.0, warning) == ("Done: 1 sample, seed 3: 16 events generated in 0.5 s, "
                                                          f"32.0 events/s. Warning: {warning}.")


def test_a_job_names_the_instruments_the_model_never_saw(tmp_path):
    directory = save_tiny_model(tmp_path / "model")
    write_training_data(directory, {"format": 1, "songs": 1, "events": 9, "drum_kits": [],
                                    "programs": [{"program": 68, "name": "Oboe", "notes": 9}]})
    models = ModelStore(str(directory), device="cpu")
    job = GenerationJob(AppRequest(instruments=["Violin", "Oboe"], events=4, seed=0), models)
    updates = run(job)
    warning = "the model never saw Violin in training: expect it to be played like the instruments it knows (Oboe)"
    assert job.warning == warning and updates[-1].warning == warning and len(job.result()) == 1
    seen = GenerationJob(AppRequest(instruments=["Oboe"], events=4), models)
    assert run(seen)[-1].warning is None and seen.warning is None
    bad = GenerationJob(AppRequest(instruments=["Violinn"], events=4), models)
    run(bad)  # a bad name: no warning, generate_midi's error
    assert bad.warning is None
    with pytest.raises(ValueError, match="unknown instrument"):
        bad.result()


def test_write_samples_writes_midi_and_piano_rolls_and_skips_audio_of_long_pieces(tmp_path):
    short = mido.MidiFile(type=1, ticks_per_beat=480)
    short.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=80),
                                        mido.Message("note_off", note=60, time=960)]))
    long = mido.MidiFile(type=1, ticks_per_beat=480)
    long.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=80),
                                       mido.Message("note_off", note=60, time=480 * 2 * 60 * 20)]))  # 20 min
    stages = write_samples_in_stages([short, long], tmp_path / "staged", seed=9, audio=True)
    stage, files = next(stages)  # the .mid files first, before any other file is made
    assert stage == "midi" and [f.midi.name for f in files] == ["generated_seed9_0.mid", "generated_seed9_1.mid"]
    assert all(f.midi.is_file() and f.piano_roll is None for f in files)
    assert sorted(p.suffix for p in (tmp_path / "staged").iterdir()) == [".mid", ".mid"]
    stage, files = next(stages)
    assert stage == "piano_roll" and all(f.piano_roll.is_file() and f.audio is None for f in files)
    first, second = write_samples([short, long], tmp_path, seed=9, audio=False)
    assert (first.midi.name, second.midi.name) == ("generated_seed9_0.mid", "generated_seed9_1.mid")
    assert midi_bytes(reloaded(first.midi)) == midi_bytes(short)
    assert first.piano_roll.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and first.audio is None
    (only,) = write_samples([long], tmp_path / "audio", seed=9, audio=True)  # too long: no fluidsynth run
    assert only.audio is None and only.note == "no audio: the piece lasts 20 min, longer than the 10 min rendered to audio"


@pytest.mark.skipif(audio_problem() is not None, reason=f"no audio rendering here: {audio_problem()}")
def test_write_samples_renders_audio(tmp_path):
    import wave

    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=80),
                                       mido.Message("note_off", note=60, time=960)]))
    (files,) = write_samples([midi], tmp_path, seed=1, audio=True)
    with wave.open(str(files.audio)) as audio:
        assert audio.getnframes() / audio.getframerate() >= midi.length
    assert files.note is None


def test_page_values_become_a_request():
    from midi_event_transformer.apps.web import _Widgets

    options = dict(model="", dtype="auto", instruments=["Violin"], drum_kit="none", bpm=0, time_signature="auto", key="D minor",
                   max_rest_bars=1, prompt=None, prompt_events=128, add_track=None, regenerate_track=None, events=64.0, temperature=1,
                   top_p=0.9, top_k=20, seed=7, num_samples=2, disable_control_change=True, context_events=None)
    page = dict(mode="new", prompt_action="continue it", length_unit="events", length=30, random_seed=False)
    widgets = _Widgets({name: object() for name in options}, {name: object() for name in page})

    def request(**changes):
        values = {**options, **page, **changes}
        return widgets.request([values[name] for name in [*options, *page]])

    assert request() == AppRequest(instruments=["Violin"], key="D minor", events=64, temperature=1.0, top_p=0.9,
                                   top_k=20, seed=7, num_samples=2, disable_control_change=True)
    assert isinstance(request().events, int) and request().dtype is None  # auto: the app's dtype
    assert request(dtype="int8").dtype == "int8"
    tuned = request(bpm=96, drum_kit="Jazz", time_signature="7/4", context_events=64.0)
    assert (tuned.bpm, tuned.drum_kit, tuned.time_signature, tuned.context_events) == (96.0, "Jazz", "7/4", 64)
    assert isinstance(tuned.context_events, int) and request(context_events="").context_events is None
    assert request(context_events=0).context_events is None  # the page's empty box
    assert (request(max_rest_bars=2.5).max_rest_bars, request(max_rest_bars=0).max_rest_bars) == (2.5, None)
    assert request(instruments=[]).instruments is None  # none chosen: the model decides
    seeds = {request(random_seed=True).seed for _ in range(3)}
    assert len(seeds) > 1 and all(0 <= seed < 2**31 for seed in seeds)
    continued = request(mode="continue", prompt="/tmp/x/song.mid")
    assert (continued.prompt, continued.prompt_events, continued.instruments) == ("/tmp/x/song.mid", 128, None)
    with pytest.raises(ValueError, match="upload a MIDI file to continue"):
        request(mode="continue")
    with pytest.raises(ValueError, match="events is empty"):
        request(events=None)

    timed = request(length_unit="seconds", length=12.5)
    assert (timed.events, timed.seconds, timed.bars) == (None, 12.5, None)
    assert (request(length_unit="bars", length=8).bars, request(length_unit="bars", length=8).seconds) == (8.0, None)
    with pytest.raises(ValueError, match="the length in seconds is empty"):
        request(length_unit="seconds", length=None)
    upload = dict(mode="continue", prompt="/tmp/x/song.mid")
    added = request(**upload, prompt_action="add a track", add_track="Jazz", length_unit="seconds", length=20)
    assert (added.prompt, added.add_track, added.regenerate_track, added.prompt_events, added.seconds) == (
        "/tmp/x/song.mid", "Jazz", None, None, 20.0)
    again = request(**upload, prompt_action="regenerate a track", regenerate_track=2)
    assert (again.regenerate_track, again.add_track, again.prompt_events, again.events) == (2, None, None, 64)
    with pytest.raises(ValueError, match="choose the new track's instrument"):
        request(**upload, prompt_action="add a track")
    with pytest.raises(ValueError, match="choose the track to regenerate"):
        request(**upload, prompt_action="regenerate a track")
    with pytest.raises(ValueError, match="upload a MIDI file to add a track"):
        request(mode="continue", prompt_action="add a track", add_track="Violin")


def test_a_job_thread_decodes_a_small_model_with_one_thread_and_restores_the_count():
    import threading

    from midi_event_transformer.apps.web_jobs import job_thread_decoding

    small = torch.nn.Linear(4, 4)  # a model's parameters are all the rule reads
    seen = {}
    before = torch.get_num_threads()

    def job(name, model):
        with job_thread_decoding(model):
            seen[name] = torch.get_num_threads()
        seen[name + " after"] = torch.get_num_threads()

    worker = threading.Thread(target=job, args=("small", small))
    worker.start()
    worker.join()
    with job_thread_decoding(small):  # the main thread's team spins: it keeps its threads
        seen["main"] = torch.get_num_threads()
    assert seen["small"] == 1 and seen["small after"] == before and seen["main"] == before
    import midi_event_transformer.generation.loading as loading

    original = loading.SMALL_MODEL_FP32_BYTES
    loading.SMALL_MODEL_FP32_BYTES = 8  # every model is large now
    try:
        worker = threading.Thread(target=job, args=("large", small))
        worker.start()
        worker.join()
    finally:
        loading.SMALL_MODEL_FP32_BYTES = original
    assert seen["large"] == before
