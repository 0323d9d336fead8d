"""The tokenizer's transformers API: vocabulary, batches, save/load, AutoTokenizer, augment, quality."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import mido
import numpy as np
import pytest

from midi_event_transformer import InvalidMidiError, MidiEventTransformerTokenizer
from midi_event_transformer.midi_augment import augment_rows
from midi_event_transformer.vocabulary import PARAMETER_OFFSETS as OFF
from midi_event_transformer.vocabulary import VOCAB_SIZE, tokenizer_dict


def _midi_bytes(n_notes: int, channel: int = 0, pitch: int = 60) -> bytes:
    midi = mido.MidiFile(type=0, ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=600000),
                            mido.MetaMessage("key_signature", key="D"),
                            mido.Message("control_change", channel=channel, control=7, value=100)])
    for i in range(n_notes):
        track += [mido.Message("note_on", channel=channel, note=min(127, pitch + i % 12), velocity=70, time=120),
                  mido.Message("note_off", channel=channel, note=min(127, pitch + i % 12), velocity=0, time=120)]
    midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tokenizer() -> MidiEventTransformerTokenizer:
    return MidiEventTransformerTokenizer()


def test_vocabulary(tokenizer):
    assert tokenizer.vocab_size == VOCAB_SIZE == len(tokenizer) == 3406
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.padding_side == "left"
    assert tokenizer.optimise_midi is True
    vocab = tokenizer.get_vocab()
    assert vocab["note"] == 3 and vocab["key_signature"] == 8
    assert vocab["time1_0"] == 9 and vocab["time2_0"] == 137 and vocab["mi_1"] == 3405
    assert tokenizer.convert_ids_to_tokens([3, OFF["pitch"] + 60]) == ["note", "pitch_60"]
    assert tokenizer.encode("note time1_1 pitch_60", add_special_tokens=False) == [3, 10, OFF["pitch"] + 60]
    assert tokenizer.to_reference_dict() == tokenizer_dict(True)
    # text (token strings) still goes through the base class, positionally or by keyword
    assert tokenizer("note pitch_60")["input_ids"] == [3, OFF["pitch"] + 60]
    assert tokenizer(text="note pitch_60")["input_ids"] == [3, OFF["pitch"] + 60]


def test_init_validation():
    with pytest.raises(TypeError):
        MidiEventTransformerTokenizer(optimise_midi="yes")
    with pytest.raises(ValueError):
        MidiEventTransformerTokenizer(cc_eps=-1)


def test_batch_is_left_padded_by_whole_events(tokenizer):
    torch = pytest.importorskip("torch")
    short, long = _midi_bytes(3), _midi_bytes(9)
    batch = tokenizer([short, long], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n_short, n_long = len(tokenizer.encode_midi(short)), len(tokenizer.encode_midi(long))
    assert ids.shape == (2, n_long * 8) and ids.dtype == torch.long
    pad = (n_long - n_short) * 8
    assert (ids[0, :pad] == 0).all() and (mask[0, :pad] == 0).all() and (mask[0, pad:] == 1).all()
    assert torch.equal(ids[0, pad:], torch.from_numpy(tokenizer.encode_midi(short).reshape(-1)))
    assert ids[0, pad].item() == 1  # BOS right after the padding
    assert mask[1].all()


def test_single_input_and_options(tokenizer):
    data = _midi_bytes(5)
    rows = tokenizer.encode_midi(data)
    single = tokenizer(data)
    assert single["input_ids"] == rows.reshape(-1).tolist()
    assert single["attention_mask"] == [1] * rows.size
    as_tensor = tokenizer(data, return_tensors="pt")
    assert tuple(as_tensor["input_ids"].shape) == (1, rows.size)
    no_special = tokenizer(data, add_special_tokens=False)
    assert no_special["input_ids"] == rows[1:-1].reshape(-1).tolist()
    truncated = tokenizer([data], truncation=True, max_length=24)
    assert truncated["input_ids"][0] == rows[:3].reshape(-1).tolist()
    padded = tokenizer([data], padding="max_length", max_length=rows.size + 16)
    assert padded["input_ids"][0][:16] == [0] * 16
    with pytest.raises(ValueError, match="multiple of 8"):
        tokenizer([data], padding="max_length", max_length=rows.size + 3)
    with pytest.raises(InvalidMidiError):
        tokenizer([b"not midi at all"])


def test_save_and_load_round_trip(tmp_path):
    tokenizer = MidiEventTransformerTokenizer(optimise_midi=False, cc_eps=2, tempo_eps=3)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["optimise_midi"] is False and config["cc_eps"] == 2
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_midi_event_transformer.MidiEventTransformerTokenizer"
    for module in ("tokenization_midi_event_transformer.py", "vocabulary.py", "errors.py", "midi_reading.py",
                   "midi_events.py", "midi_writing.py", "midi_augment.py"):
        assert (tmp_path / module).is_file(), module
    loaded = MidiEventTransformerTokenizer.from_pretrained(tmp_path)
    assert (loaded.optimise_midi, loaded.cc_eps, loaded.tempo_eps) == (False, 2, 3)
    data = _midi_bytes(6, channel=3)
    assert np.array_equal(loaded.encode_midi(data), tokenizer.encode_midi(data))
    # optimise_midi=False keeps the file's own channel 3; the default renumbers it to 0
    channel_ids = loaded.encode_midi(data)[:, 4][loaded.encode_midi(data)[:, 0] == 3]
    assert (channel_ids == OFF["channel"] + 3).all()


def test_auto_tokenizer_in_process(tmp_path):
    pytest.importorskip("midi_event_transformer.configuration_midi_event_transformer")
    from transformers import AutoTokenizer

    MidiEventTransformerTokenizer().save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, MidiEventTransformerTokenizer)


def test_auto_tokenizer_remote_code_in_a_fresh_process(tmp_path):
    """``trust_remote_code`` loading from the saved folder alone, in a process that cannot import the package."""
    saved, work = tmp_path / "saved", tmp_path / "elsewhere"
    work.mkdir()
    MidiEventTransformerTokenizer(optimise_midi=False).save_pretrained(saved)
    data = _midi_bytes(7, channel=2)
    (work / "song.mid").write_bytes(data)
    np.save(work / "want.npy", MidiEventTransformerTokenizer(optimise_midi=False).encode_midi(data))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["midi_event_transformer"] = None  # importing the package would now fail
        import numpy as np
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert type(tokenizer).__module__.startswith("transformers_modules"), type(tokenizer).__module__
        assert tokenizer.optimise_midi is False
        ids = tokenizer.encode_midi("song.mid")
        assert np.array_equal(ids, np.load("want.npy")), ids
        midi = tokenizer.decode_midi(ids)
        print("ok", ids.shape, len(midi.tracks))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", "HF_MODULES_CACHE": str(tmp_path / "mods")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_augment_shifts_as_the_reference(tokenizer):
    rows = tokenizer.encode_midi(_midi_bytes(8, channel=0))
    shifted = augment_rows(rows, pitch_shift=2, velocity_shift=-5, cc_value_shift=3, bpm_shift=4,
                           channel_shift=1)
    notes = rows[:, 0] == 3
    assert np.array_equal(shifted[notes, 5], rows[notes, 5] + 2)
    assert np.array_equal(shifted[notes, 6], rows[notes, 6] - 5)
    assert np.array_equal(shifted[notes, 4], rows[notes, 4] + 1)
    tempo = rows[:, 0] == 6
    assert np.array_equal(shifted[tempo, 4], rows[tempo, 4] + 4)
    cc = rows[:, 0] == 5
    assert np.array_equal(shifted[cc, 6], rows[cc, 6] + 3)  # controller 7 (volume) is shifted
    key = rows[:, 0] == 8
    assert (rows[key, 4] == OFF["sf"] + 7 + 2).all()  # D major: 2 sharps
    assert (shifted[key, 4] == OFF["sf"] + 7 + 4).all()  # up a tone: E major, 4 sharps
    # pitches that would leave 0..127 leave the whole sequence unchanged
    high = tokenizer.encode_midi(_midi_bytes(4, pitch=125))
    assert np.array_equal(augment_rows(high, pitch_shift=4), high)


def test_augment_drums_and_randomness(tokenizer):
    drums = tokenizer.encode_midi(_midi_bytes(5, channel=9))
    shifted = augment_rows(drums, pitch_shift=3, channel_shift=5)
    notes = drums[:, 0] == 3
    assert np.array_equal(shifted[notes, 5], drums[notes, 5])  # no pitch shift on drums
    assert (shifted[notes, 4] == OFF["channel"] + 9).all()  # drums stay on channel 9
    rows = tokenizer.encode_midi(_midi_bytes(8))
    assert np.array_equal(tokenizer.augment(rows, generator=7), tokenizer.augment(rows, generator=7))
    assert tokenizer.augment(rows.reshape(-1), generator=1).shape == rows.shape


def test_check_quality(tokenizer, pop909_files):
    ok, reasons = tokenizer.check_quality(tokenizer.encode_midi(pop909_files[0]))
    assert ok and reasons == []
    ok, reasons = tokenizer.check_quality(tokenizer.encode_midi(_midi_bytes(10)))
    assert not ok and reasons == ["total_min"]
    ok, reasons = tokenizer.check_quality(tokenizer.encode_midi(_midi_bytes(300, channel=9)), total_notes_min=10)
    assert reasons == ["drum_only"]
