"""The web app's work without a browser (``app_jobs``): requests, the model store, the live preview streamer, the
generation job in its worker thread, and the files of each sample. No gradio needed."""

from __future__ import annotations

import threading
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from generation_helpers import midi_bytes, programs, reloaded, save_tiny_model

from midi_event_transformer import generate_midi
from midi_event_transformer.app_jobs import (
    AppRequest,
    GenerationCancelled,
    GenerationJob,
    LivePreview,
    ModelStore,
    audio_problem,
    write_samples,
)
from midi_event_transformer.pipeline import generate_rows
from midi_event_transformer.prompts import event_row
from midi_event_transformer.vocabulary import BOS_ID, PAD_ID

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def models(model_dir) -> ModelStore:
    return ModelStore(str(model_dir), device="cpu")


def run(job: GenerationJob) -> list:
    """Every update of a started job (frames included), once it has finished."""
    return list(job.start().updates(poll_seconds=0.05))


def test_request_gives_generate_midi_arguments():
    request = AppRequest(instruments=["Violin"], bpm=90.0, events=16, seed=3, num_samples=2)
    kwargs = request.generate_kwargs()
    assert kwargs["instruments"] == ["Violin"] and kwargs["bpm"] == 90.0 and kwargs["seed"] == 3
    assert kwargs["prompt"] is None and kwargs["time_signature"] is None and kwargs["progress"] is False
    assert AppRequest(prompt=Path("song.mid")).generate_kwargs()["prompt"] == "song.mid"
    assert AppRequest().generate_kwargs()["instruments"] is None  # none chosen: the model decides


def test_model_store_loads_once_and_reloads_on_another_name(models, model_dir, tmp_path):
    model, tokenizer = models.get()
    assert models.get(None)[0] is model and models.get("")[0] is model
    assert models.get(str(model_dir))[0] is model  # the default by its name
    assert models.tokenizer() is tokenizer
    other = save_tiny_model(tmp_path / "other")
    assert models.get(str(other))[0] is not model
    with pytest.raises(ValueError, match="does not exist"):
        models.get(str(tmp_path / "no_model"))
    assert models.get()[0] is not model  # back to the default: loaded again (one model kept at a time)


def test_job_streams_frames_and_gives_the_files_of_generate_midi(models, model_dir):
    request = AppRequest(instruments=["Violin", "Cello"], time_signature="3/4", events=24, seed=5, num_samples=2)
    job = GenerationJob(request, models, frames=4)
    updates = run(job)
    midis = job.result()
    expected = generate_midi(str(model_dir), **request.generate_kwargs())
    assert [midi_bytes(m) for m in midis] == [midi_bytes(m) for m in expected]
    assert all(programs(m) == {(0, 40), (1, 42)} for m in midis)

    rows = generate_rows(str(model_dir), **request.generate_kwargs())
    prompt_events = len(rows[0]) - 24
    frames = [update.frame for update in updates if update.frame is not None]
    assert [[len(sample) for sample in frame] for frame in frames] == [[prompt_events + n] * 2 for n in (6, 12, 18, 24)]
    for sample, final in zip(frames[-1], rows, strict=True):
        np.testing.assert_array_equal(sample, final)
    for earlier, later in zip(frames, frames[1:], strict=False):  # each frame extends the one before
        np.testing.assert_array_equal(later[0][:len(earlier[0])], earlier[0])
    assert updates[-1].events_done == 24 and updates[-1].events_total == 24
    assert job.preview.events_per_second() > 0


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


def test_cancel_stops_the_generation(models):
    job = GenerationJob(AppRequest(events=4000, seed=0), models, frames=400)
    for update in job.start().updates(poll_seconds=0.05):
        if update.events_done > 0:
            job.cancel()
    assert not job.running
    with pytest.raises(GenerationCancelled):
        job.result()
    assert 0 < job.preview.events_done < 4000


def test_live_preview_waits_for_the_page_at_most_frame_timeout():
    preview = LivePreview(num_samples=1, events=2, frames=2, frame_timeout=0.05)
    preview.put(torch.tensor([[BOS_ID] + [PAD_ID] * 7]))
    note = event_row("note", time1=1, time2=0, track=0, channel=0, pitch=60, velocity=80, duration=8).tolist()
    done = threading.Event()

    def generate():
        for token in note * 2:  # two events, two frames: nobody takes them
            preview.put(torch.tensor([token]))
        preview.end()
        done.set()

    threading.Thread(target=generate).start()
    assert done.wait(5)
    assert preview.frames.qsize() == 1 and preview.events_done == 2  # the second frame was dropped
    assert [len(rows) for rows in preview.snapshot()] == [3]


def test_write_samples_writes_midi_and_piano_rolls_and_skips_audio_of_long_pieces(tmp_path):
    short = mido.MidiFile(type=1, ticks_per_beat=480)
    short.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=80),
                                        mido.Message("note_off", note=60, time=960)]))
    long = mido.MidiFile(type=1, ticks_per_beat=480)
    long.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=80),
                                       mido.Message("note_off", note=60, time=480 * 2 * 60 * 20)]))  # 20 min
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
    from dataclasses import fields

    from midi_event_transformer.app import _Widgets

    widgets = _Widgets(*[object() for _ in fields(_Widgets)])
    page = dict(model="", mode="new", instruments=["Violin"], drum_kit="none", bpm=0, time_signature="auto",
                key="D minor", prompt_file=None, prompt_events=128, events=64.0, temperature=1, top_p=0.9, top_k=20,
                seed=7, random_seed=False, num_samples=2, no_control_change=True)
    request = widgets.request(list(page.values()))
    assert request == AppRequest(instruments=["Violin"], key="D minor", events=64, temperature=1.0, top_p=0.9,
                                 top_k=20, seed=7, num_samples=2, disable_control_change=True)
    assert isinstance(request.events, int)
    request = widgets.request(list({**page, "bpm": 96, "drum_kit": "Jazz", "time_signature": "7/4"}.values()))
    assert (request.bpm, request.drum_kit, request.time_signature) == (96.0, "Jazz", "7/4")
    seeds = {widgets.request(list({**page, "random_seed": True}.values())).seed for _ in range(3)}
    assert len(seeds) > 1 and all(0 <= seed < 2**31 for seed in seeds)
    continued = widgets.request(list({**page, "mode": "continue", "prompt_file": "/tmp/x/song.mid"}.values()))
    assert (continued.prompt, continued.prompt_events, continued.instruments) == ("/tmp/x/song.mid", 128, [])
    with pytest.raises(ValueError, match="upload a MIDI file to continue"):
        widgets.request(list({**page, "mode": "continue"}.values()))
    with pytest.raises(ValueError, match="events is empty"):
        widgets.request(list({**page, "events": None}.values()))
