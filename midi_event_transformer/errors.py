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


def error_line(error: BaseException) -> str:
    """``error``'s message on one line (each run of whitespace, newlines included, becomes one space), or the
    error's type name when it has no message: how the CLI, the web app and the model loader quote an error."""
    return " ".join(str(error).split()) or type(error).__name__


__all__ = ["InvalidMidiError", "error_line"]
