"""Do the instrument controls do what they say? Generate from ``instruments=`` and measure each requested part.

For each seed, :func:`evaluate_instrument_controls` generates a piece with ``generate_midi(instruments=...)`` and
reads it back with ``note_list.read_notes``:

- ``bars``: how many bars the piece spans (bar 1 at time 0, bars from its time signatures, 4/4 when it has none,
  as ``generation.fim.bar_steps`` reads them), up to the bar of its last note;
- per requested instrument (its channel, as ``generation.prompts.instrument_channels`` assigns them): its notes,
  the share of the piece's bars in which one of them sounds (``bars_share``) and the share of its notes inside the
  instrument's usual range (``in_range_share``, :data:`INSTRUMENT_RANGES`; ``None`` for an instrument without one).

Nothing masks pitches during generation: the figures are the model's own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..generation.fim import bar_steps
from ..generation.general_midi import instrument_name
from ..generation.note_list import read_notes
from ..generation.prompts import instrument_channels
from ..vocabulary import STEPS_PER_BEAT

#: Usual range (lowest, highest MIDI pitch, both included) by General MIDI program: violin G3 and up, viola C3 and
#: up, cello C2-A5, the voices (choir aahs, voice oohs, synth voice) C2-C6.
INSTRUMENT_RANGES: dict[int, tuple[int, int]] = {40: (55, 127), 41: (48, 127), 42: (36, 81),
                                                 52: (36, 84), 53: (36, 84), 54: (36, 84)}


def piece_parts(midi: Any, instruments: Sequence[str | int] | str, tokenizer: Any = None) -> dict[str, Any]:
    """The figures of one generated piece (see the module docstring) for the requested ``instruments``.

    Bars are those of ``generation.fim.bar_steps`` on the piece's tokens (the library's one reading of bars), each
    note placed on the same 16th-of-a-beat steps.
    """
    if tokenizer is None:
        from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

        tokenizer = MidiEventTransformerTokenizer()
    notes = read_notes(midi)
    bars = bar_steps(tokenizer.encode_midi(midi))  # (b,) bar starts in steps

    def bar_of(tick: int) -> int:
        return int(np.searchsorted(bars, tick * STEPS_PER_BEAT // notes.ticks_per_beat, side="right")) - 1

    n_bars = bar_of(max((note.start for note in notes.notes), default=0)) + 1
    parts = []
    for channel, program in instrument_channels(instruments).items():
        own = [note for note in notes.notes if note.channel == channel]
        sounding = set()
        for note in own:  # every bar the note sounds in (a held note counts in the bars it lasts into)
            sounding.update(range(bar_of(note.start), bar_of(max(note.start + 1, note.end) - 1) + 1))
        low, high = INSTRUMENT_RANGES.get(program, (None, None))
        in_range = (sum(low <= note.pitch <= high for note in own) / len(own)) if own and low is not None else None
        parts.append({"instrument": instrument_name(program), "program": program, "channel": channel,
                      "notes": len(own), "bars_share": len({b for b in sounding if b < n_bars}) / n_bars,
                      "in_range_share": in_range if own or low is None else 0.0})
    return {"bars": n_bars, "parts": parts}


def evaluate_instrument_controls(model: Any = None, tokenizer: Any = None, *,
                                 instruments: Sequence[str | int] | str, seeds: Sequence[int] = (0, 1, 2),
                                 events: int = 512, save_dir: str | os.PathLike | None = None,
                                 **generate_kwargs: Any) -> dict[str, Any]:
    """Generate one piece per seed with ``instruments=`` and measure every requested part.

    Args:
        model, tokenizer: as ``generate_midi`` takes them (None: the shipped model).
        instruments: the request, e.g. ``["Violin", "Violin", "Viola", "Cello"]``.
        seeds: one piece per seed.
        events: events generated per piece (the prompt's rows come on top).
        save_dir: also write each piece there as ``<seed>.mid``.
        generate_kwargs: more ``generate_midi`` keywords (``bpm``, ``temperature``, ...).

    Returns:
        ``{"instruments", "events", "pieces": [{"seed", "bars", "parts": [...]}], "worst": {"bars",
        "bars_share", "in_range_share"}}``: ``worst`` holds the smallest of each figure over all pieces and parts.
    """
    from ..generation.api import generate_midi

    pieces = []
    for seed in seeds:
        midi = generate_midi(model, tokenizer, instruments=instruments, events=events, seed=seed, progress=False,
                             **generate_kwargs)[0]
        if save_dir is not None:
            os.makedirs(save_dir, exist_ok=True)
            midi.save(os.path.join(save_dir, f"{seed}.mid"))
        pieces.append({"seed": seed, **piece_parts(midi, instruments, tokenizer)})
    parts = [part for piece in pieces for part in piece["parts"]]
    ranges = [part["in_range_share"] for part in parts if part["in_range_share"] is not None]
    worst = {"bars": min(piece["bars"] for piece in pieces), "bars_share": min(p["bars_share"] for p in parts),
             "in_range_share": min(ranges) if ranges else None}
    return {"instruments": list(instruments) if not isinstance(instruments, str) else instruments,
            "events": events, "pieces": pieces, "worst": worst}


__all__ = ["INSTRUMENT_RANGES", "evaluate_instrument_controls", "piece_parts"]
