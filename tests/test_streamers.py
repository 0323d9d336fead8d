"""Streamers fed by hand, as generate() feeds them: prompt first, then one token at a time."""

from __future__ import annotations

import queue
import threading

import mido
import numpy as np
import pytest
import torch

from midi_event_transformer.generation.prompts import build_prompt, event_row
from midi_event_transformer.generation.streamers import (
    MidiEventIteratorStreamer,
    MidiFileStreamer,
    decode_row,
)

NOTE = event_row("note", time1=1, time2=0, track=1, channel=0, pitch=60, velocity=80, duration=4)
NOTE2 = event_row("note", time1=0, time2=8, track=1, channel=0, pitch=64, velocity=80, duration=4)
TEMPO = event_row("set_tempo", time1=0, time2=0, track=0, bpm=100)  # 4 parameters, then pads
EOS_ROW = np.array([2, 0, 0, 0, 0, 0, 0, 0])


def feed(streamer, prompt: np.ndarray, generated: list[int]) -> None:
    streamer.put(torch.tensor(prompt).reshape(1, -1))
    for token in generated:
        streamer.put(torch.tensor([token]))
    streamer.end()


def test_iterator_yields_finished_events_in_order():
    prompt = build_prompt(instruments=["Piano"])
    streamer = MidiEventIteratorStreamer()
    feed(streamer, prompt, [*NOTE, *TEMPO, *NOTE2])
    events = list(streamer)
    assert [e.tolist() for e in events] == [prompt[1].tolist(), NOTE.tolist(), TEMPO.tolist(), NOTE2.tolist()]
    assert all(e.dtype == np.int64 and e.shape == (8,) for e in events)


def test_skip_prompt_and_eos_ends_the_stream():
    streamer = MidiEventIteratorStreamer(skip_prompt=True)
    feed(streamer, build_prompt(bpm=120), [*NOTE, 2, 0, 0, 5, 5])  # tokens after EOS are ignored
    assert [e.tolist() for e in streamer] == [NOTE.tolist()]
    assert streamer.finished


def test_prompt_ending_inside_an_event_counts_as_generated():
    prompt = np.concatenate([build_prompt().reshape(-1), NOTE[:3]])
    streamer = MidiEventIteratorStreamer(skip_prompt=True)
    streamer.put(torch.tensor(prompt)[None])
    for token in [*NOTE[3:], *NOTE2[:5]]:  # NOTE2 left unfinished
        streamer.put(torch.tensor(token))
    streamer.end()
    assert [e.tolist() for e in streamer] == [NOTE.tolist()]
    assert streamer.pending == NOTE2[:5].tolist()


def test_decoded_events():
    streamer = MidiEventIteratorStreamer(skip_prompt=True, decode=True)
    feed(streamer, build_prompt(), [*NOTE, *TEMPO])
    assert list(streamer) == [
        {"type": "note", "time1": 1, "time2": 0, "track": 1, "channel": 0, "pitch": 60, "velocity": 80, "duration": 4},
        {"type": "set_tempo", "time1": 0, "time2": 0, "track": 0, "bpm": 100},
    ]
    assert decode_row([4, 9, 9, 9, 9, 9, 0, 0]) == {"type": None, "ids": [4, 9, 9, 9, 9, 9, 0, 0]}


def test_batch_larger_than_one_is_refused():
    streamer = MidiEventIteratorStreamer()
    with pytest.raises(ValueError, match="only supports batch size 1"):
        streamer.put(torch.zeros(2, 8, dtype=torch.long))
    streamer = MidiEventIteratorStreamer()
    streamer.put(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="only supports batch size 1"):
        streamer.put(torch.tensor([3, 3]))


def test_iterator_across_threads_and_timeout():
    streamer = MidiEventIteratorStreamer(timeout=5.0)
    thread = threading.Thread(target=feed, args=(streamer, build_prompt(), [*NOTE] * 20))
    thread.start()
    assert len(list(streamer)) == 20
    thread.join()
    silent = MidiEventIteratorStreamer(timeout=0.01)
    with pytest.raises(queue.Empty):
        next(silent)


def test_file_streamer_writes_the_piece_so_far(tmp_path):
    path = tmp_path / "live.mid"
    streamer = MidiFileStreamer(path, save_every=1)
    prompt = build_prompt(instruments=["Violin"], bpm=100)
    streamer.put(torch.tensor(prompt).reshape(1, -1))
    prompt_only = [m for t in mido.MidiFile(path).tracks for m in t]  # the prompt's events are written at once
    assert [m.program for m in prompt_only if m.type == "program_change"] == [40]
    assert not [m for m in prompt_only if m.type == "note_on"]
    for token in NOTE:
        streamer.put(torch.tensor([token]))
    notes = [m for t in mido.MidiFile(path).tracks for m in t if m.type == "note_on" and m.velocity]
    assert [m.note for m in notes] == [60]
    for token in NOTE2:
        streamer.put(torch.tensor([token]))
    streamer.end()
    midi = mido.MidiFile(path)
    messages = [m for t in midi.tracks for m in t]
    assert [m.note for m in messages if m.type == "note_on" and m.velocity] == [60, 64]
    assert [(m.channel, m.program) for m in messages if m.type == "program_change"] == [(0, 40)]
    assert [round(mido.tempo2bpm(m.tempo)) for m in messages if m.type == "set_tempo"] == [100]
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_file_streamer_save_every_and_validation(tmp_path):
    streamer = MidiFileStreamer(tmp_path / "x.mid", save_every=3, include_prompt=False)
    feed(streamer, build_prompt(bpm=100), [*NOTE] * 7)
    assert streamer.saves == 3  # after events 3 and 6, and at the end
    assert len(streamer.events) == 7
    with pytest.raises(ValueError, match="save_every"):
        MidiFileStreamer(tmp_path / "y.mid", save_every=0)
    with pytest.raises(ValueError, match="does not exist"):
        MidiFileStreamer(tmp_path / "missing" / "y.mid")
    with pytest.raises(TypeError):
        MidiFileStreamer(5)
