"""Command line interface: ``midi-event-transformer <command> ...``.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and sets
``handler``, ``_run_<name>(args) -> int`` does the work. Register new subcommands in ``_SUBCOMMANDS``.
Errors the user can fix (bad arguments, unreadable MIDI) print one line on stderr and exit non-zero; the package's
logged warnings (e.g. an instrument the model never saw in training) print one line each on stderr too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import InvalidMidiError, error_line

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
    from ..midi_writing import row_to_named_event
    from ..vocabulary import ID_TO_EVENT_TYPE

    header = f"{'index':>6}  {'type':<15}{'time':>10}  {'track':>5}  {'channel':>7}  params"
    lines = [header, "-" * len(header)]
    beats = 0
    for index, row in enumerate(ids.tolist()):
        if limit is not None and index >= limit:
            lines.append(f"... ({len(ids) - limit} more rows)")
            break
        event = row_to_named_event(row)
        if event is None:
            name = {0: "<pad>", 1: "<bos>", 2: "<eos>"}.get(row[0], ID_TO_EVENT_TYPE.get(row[0], "<invalid>"))
            line = f"{index:>6}  {name:<15}{'':>10}  {'':>5}  {'':>7}  "
        else:
            name, values = event
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
    from ..midi_writing import KEY_NAMES

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
    from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    if args.limit is not None and args.limit < 0:
        raise _UsageError("--limit must be >= 0")
    tokenizer = MidiEventTransformerTokenizer(optimise_midi=not args.no_optimise)
    ids = tokenizer.encode_midi(args.midi)
    print(f"{args.midi}: {len(ids) - 2} events (+ BOS/EOS), optimise_midi={tokenizer.optimise_midi}")
    print("\n".join(_format_event_table(ids, show_ids=args.ids, limit=args.limit)))
    return 0


# ----------------------------------------------------------------------------- option flags
#: The --help sections of ``generate``'s option flags, by an option field's ``metadata["cli_group"]``.
_OPTION_GROUPS = {
    "prompt": "what to generate",
    "edit": "edit a track of --prompt (the whole piece; the other tracks stay as they are)",
    "length": "length",
    "sampling": "sampling",
    "output": "output",
}


def _cli_fields(classes: Iterable[type]) -> list[tuple[dataclasses.Field, type]]:
    """Each option field of ``classes`` that has a flag (not a Python object), with the type its flag parses:
    ``bool`` for a switch, ``int`` / ``float`` for a number, ``str`` otherwise (from the field's annotation)."""
    flags = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for option in dataclasses.fields(cls):
            if option.metadata.get("python_only"):
                continue
            hint = hints[option.name]
            kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
            kinds = tuple(kind for kind in kinds if kind is not type(None))
            if kinds == (bool,):
                kind = bool
            elif kinds and all(kind in (int, float) for kind in kinds):
                kind = float if float in kinds else int
            else:
                kind = str
            flags.append((option, kind))
    return flags


def _option_flag(option: dataclasses.Field) -> str:
    return option.metadata.get("cli_flag", "--" + option.name.replace("_", "-"))


def _add_option_flags(parser: argparse.ArgumentParser, classes: Iterable[type],
                      groups: dict[str, Any] | None = None) -> None:
    """A flag for each option field of ``classes`` (its name, help, type and default read from the field), in the
    argument group of its ``cli_group`` when ``groups`` has it, else in ``parser`` itself."""
    for option, kind in _cli_fields(classes):
        metadata = option.metadata
        text = metadata.get("cli_help", metadata["help"])
        where = (groups or {}).get(metadata.get("cli_group"), parser)
        if kind is bool:  # a switch that turns the default around
            where.add_argument(_option_flag(option), dest=option.name, default=option.default,
                               action="store_false" if option.default else "store_true", help=text.replace("%", "%%"))
            continue
        if option.default is not None:
            text += f" (default {option.default})"
        if metadata.get("cli_append"):
            text += "; the flag may be repeated"
        where.add_argument(_option_flag(option), dest=option.name, default=option.default,
                           type=None if kind is str else kind, metavar=metadata.get("cli_metavar"),
                           choices=metadata.get("choices"), action="append" if metadata.get("cli_append") else None,
                           help=text.replace("%", "%%"))


def _option_values(args: argparse.Namespace, classes: Iterable[type]) -> dict[str, typing.Any]:
    """The values of the option flags made by :func:`_add_option_flags` (a repeated flag's values joined by
    commas), by field name."""
    values = {}
    for option, _ in _cli_fields(classes):
        value = getattr(args, option.name)
        if option.metadata.get("cli_append") and value is not None:
            value = ",".join(value)
        values[option.name] = value
    return values


# ----------------------------------------------------------------------------- generate
def _add_generate(subparsers) -> None:
    from ..generation.requests import OPTION_CLASSES

    parser = subparsers.add_parser(
        "generate", help="write new MIDI files with a model (default: the one shipped in the package)",
        description="Generate MIDI files: a new piece (optionally with instruments, drum kit, tempo, time signature "
                    "and key), the continuation of --prompt, or --prompt with a track added (--add-track) or "
                    "written again (--regenerate-track). Files are named generated_seed<SEED>_<i>.mid; the same "
                    "seed gives the same files (a random seed is printed).")
    groups = {key: parser.add_argument_group(title) for key, title in _OPTION_GROUPS.items()}
    output = groups["output"]
    output.add_argument("--output-dir", default=".", metavar="DIR", help="where to write the files (default: .)")
    output.add_argument("--piano-roll", action="store_true", help="also draw a PNG piano roll next to each file")
    output.add_argument("--audio", action="store_true",
                        help="also render a WAV next to each file (needs the fluidsynth program and a General MIDI "
                             "soundfont, e.g. apt-get install fluidsynth fluid-soundfont-gm)")
    _add_option_flags(parser, OPTION_CLASSES, groups)
    parser.set_defaults(handler=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    import secrets
    from pathlib import Path

    from transformers.utils import logging as transformers_logging

    from ..generation.outputs import save_samples
    from ..generation.requests import OPTION_CLASSES, generate_pieces, options_from_keywords

    # the optional outputs are checked before the (long) generation
    try:
        if args.piano_roll:
            from ..evaluation.pianoroll import draw_infill_piano_rolls, draw_piano_roll, import_pyplot

            import_pyplot()
        if args.audio:
            from ..evaluation.audio import AudioRenderingError, find_fluidsynth, find_soundfont, render_audio

            find_fluidsynth()
            find_soundfont()
    except (ImportError, RuntimeError) as error:
        raise _UsageError(error_line(error)) from error
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise _UsageError(f"--output-dir {output_dir} is a file, not a directory")
    values = _option_values(args, OPTION_CLASSES)
    if values["seed"] is None:  # the files are named after their seed
        values["seed"] = secrets.randbelow(2**31)

    transformers_logging.disable_progress_bar()  # weight-loading bars; ours counts events
    try:
        samples, tokenizer = generate_pieces(*options_from_keywords(values, "generate"))
    except (ValueError, TypeError) as error:  # InvalidMidiError is a ValueError
        raise _UsageError(error_line(error)) from error

    print(f"seed: {values['seed']}")
    paths = save_samples([piece.to_midi(tokenizer) for piece in samples], output_dir, values["seed"])
    for piece, path in zip(samples, paths, strict=True):
        written = [path]
        if args.piano_roll and piece.span is not None:  # an infill: the prompt above the result, around the span
            written.append(draw_infill_piano_rolls(values["prompt"], path, piece.span))
        elif args.piano_roll:
            written.append(draw_piano_roll(path, path.with_suffix(".png")))
        if args.audio:
            try:
                written.append(render_audio(path, path.with_suffix(".wav")))
            except AudioRenderingError as error:
                raise _UsageError(error_line(error)) from error
        print(f"wrote {', '.join(str(p) for p in written)} ({piece.events} events)")
    return 0


# ----------------------------------------------------------------------------- convert
def _add_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a SkyTNT/midi-model checkpoint to this format",
        description="Convert a SkyTNT/midi-model checkpoint directory (config.json + model.safetensors) or, with "
                    "--lora, one of its LoRA adapters, into a directory from_pretrained / peft load.")
    parser.add_argument("src", help="the reference checkpoint (or LoRA adapter) directory")
    parser.add_argument("dst", help="the output directory (created)")
    parser.add_argument("--lora", action="store_true", help="convert a LoRA adapter for peft.PeftModel")
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..hub.conversion import convert_skytnt_checkpoint, convert_skytnt_lora

    if not Path(args.src).is_dir():
        raise _UsageError(f"{args.src} is not a directory")
    try:
        destination = (convert_skytnt_lora if args.lora else convert_skytnt_checkpoint)(args.src, args.dst)
    except (ValueError, FileNotFoundError) as error:
        raise _UsageError(error_line(error)) from error
    print(f"wrote {destination}")
    return 0


# ----------------------------------------------------------------------------- prepare
def _add_prepare(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="tokenize MIDI files into a dataset for training",
        description="Tokenize MIDI files (folders are searched recursively) into a datasets.DatasetDict with a "
                    "train and a validation split (by file; an empty split is left out), saved with save_to_disk; "
                    "load it with datasets.load_from_disk(DIR). Files that cannot be read are skipped and listed in "
                    "DIR/skipped_files.json.")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="MIDI folders or files")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="where to save the dataset")
    parser.add_argument("--validation-fraction", type=float, default=0.05, metavar="F",
                        help="share of files in the validation split, chosen by a hash of the file name "
                             "(default 0.05)")
    parser.add_argument("--num-proc", type=int, default=None, metavar="N", help="tokenizing processes")
    parser.add_argument("--quality-filter", action="store_true",
                        help="also skip files that fail the reference's quality filter")
    parser.add_argument("--no-optimise", action="store_true",
                        help="keep the files' own tracks and channels (optimise_midi=False)")
    parser.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer
    from ..training.data import split_by_file, tokenize_midi_dataset

    if args.num_proc is not None and args.num_proc < 1:
        raise _UsageError(f"--num-proc must be >= 1, got {args.num_proc}")
    if not 0 <= args.validation_fraction < 1:
        raise _UsageError(f"--validation-fraction must be in [0, 1), got {args.validation_fraction}")
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise _UsageError(f"--output-dir {output_dir} is a file, not a directory")
    tokenizer = MidiEventTransformerTokenizer(optimise_midi=not args.no_optimise)
    report = output_dir / "skipped_files.json"
    try:
        dataset = tokenize_midi_dataset(args.sources, tokenizer, num_proc=args.num_proc,
                                        quality_filter=args.quality_filter, report_path=report)
        splits = split_by_file(dataset, args.validation_fraction)
    except (ValueError, FileNotFoundError) as error:
        raise _UsageError(error_line(error)) from error
    sizes = ", ".join(f"{name} {len(split)} files" for name, split in splits.items())
    for name in [name for name, split in splits.items() if len(split) == 0]:
        del splits[name]  # datasets cannot load back a saved split without rows
    splits.save_to_disk(str(output_dir))
    skipped = json.loads(report.read_text())["skipped"]
    events = sum(dataset["num_events"])
    print(f"{len(dataset)} files tokenized ({events} events incl. BOS/EOS rows), {skipped} skipped "
          f"(listed in {report}); {sizes}")
    print(f"saved to {output_dir} (datasets.load_from_disk)")
    return 0


# ----------------------------------------------------------------------------- app
def _add_app(subparsers) -> None:
    from ..generation.requests import LoadingOptions
    from .web import DEFAULT_HOST, DEFAULT_PORT

    parser = subparsers.add_parser(
        "app", help="serve a local web app to generate MIDI in the browser (needs the [app] extra: gradio)",
        description="Serve a Gradio web app on this machine: instruments, drum kit, tempo, signatures, sampling, "
                    "continuation of an uploaded MIDI file; a live piano roll, then downloads and audio. "
                    'Needs gradio: pip install "midi-event-transformer[app]".')
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to serve on (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    _add_option_flags(parser, [LoadingOptions])  # --model (the page's default model), --device, --dtype
    parser.set_defaults(handler=_run_app)


def _run_app(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from .web import MidiApp

    if not 1 <= args.port <= 65535:
        raise _UsageError(f"--port must be in 1..65535, got {args.port}")
    transformers_logging.disable_progress_bar()  # weight-loading bars
    try:
        app = MidiApp(args.model, device=args.device, dtype=args.dtype)
    except ImportError as error:
        raise _UsageError(error_line(error)) from error
    try:
        app.models.get()  # a model that cannot be loaded fails here, not in the page
        app.launch(args.host, args.port)  # serves until interrupted
    except (ValueError, TypeError) as error:
        raise _UsageError(error_line(error)) from error
    except OSError as error:  # the port is taken, the host is not an address of this machine, ...
        raise _UsageError(f"cannot serve on {args.host}:{args.port}: {error_line(error)}") from error
    finally:
        app.close()
    return 0


# ----------------------------------------------------------------------------- main
class _StderrLines(logging.Handler):
    """The package's log records at WARNING and above as ``midi-event-transformer: warning: <message>``, one line
    each on the current ``sys.stderr`` (a traceback, if any, follows)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{PROG}: {record.levelname.lower()}: {' '.join(record.getMessage().split())}"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            print(text, file=sys.stderr)
        except Exception:  # as logging.Handler does: a broken stream must not end the command
            self.handleError(record)


class _UsageError(Exception):
    """A user error found after argument parsing (printed as one line, exit status 2)."""


_SUBCOMMANDS: list[Callable] = [_add_tokenize, _add_generate, _add_prepare, _add_convert, _add_app]


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
    package_logger = logging.getLogger(__name__.split(".")[0])
    warning_lines = _StderrLines()
    package_logger.addHandler(warning_lines)
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
    finally:
        package_logger.removeHandler(warning_lines)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
