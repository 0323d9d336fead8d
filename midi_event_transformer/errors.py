"""Exceptions raised by midi_event_transformer."""

from __future__ import annotations


class InvalidMidiError(ValueError):
    """A MIDI source could not be read: empty, not MIDI, truncated, bad header, unsupported division...

    The message names the source (path or a short description) and the problem.
    """

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


__all__ = ["InvalidMidiError"]
