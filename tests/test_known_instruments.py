"""What a model saw in training (``generation.known_instruments``): the counts, ``training_data.json``, and the one
warning line of ``generate_midi`` for a new instrument the model never saw."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from generation_helpers import random_model, save_tiny_model

from midi_event_transformer import generate_midi
from midi_event_transformer.generation.known_instruments import (
    TRAINING_DATA_FILE,
    count_instruments,
    known_instruments,
    read_training_data,
    unseen_instruments,
    unseen_instruments_warning,
    write_training_data,
)
from midi_event_transformer.generation.prompts import event_row
from midi_event_transformer.generation.requests import PromptOptions, instrument_warning
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import BOS_ID, DRUM_CHANNEL, EOS_ID, PAD_ID, TOKENS_PER_EVENT

torch.set_num_threads(1)

PIANO_ONLY = {"format": 1, "songs": 3, "events": 120,
              "programs": [{"program": 0, "name": "Acoustic Grand Piano", "notes": 90},
                           {"program": 33, "name": "Electric Bass (finger)", "notes": 20}],
              "drum_kits": []}
WARNING = ("the model never saw Violin, Drums (Standard kit) in training: expect them to be played like the "
           "instruments it knows (Acoustic Grand Piano, Electric Bass (finger))")


def special(token: int) -> np.ndarray:
    return np.array([token] + [PAD_ID] * (TOKENS_PER_EVENT - 1))


def note(channel: int, time1: int = 1) -> np.ndarray:
    return event_row("note", time1=time1, time2=0, track=1, channel=channel, pitch=60, velocity=80, duration=4)


def patch(channel: int, program: int) -> np.ndarray:
    return event_row("patch_change", time1=0, time2=0, track=1, channel=channel, patch=program)


def tempo() -> np.ndarray:
    return event_row("set_tempo", time1=0, time2=0, track=0, bpm=120)


@pytest.fixture(scope="module")
def seen_piano_dir(tmp_path_factory) -> Path:
    """A tiny saved model whose training_data.json lists piano and bass only."""
    directory = save_tiny_model(tmp_path_factory.mktemp("seen_piano"))
    write_training_data(directory, PIANO_ONLY, sources=["test"])
    return directory


@pytest.fixture(scope="module")
def unrecorded_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("unrecorded"))


# ----------------------------------------------------------------------------------------- counting
def test_counts_follow_patch_changes_per_channel_and_the_drum_kit():
    song = np.stack([
        special(BOS_ID), tempo(),
        note(0), note(0),                      # channel 0 before any patch change: program 0
        patch(0, 40), note(0),                 # then violin
        note(DRUM_CHANNEL),                    # drums before a patch change: the Standard kit (0)
        patch(DRUM_CHANNEL, 32), note(DRUM_CHANNEL), note(DRUM_CHANNEL),  # the Jazz kit
        patch(1, 73), patch(1, 56), note(1),   # the last patch change counts: trumpet
        patch(2, 19),                          # a program without notes is not listed
        patch(0, 0), note(0),                  # channel 0 back to piano mid-song
        special(EOS_ID), special(PAD_ID),
    ])
    counts = count_instruments([song, song[:4]])  # the second: BOS, tempo and two piano notes
    assert counts == {
        "format": 1, "songs": 2, "events": 15 + 3,
        "programs": [{"program": 0, "name": "Acoustic Grand Piano", "notes": 3 + 2},
                     {"program": 40, "name": "Violin", "notes": 1},
                     {"program": 56, "name": "Trumpet", "notes": 1}],
        "drum_kits": [{"program": 0, "name": "Standard", "notes": 1},
                      {"program": 32, "name": "Jazz", "notes": 2}],
    }
    json.dumps(counts)  # JSON-able as it is


def test_counts_of_encoded_files_lists_and_tensors():
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack([mido.Message("program_change", channel=0, program=24)])
    for pitch in (60, 64):
        track += [mido.Message("note_on", note=pitch, velocity=80), mido.Message("note_off", note=pitch, time=240)]
    track += [mido.Message("note_on", channel=9, note=36, velocity=90),
              mido.Message("note_off", channel=9, note=36, time=240)]
    midi.tracks.append(track)
    rows = MidiEventTransformerTokenizer().encode_midi(midi)
    counts = count_instruments([rows, rows.tolist(), torch.as_tensor(rows), np.zeros((0, 8), dtype=np.int64)])
    assert counts["songs"] == 4
    assert counts["programs"] == [{"program": 24, "name": "Acoustic Guitar (nylon)", "notes": 6}]
    assert counts["drum_kits"] == [{"program": 0, "name": "Standard", "notes": 3}]
    assert count_instruments([]) == {"format": 1, "songs": 0, "events": 0, "programs": [], "drum_kits": []}


def test_counting_is_fast():
    """About 3M events (1,500 songs of 2,000) in well under a few seconds: numpy per song, no loop over rows."""
    import time

    rng = np.random.default_rng(0)
    song = np.stack([special(BOS_ID), *[patch(c, int(p)) if k == 0 else note(c) for c, p, k in
                                        zip(rng.integers(0, 16, 2000), rng.integers(0, 128, 2000),
                                            rng.integers(0, 8, 2000), strict=True)]])
    started = time.perf_counter()
    counts = count_instruments(song.copy() for _ in range(1500))
    assert time.perf_counter() - started < 10
    assert counts["events"] == 1500 * 2000


def test_counting_rejects_what_is_no_song():
    with pytest.raises(TypeError, match="iterable"):
        count_instruments(3)
    with pytest.raises(TypeError, match="one song"):
        count_instruments(np.zeros((4, 8), dtype=np.int64))
    with pytest.raises(TypeError, match="song 0"):
        count_instruments(["song.mid"])
    with pytest.raises(ValueError, match=r"song 1 must have shape \(n_events, 8\)"):
        count_instruments([np.zeros((2, 8), dtype=np.int64), np.zeros((2, 7), dtype=np.int64)])
    with pytest.raises(TypeError, match="integer"):
        count_instruments([np.zeros((2, 8))])


# ----------------------------------------------------------------------------------------- the file
def test_write_and_read_round_trip(tmp_path):
    path = write_training_data(tmp_path / "model", PIANO_ONLY, sources=["pop909"], augmentation=False)
    assert path == tmp_path / "model" / TRAINING_DATA_FILE
    assert read_training_data(tmp_path / "model") == {**PIANO_ONLY, "sources": ["pop909"], "augmentation": False}
    assert read_training_data(str(tmp_path / "model")) == read_training_data(path.parent)
    assert read_training_data(tmp_path) is None  # a folder without the file
    with pytest.raises(ValueError, match="replace"):
        write_training_data(tmp_path, PIANO_ONLY, songs=4)
    with pytest.raises(TypeError):
        write_training_data(tmp_path, [PIANO_ONLY])
    with pytest.raises(ValueError, match="'programs'"):
        write_training_data(tmp_path, {**PIANO_ONLY, "programs": [{"program": 200, "notes": 1}]})


def test_a_broken_file_is_a_value_error_naming_it(tmp_path):
    (tmp_path / TRAINING_DATA_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{TRAINING_DATA_FILE} is not valid JSON"):
        read_training_data(tmp_path)
    (tmp_path / TRAINING_DATA_FILE).write_text('{"format": 7}', encoding="utf-8")
    with pytest.raises(ValueError, match=f"{TRAINING_DATA_FILE} has format 7"):
        read_training_data(tmp_path)
    with pytest.raises(TypeError):
        read_training_data(3)


def test_read_from_a_model_and_its_peft_wrapper(seen_piano_dir, unrecorded_dir):
    from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    model = MidiEventTransformerForCausalLM.from_pretrained(seen_piano_dir)
    assert read_training_data(model)["programs"] == PIANO_ONLY["programs"]

    class Wrapper:  # what read_training_data uses of a peft PeftModel
        config = None

        def get_base_model(self):
            return model

    assert read_training_data(Wrapper()) == read_training_data(model)
    assert read_training_data(MidiEventTransformerForCausalLM.from_pretrained(unrecorded_dir)) is None
    assert read_training_data(random_model()) is None  # built in memory: no folder


# ----------------------------------------------------------------------------------------- the warning
def test_unseen_instruments_are_labelled_in_the_request_order():
    assert unseen_instruments(PIANO_ONLY, instruments=["Violin", "Piano", 33], drum_kit="Standard") == [
        "Violin", "Drums (Standard kit)"]
    assert unseen_instruments(PIANO_ONLY, instruments="Acoustic Grand Piano, 33") == []
    assert unseen_instruments(PIANO_ONLY, add_track="drums") == ["Drums (Standard kit)"]
    assert unseen_instruments(PIANO_ONLY, add_track="Jazz") == ["Drums (Jazz kit)"]
    assert unseen_instruments(PIANO_ONLY, add_track=40) == ["Violin"]
    assert unseen_instruments(PIANO_ONLY, drum_kit=3) == ["Drums (kit program 3)"]
    assert unseen_instruments(None, instruments=["Violin"]) == []  # no record: no warning
    with_drums = {**PIANO_ONLY, "drum_kits": [{"program": 0, "name": "Standard", "notes": 5}]}
    assert unseen_instruments(with_drums, instruments=["Violin", "Violin"], drum_kit="Standard") == ["Violin"]
    with pytest.raises(ValueError, match="unknown instrument"):
        unseen_instruments(PIANO_ONLY, instruments=["Violinn"])
    with pytest.raises(TypeError):
        unseen_instruments([PIANO_ONLY], instruments=["Violin"])


def test_the_warning_is_one_line_naming_what_it_knows_best():
    assert unseen_instruments_warning(PIANO_ONLY, instruments=["Violin"], drum_kit="Standard") == WARNING
    single = unseen_instruments_warning(PIANO_ONLY, instruments=["Trumpet"])
    assert single.startswith("the model never saw Trumpet in training: expect it to be played")
    assert unseen_instruments_warning(PIANO_ONLY, instruments=["Piano"]) is None
    assert unseen_instruments_warning(None, instruments=["Violin"]) is None
    assert known_instruments(PIANO_ONLY) == ["Acoustic Grand Piano", "Electric Bass (finger)"]


def test_generate_midi_warns_once_and_still_generates(seen_piano_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="midi_event_transformer"):
        midis = generate_midi(str(seen_piano_dir), instruments=["Violin"], drum_kit="Standard", events=6, seed=0,
                              progress=False)
    assert len(midis) == 1 and isinstance(midis[0], mido.MidiFile)
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == [WARNING]


def test_no_warning_without_the_file_or_for_seen_instruments(seen_piano_dir, unrecorded_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="midi_event_transformer"):
        generate_midi(str(unrecorded_dir), instruments=["Violin"], drum_kit="Standard", events=4, seed=0,
                      progress=False)
        generate_midi(str(seen_piano_dir), instruments=["Piano"], events=4, seed=0, progress=False)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_instrument_warning_of_a_request(seen_piano_dir, tmp_path):
    from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    model = MidiEventTransformerForCausalLM.from_pretrained(seen_piano_dir)
    assert instrument_warning(model, PromptOptions(instruments=["Violin"], drum_kit="Standard")) == WARNING
    assert instrument_warning(model, PromptOptions(prompt="song.mid", add_track="Violin")).startswith(
        "the model never saw Violin in training")
    assert instrument_warning(model, PromptOptions(prompt="song.mid")) is None  # a continuation names none
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / TRAINING_DATA_FILE).write_text("[", encoding="utf-8")
    model.config.name_or_path = str(broken)  # a broken record is logged and ignored
    assert instrument_warning(model, PromptOptions(instruments=["Violin"])) is None
