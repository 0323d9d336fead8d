"""Command line interface: ``midi-event-transformer <command> ...``.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and sets
``handler``, ``_run_<name>(args) -> int`` does the work. Register new subcommands in ``_SUBCOMMANDS``.
Errors the user can fix (bad arguments, unreadable MIDI) print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import InvalidMidiError

PROG = "midi-event-transformer"


class _OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: error: ...``) and exit with status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------- tokenize
def _add_tokenize(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenize", help="print the event table of a MIDI file",
        description="Tokenize a MIDI file and print one line per event: index, type, time in beats, "
                    "track, channel and the other parameters.")
    parser.add_argument("midi", help="path of a MIDI file")
    parser.add_argument("--no-optimise", action="store_true",
                        help="keep the file's own tracks and channels (optimise_midi=False)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="print at most N events")
    parser.add_argument("--ids", action="store_true", help="also print each row's 8 token ids")
    parser.set_defaults(handler=_run_tokenize)


def _format_event_table(ids, show_ids: bool = False, limit: int | None = None) -> list[str]:
    """Readable lines for rows of ids (n_events, 8): index, type, time (beats), track, channel, params."""
    from .midi_writing import row_to_event
    from .vocabulary import EVENT_PARAMETERS, ID_TO_EVENT_TYPE

    header = f"{'index':>6}  {'type':<15}{'time':>10}  {'track':>5}  {'channel':>7}  params"
    lines = [header, "-" * len(header)]
    beats = 0
    for index, row in enumerate(ids.tolist()):
        if limit is not None and index >= limit:
            lines.append(f"... ({len(ids) - limit} more rows)")
            break
        event = row_to_event(row)
        if event is None:
            name = {0: "<pad>", 1: "<bos>", 2: "<eos>"}.get(row[0], ID_TO_EVENT_TYPE.get(row[0], "<invalid>"))
            line = f"{index:>6}  {name:<15}{'':>10}  {'':>5}  {'':>7}  "
        else:
            name, values = event[0], dict(zip(EVENT_PARAMETERS[event[0]], event[1:], strict=True))
            beats += values.pop("time1")
            time = beats + values.pop("time2") / 16
            track = values.pop("track")
            channel = values.pop("channel", "")
            params = _readable_params(name, values)
            line = f"{index:>6}  {name:<15}{time:>10.4f}  {track:>5}  {channel!s:>7}  {params}"
        if show_ids:
            line += "  [" + " ".join(str(v) for v in row) + "]"
        lines.append(line.rstrip())
    return lines


_NOTE_NAMES = "C C# D D# E F F# G G# A A# B".split()


def _readable_params(name: str, values: dict[str, int]) -> str:
    """Parameters in musical units: pitch names, durations in beats, signatures as written in scores."""
    from .midi_writing import KEY_NAMES

    if name == "note":
        pitch = values["pitch"]
        return (f"pitch={pitch} ({_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}) velocity={values['velocity']} "
                f"duration={values['duration'] / 16:g}")
    if name == "time_signature":
        return f"{values['nn'] + 1}/{2 ** (values['dd'] + 1)}"
    if name == "key_signature":
        sf, mi = values["sf"] - 7, values["mi"]
        return f"sf={sf:+d} mi={mi} ({KEY_NAMES[(sf, mi)]})"
    return " ".join(f"{key}={value}" for key, value in values.items())


def _run_tokenize(args: argparse.Namespace) -> int:
    from .tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    if args.limit is not None and args.limit < 0:
        raise _UsageError("--limit must be >= 0")
    tokenizer = MidiEventTransformerTokenizer(optimise_midi=not args.no_optimise)
    ids = tokenizer.encode_midi(args.midi)
    print(f"{args.midi}: {len(ids) - 2} events (+ BOS/EOS), optimise_midi={tokenizer.optimise_midi}")
    print("\n".join(_format_event_table(ids, show_ids=args.ids, limit=args.limit)))
    return 0


# ----------------------------------------------------------------------------- main
class _UsageError(Exception):
    """A user error found after argument parsing (printed as one line, exit status 2)."""


_SUBCOMMANDS: list[Callable] = [_add_tokenize]


def build_parser() -> argparse.ArgumentParser:
    """The ``midi-event-transformer`` argument parser with every registered subcommand."""
    parser = _OneLineErrorParser(prog=PROG, description="Hierarchical MIDI event transformer tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineErrorParser)
    subparsers.required = True
    for add_subcommand in _SUBCOMMANDS:
        add_subcommand(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help (0) or a usage error (2, already printed)
        return int(exit_request.code or 0)
    try:
        return args.handler(args)
    except (InvalidMidiError, _UsageError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"{PROG}: error: {err.filename}: file not found", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
