"""Command line interface: ``midi-event-transformer <command> ...``.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and sets
``handler``, ``_run_<name>(args) -> int`` does the work. Register new subcommands in ``_SUBCOMMANDS``.
Errors the user can fix (bad arguments, unreadable MIDI) print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from ..errors import InvalidMidiError

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
    from ..midi_writing import row_to_event
    from ..vocabulary import EVENT_PARAMETERS, ID_TO_EVENT_TYPE

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


# ----------------------------------------------------------------------------- generate
def _add_generate(subparsers) -> None:
    from ..generation.api import (
        DEFAULT_EVENTS,
        DEFAULT_PROMPT_EVENTS,
        DEFAULT_TEMPERATURE,
        DEFAULT_TOP_K,
        DEFAULT_TOP_P,
        DTYPE_NAMES,
    )

    parser = subparsers.add_parser(
        "generate", help="write new MIDI files with a model (default: the one shipped in the package)",
        description="Generate MIDI files: a new piece (optionally with instruments, drum kit, tempo, time signature "
                    "and key), the continuation of --prompt, or --prompt with a track added (--add-track) or "
                    "written again (--regenerate-track). Files are named generated_seed<SEED>_<i>.mid; the same "
                    "seed gives the same files.")
    parser.add_argument("--model", default=None, metavar="DIR_OR_HUB_ID",
                        help="a model directory (ours or a SkyTNT/midi-model checkpoint) or a Hub id "
                             "(default: the embedded model)")
    prompt = parser.add_argument_group("what to generate")
    prompt.add_argument("--prompt", default=None, metavar="SONG.mid", help="continue this MIDI file")
    prompt.add_argument("--prompt-events", type=int, default=None, metavar="N",
                        help=f"keep the first N events of --prompt, BOS included (default {DEFAULT_PROMPT_EVENTS})")
    prompt.add_argument("--instruments", action="append", default=None, metavar="NAMES",
                        help="General MIDI instrument names or program numbers 0-127, comma-separated or repeated "
                             "(e.g. \"Acoustic Grand Piano, Violin\"); the piece keeps to them")
    prompt.add_argument("--drum-kit", default=None, metavar="KIT",
                        help="drum kit on channel 10: Standard, Room, Power, Electric, TR-808, Jazz, Brush, Orchestra")
    prompt.add_argument("--bpm", type=float, default=None, help="tempo in beats per minute (1-383)")
    prompt.add_argument("--time-signature", default=None, metavar="N/D", help="e.g. 3/4, 6/8")
    prompt.add_argument("--key", default=None, help="key signature, e.g. \"D minor\", \"F# major\", Bb")
    prompt.add_argument("--no-control-change", action="store_true",
                        help="forbid control change events (pedal, volume, ...)")
    edit = parser.add_argument_group("edit a track of --prompt (the whole piece; the other tracks stay as they are)")
    edit.add_argument("--add-track", default=None, metavar="INSTRUMENT",
                      help="add a track: a General MIDI instrument name or program, or a drum kit name / drums")
    edit.add_argument("--regenerate-track", type=int, default=None, metavar="N",
                      help="write track N again (numbered as the tokenize command shows them)")
    length = parser.add_argument_group("length")
    length.add_argument("--seconds", type=float, default=None, metavar="S",
                        help="stop at S seconds after the prompt (tempo changes counted); notes end there")
    length.add_argument("--bars", type=float, default=None, metavar="B", help="stop at B bars after the prompt")
    length.add_argument("--context-events", type=int, default=None, metavar="W",
                        help="sliding window: the model sees at most W events (default: the training window, 512)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--events", type=int, default=None, metavar="N",
                          help=f"events to generate after the prompt (default {DEFAULT_EVENTS}; with --seconds, "
                               "--bars or a track edit: until the piece's end)")
    sampling.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                          help=f"default {DEFAULT_TEMPERATURE}")
    sampling.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help=f"default {DEFAULT_TOP_P}")
    sampling.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                          help=f"default {DEFAULT_TOP_K}; 0 turns top-k off")
    sampling.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    sampling.add_argument("--num-samples", type=int, default=1, metavar="N", help="pieces to generate (default 1)")
    sampling.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    sampling.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                          help="default: the stored dtype; float32 for a small model on CPU")
    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", default=".", metavar="DIR", help="where to write the files (default: .)")
    output.add_argument("--piano-roll", action="store_true", help="also draw a PNG piano roll next to each file")
    output.add_argument("--audio", action="store_true",
                        help="also render a WAV next to each file (needs the fluidsynth program and a General MIDI "
                             "soundfont, e.g. apt-get install fluidsynth fluid-soundfont-gm)")
    output.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=_run_generate)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _run_generate(args: argparse.Namespace) -> int:
    import secrets
    from pathlib import Path

    from transformers.utils import logging as transformers_logging

    from ..generation.api import sample_file_name
    from ..generation.requests import PromptOptions, SamplingOptions, generate_pieces

    # the optional outputs are checked before the (long) generation
    try:
        if args.piano_roll:
            from ..evaluation.pianoroll import draw_piano_roll, import_pyplot

            import_pyplot()
        if args.audio:
            from ..evaluation.audio import AudioRenderingError, find_fluidsynth, find_soundfont, render_audio

            find_fluidsynth()
            find_soundfont()
    except (ImportError, RuntimeError) as error:
        raise _UsageError(_one_line(error)) from error
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise _UsageError(f"--output-dir {output_dir} is a file, not a directory")
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    instruments = ",".join(args.instruments) if args.instruments else None

    transformers_logging.disable_progress_bar()  # weight-loading bars; ours counts events
    try:
        prompt_options = PromptOptions(
            prompt=args.prompt, prompt_events=args.prompt_events, instruments=instruments, drum_kit=args.drum_kit,
            bpm=args.bpm, time_signature=args.time_signature, key=args.key,
            disable_control_change=args.no_control_change, add_track=args.add_track,
            regenerate_track=args.regenerate_track, seconds=args.seconds, bars=args.bars)
        sampling = SamplingOptions(events=args.events, temperature=args.temperature, top_p=args.top_p,
                                   top_k=args.top_k, seed=seed, num_samples=args.num_samples,
                                   context_events=args.context_events, progress=not args.no_progress)
        samples, tokenizer = generate_pieces(args.model, None, prompt_options, sampling, device=args.device,
                                             dtype=args.dtype)
    except (ValueError, TypeError) as error:  # InvalidMidiError is a ValueError
        raise _UsageError(_one_line(error)) from error

    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"seed: {seed}")
    for index, piece in enumerate(samples):
        path = output_dir / sample_file_name(seed, index)
        piece.to_midi(tokenizer).save(path)
        written = [path]
        if args.piano_roll:
            written.append(draw_piano_roll(path, path.with_suffix(".png")))
        if args.audio:
            try:
                written.append(render_audio(path, path.with_suffix(".wav")))
            except AudioRenderingError as error:
                raise _UsageError(_one_line(error)) from error
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
        raise _UsageError(_one_line(error)) from error
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
        raise _UsageError(_one_line(error)) from error
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
    from ..generation.api import DTYPE_NAMES
    from .web import DEFAULT_HOST, DEFAULT_PORT

    parser = subparsers.add_parser(
        "app", help="serve a local web app to generate MIDI in the browser (needs the [app] extra: gradio)",
        description="Serve a Gradio web app on this machine: instruments, drum kit, tempo, signatures, sampling, "
                    "continuation of an uploaded MIDI file; a live piano roll, then downloads and audio. "
                    'Needs gradio: pip install "midi-event-transformer[app]".')
    parser.add_argument("--model", default=None, metavar="DIR_OR_HUB_ID",
                        help="the model the page starts with (default: the embedded model)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to serve on (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                          help="default: the stored dtype; float32 for a small model on CPU")
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
        raise _UsageError(_one_line(error)) from error
    try:
        app.models.get()  # a model that cannot be loaded fails here, not in the page
        app.launch(args.host, args.port)  # serves until interrupted
    except (ValueError, TypeError) as error:
        raise _UsageError(_one_line(error)) from error
    except OSError as error:  # the port is taken, the host is not an address of this machine, ...
        raise _UsageError(f"cannot serve on {args.host}:{args.port}: {_one_line(error)}") from error
    finally:
        app.close()
    return 0


# ----------------------------------------------------------------------------- main
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
