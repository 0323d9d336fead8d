"""midi_event_transformer.training.data: tokenized datasets (cache, skip report), by-file split, windows, collator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from midi_event_transformer.midi_reading import find_midi_files
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.training.data import (
    DataCollatorForMidiEvents,
    MidiWindowDataset,
    is_validation_file,
    patches_first,
    split_by_file,
    tokenize_midi_dataset,
)
from midi_event_transformer.vocabulary import PAD_ID, TOKENS_PER_EVENT


class CountingTokenizer(MidiEventTransformerTokenizer):
    """Counts ``encode_midi`` calls (in-process: only meaningful with ``num_proc=None``)."""

    calls = 0

    def encode_midi(self, source, add_bos_eos=True):
        type(self).calls += 1
        return super().encode_midi(source, add_bos_eos=add_bos_eos)


@pytest.fixture
def midi_folder(pop909_files, tmp_path) -> Path:
    """Three real POP909 songs, a truncated copy of one, a text file named .mid and an ignored .txt."""
    folder = tmp_path / "midi"
    (folder / "sub").mkdir(parents=True)
    for path in pop909_files[:2]:
        shutil.copy(path, folder / path.name)
    shutil.copy(pop909_files[2], folder / "sub" / pop909_files[2].name)  # folders are searched recursively
    data = pop909_files[0].read_bytes()
    (folder / "corrupt.mid").write_bytes(data[: len(data) // 3])
    (folder / "notes.mid").write_text("this is not a MIDI file\n")
    (folder / "readme.txt").write_text("not even looked at")
    return folder


def test_find_midi_files_sorted_recursive(midi_folder):
    names = [Path(p).relative_to(midi_folder).as_posix() for p in find_midi_files(midi_folder)]
    assert names == sorted(names) and len(names) == 5
    assert "readme.txt" not in names and any(n.startswith("sub/") for n in names)
    with pytest.raises(FileNotFoundError):
        find_midi_files(midi_folder / "missing")


def test_find_midi_files_is_the_one_finder(midi_folder, tmp_path):
    """Training (tokenize_midi_dataset) and evaluation read the same files: .smf counted, each file once."""
    (midi_folder / "extra.SMF").write_bytes(next(midi_folder.glob("*.mid")).read_bytes())
    files = find_midi_files([midi_folder, midi_folder])
    assert len(files) == 6 and len(set(files)) == 6 and any(p.suffix == ".SMF" for p in files)
    assert files == find_midi_files(midi_folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no MIDI files"):
        find_midi_files(tmp_path / "empty")


def test_bad_files_skipped_counted_and_reported(midi_folder, pop909_files, tmp_path):
    tokenizer = MidiEventTransformerTokenizer()
    report_path = tmp_path / "report" / "skipped.json"
    dataset = tokenize_midi_dataset(midi_folder, tokenizer, report_path=report_path)
    assert sorted(Path(n).name for n in dataset["name"]) == sorted(p.name for p in pop909_files[:3])
    assert dataset.column_names == ["name", "input_ids", "num_events"]
    for row in dataset:  # exactly the tokenizer's ids, flat
        expected = tokenizer.encode_midi(row["name"])
        assert row["num_events"] == len(expected)
        assert np.array_equal(np.asarray(row["input_ids"]), expected.reshape(-1))
    report = json.loads(report_path.read_text())
    assert (report["total"], report["kept"], report["skipped"]) == (5, 3, 2)
    reasons = {Path(f["path"]).name: f["reason"] for f in report["files"]}
    assert set(reasons) == {"corrupt.mid", "notes.mid"}
    assert reasons["corrupt.mid"].startswith("invalid MIDI") and "truncated" in reasons["corrupt.mid"]
    assert reasons["notes.mid"].startswith("invalid MIDI") and "not a MIDI file" in reasons["notes.mid"]


def test_no_midi_files_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no MIDI files"):
        tokenize_midi_dataset(tmp_path)


def test_second_call_uses_the_cache(midi_folder, tmp_path):
    cache = tmp_path / "cache"
    CountingTokenizer.calls = 0
    first = tokenize_midi_dataset(midi_folder, CountingTokenizer(), cache_dir=cache, num_proc=None)
    assert CountingTokenizer.calls == 5  # every file once, bad ones included
    arrow_files = sorted(cache.glob("midi-tokens-*.arrow"))
    assert len(arrow_files) == 1
    mtime = arrow_files[0].stat().st_mtime_ns
    second = tokenize_midi_dataset(midi_folder, CountingTokenizer(), cache_dir=cache, num_proc=None)
    assert CountingTokenizer.calls == 5  # nothing tokenized again
    assert sorted(cache.glob("midi-tokens-*.arrow")) == arrow_files and arrow_files[0].stat().st_mtime_ns == mtime
    assert first["name"] == second["name"]
    assert all(np.array_equal(a, b) for a, b in zip(first["input_ids"], second["input_ids"], strict=True))
    # a changed input is a different cache entry: tokenized again
    (midi_folder / "notes.mid").unlink()
    third = tokenize_midi_dataset(midi_folder, CountingTokenizer(), cache_dir=cache, num_proc=None)
    assert CountingTokenizer.calls == 9 and len(third) == 3
    assert len(list(cache.glob("midi-tokens-*.arrow"))) == 2


def test_dataset_with_bytes_column(pop909_files):
    tokenizer = MidiEventTransformerTokenizer()
    raw = datasets.Dataset.from_dict({"bytes": [pop909_files[0].read_bytes(), b"garbage"]})
    dataset = tokenize_midi_dataset(raw, tokenizer)
    assert dataset["name"] == ["item-0"]
    assert np.array_equal(np.asarray(dataset[0]["input_ids"]), tokenizer.encode_midi(pop909_files[0]).reshape(-1))
    named = datasets.Dataset.from_dict({"bytes": [pop909_files[1].read_bytes()], "name": ["song.mid"]})
    assert tokenize_midi_dataset(named, tokenizer)["name"] == ["song.mid"]
    paths = datasets.Dataset.from_dict({"path": [str(pop909_files[1])]})
    assert tokenize_midi_dataset(paths, tokenizer)["name"] == [str(pop909_files[1])]
    with pytest.raises(ValueError, match="'path' or 'bytes' column"):
        tokenize_midi_dataset(datasets.Dataset.from_dict({"midi": [b"x"]}), tokenizer)


def fake_dataset(lengths: list[int], names: list[str] | None = None) -> datasets.Dataset:
    """Songs whose event i is ``[i % 1000 + 1, 2, ..., 8]``: a window's first token gives its start."""
    rows = [np.stack([np.arange(n) % 1000 + 1, *[np.full(n, t) for t in range(2, 9)]], axis=1) for n in lengths]
    return datasets.Dataset.from_dict({
        "name": names or [f"song{i:03d}.mid" for i in range(len(lengths))],
        "input_ids": [r.reshape(-1).astype(np.int16) for r in rows], "num_events": lengths})


def test_split_by_file_is_deterministic_and_by_name():
    names = [f"dir{i % 3}/song{i:03d}.mid" for i in range(200)]
    dataset = fake_dataset([3] * 200, names)
    split = split_by_file(dataset, 0.2)
    val = split["validation"]["name"]
    assert 20 < len(val) < 60 and len(val) + len(split["train"]) == 200
    assert not set(val) & set(split["train"]["name"])
    assert split_by_file(dataset, 0.2)["validation"]["name"] == val  # same call, same split
    shuffled = dataset.shuffle(seed=1)  # the order of the files does not matter, only their names
    assert sorted(split_by_file(shuffled, 0.2)["validation"]["name"]) == sorted(val)
    assert all(is_validation_file(n, 0.2) for n in val)
    assert is_validation_file("a/x.mid", 0.2) == is_validation_file("b/x.mid", 0.2)  # by file name
    assert len(split_by_file(dataset, 0.0)["validation"]) == 0
    with pytest.raises(ValueError, match="validation_fraction"):
        split_by_file(dataset, 1.0)


def test_windows_bounded_and_deterministic():
    dataset = fake_dataset([5, 300, 900])
    windows = MidiWindowDataset(dataset, max_events=64, seed=7)
    assert len(windows) == 3
    short = windows[0]
    assert short.dtype == torch.int64 and short.shape == (5, TOKENS_PER_EVENT)  # a short song is whole
    assert torch.equal(short[:, 0], torch.arange(1, 6))
    starts = {}
    for epoch in range(8):
        windows.set_epoch(epoch)
        for index in (1, 2):
            window = windows[index]
            assert window.shape == (64, TOKENS_PER_EVENT)
            start = int(window[0, 0]) - 1
            assert torch.equal(window[:, 0], torch.arange(start, start + 64) % 1000 + 1)  # contiguous
            again = MidiWindowDataset(dataset, max_events=64, seed=7)
            again.set_epoch(epoch)
            assert torch.equal(again[index], window)  # a pure function of (seed, epoch, index)
            starts[epoch, index] = start
    for index in (1, 2):
        assert len({starts[e, index] for e in range(8)}) > 2  # epochs differ
        assert all(0 <= starts[e, index] <= dataset[index]["num_events"] - 64 for e in range(8))
    assert any(starts[e, 2] == 0 for e in range(8)) and any(starts[e, 2] > 0 for e in range(8))
    other_seed = MidiWindowDataset(dataset, max_events=64, seed=8)
    other_starts = []
    for epoch in range(8):
        other_seed.set_epoch(epoch)
        other_starts.append(int(other_seed[2][0, 0]) - 1)
    assert other_starts != [starts[e, 2] for e in range(8)]  # the seed matters
    fixed = MidiWindowDataset(dataset, max_events=64, random_start=False)
    assert int(fixed[2][0, 0]) == 1
    with pytest.raises(ValueError, match="max_events"):
        MidiWindowDataset(dataset, max_events=1)
    with pytest.raises(ValueError, match="tokenizer"):
        MidiWindowDataset(dataset, augment=True)


def test_mixture_weights_repeat_and_share_files():
    dataset = fake_dataset([300, 300, 300, 300])
    windows = MidiWindowDataset(dataset, max_events=64, seed=7, windows_per_file=[3, 1, 0, 0.5])
    files = list(windows.items)
    assert files.count(0) == 3 and files.count(1) == 1 and files.count(2) == 0 and files.count(3) in (0, 1)
    assert len(windows) == len(files)
    copies = [windows[i] for i, f in enumerate(files) if f == 0]
    assert not torch.equal(copies[0], copies[1]) or not torch.equal(copies[1], copies[2])  # each copy draws anew
    halves = [MidiWindowDataset(fake_dataset([10] * 400), max_events=8, windows_per_file=[0.5] * 400, seed=s)
              for s in (0, 1)]
    assert all(150 < len(h) < 250 for h in halves) and list(halves[0].items) != list(halves[1].items)
    with pytest.raises(IndexError):
        windows[len(windows)]
    for bad, match in (([1, 2], "one weight per file"), ([1, -1, 1, 1], ">= 0"), ([0, 0, 0, 0], "no window")):
        with pytest.raises(ValueError, match=match):
            MidiWindowDataset(dataset, windows_per_file=bad)


def test_patches_first_moves_time_zero_patch_changes_ahead_of_notes(bach_files):
    from midi_event_transformer.generation.fim import event_steps
    from midi_event_transformer.vocabulary import EVENT_TYPE_IDS

    rows = MidiEventTransformerTokenizer().encode_midi(bach_files[0])
    moved = patches_first(rows)
    note = EVENT_TYPE_IDS["note"]
    head = int(np.argmax(event_steps(rows) > 0))
    assert (rows[1:head, 0] == note).any() and (rows[1:head, 0] != note).any()
    assert np.array_equal(np.sort(moved[:head], axis=0), np.sort(rows[:head], axis=0))  # the same rows
    types = moved[1:head, 0]
    first_note = int(np.argmax(types == note))
    assert (types[:first_note] != note).all() and (types[first_note:] == note).all()
    assert np.array_equal(moved[head:], rows[head:]) and np.array_equal(event_steps(moved), event_steps(rows))
    dataset = datasets.Dataset.from_dict({"name": ["a"], "input_ids": [rows.reshape(-1).astype(np.int16)],
                                          "num_events": [len(rows)]})
    always = MidiWindowDataset(dataset, max_events=len(rows) + 1, patches_first_rate=1.0)
    assert np.array_equal(always[0].numpy(), moved)
    assert np.array_equal(MidiWindowDataset(dataset, max_events=len(rows) + 1)[0].numpy(), rows)


def test_windows_augment_real_song(pop909_files):
    tokenizer = MidiEventTransformerTokenizer()
    rows = tokenizer.encode_midi(pop909_files[0])
    dataset = datasets.Dataset.from_dict({"name": ["a"], "input_ids": [rows.reshape(-1).astype(np.int16)],
                                          "num_events": [len(rows)]})
    plain = MidiWindowDataset(dataset, 128, random_start=False)[0]
    augmented = MidiWindowDataset(dataset, 128, tokenizer=tokenizer, augment=True, random_start=False, seed=1)
    seen = []
    for epoch in range(4):
        augmented.set_epoch(epoch)
        window = augmented[0]
        assert window.shape[1] == TOKENS_PER_EVENT and len(window) <= 128
        assert torch.equal(window[:, 0], plain[: len(window), 0]) or len(window) < len(plain)  # same event types
        seen.append(window)
    assert any(not torch.equal(w, plain) for w in seen)


def test_collator_right_and_left_padding():
    a = torch.tensor([[1] * 8, [5, 6, 7, 8, 0, 0, 0, 0]])  # 2 events
    b = torch.tensor([[9, 10, 11, 12, 13, 14, 15, 16]])  # 1 event
    pad_event = [PAD_ID] * 8
    right = DataCollatorForMidiEvents()([a, {"input_ids": b.reshape(-1).numpy()}])
    expected_ids = torch.tensor([a.reshape(-1).tolist(), b.reshape(-1).tolist() + pad_event])
    assert torch.equal(right["input_ids"], expected_ids)
    assert torch.equal(right["attention_mask"], torch.tensor([[1] * 16, [1] * 8 + [0] * 8]))
    assert torch.equal(right["labels"], torch.tensor([[1] * 8 + [5, 6, 7, 8] + [-100] * 4,
                                                      list(range(9, 17)) + [-100] * 8]))

    left = DataCollatorForMidiEvents(padding_side="left", pad_to_multiple_of=3)([a, b])
    assert torch.equal(left["input_ids"], torch.tensor([pad_event + a.reshape(-1).tolist(),
                                                        pad_event * 2 + b.reshape(-1).tolist()]))
    assert torch.equal(left["attention_mask"], torch.tensor([[0] * 8 + [1] * 16, [0] * 16 + [1] * 8]))
    assert torch.equal(left["labels"], torch.tensor([[-100] * 8 + [1] * 8 + [5, 6, 7, 8] + [-100] * 4,
                                                     [-100] * 16 + list(range(9, 17))]))
    assert all(t.dtype == torch.long for t in left.values())


def test_collator_bad_inputs():
    collate = DataCollatorForMidiEvents()
    with pytest.raises(ValueError, match="multiple of 8"):
        collate([torch.arange(12)])
    with pytest.raises(ValueError, match=r"\(n_events, 8\)"):
        collate([torch.zeros(3, 7, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"\(n_events, 8\)"):
        collate([torch.zeros(2, 3, 8, dtype=torch.long)])
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="padding_side"):
        DataCollatorForMidiEvents(padding_side="middle")
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        DataCollatorForMidiEvents(pad_to_multiple_of=0)
