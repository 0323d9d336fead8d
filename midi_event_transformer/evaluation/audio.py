"""Render MIDI files to WAV with the ``fluidsynth`` program and a General MIDI soundfont.

Nothing is installed through pip for this: it needs the ``fluidsynth`` command and a ``.sf2`` soundfont.
On Debian / Ubuntu: ``apt-get install fluidsynth fluid-soundfont-gm``; on macOS: ``brew install fluid-synth``
and a soundfont of your choice passed as ``soundfont=`` or through ``$MIDI_EVENT_TRANSFORMER_SOUNDFONT``.

Example::

    >>> from midi_event_transformer.evaluation.audio import render_audio
    >>> render_audio("song.mid", "song.wav")
    PosixPath('song.wav')
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

SOUNDFONT_ENV = "MIDI_EVENT_TRANSFORMER_SOUNDFONT"
FLUIDSYNTH_ENV = "MIDI_EVENT_TRANSFORMER_FLUIDSYNTH"

#: Where distributions put a General MIDI soundfont, in order of preference.
SOUNDFONT_PATHS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian / Ubuntu fluid-soundfont-gm
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",  # Arch, Fedora
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM2-2.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/local/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
    "/opt/homebrew/share/fluid-synth/sf2/VintageDreamsWaves-v2.sf2",
)

INSTALL_HINT = ("On Debian/Ubuntu: apt-get install fluidsynth fluid-soundfont-gm; on macOS: brew install fluid-synth "
                f"and pass a General MIDI .sf2 file (soundfont=... or ${SOUNDFONT_ENV}).")


class AudioRenderingError(RuntimeError):
    """Audio could not be rendered: fluidsynth or a soundfont is missing, or fluidsynth failed."""


def find_fluidsynth() -> str:
    """Path of the ``fluidsynth`` program (``$MIDI_EVENT_TRANSFORMER_FLUIDSYNTH`` first, then ``$PATH``).

    Raises:
        AudioRenderingError: not found; the message says what to install.
    """
    candidate = os.environ.get(FLUIDSYNTH_ENV) or "fluidsynth"
    found = shutil.which(candidate)
    if found is None:
        raise AudioRenderingError(f"the fluidsynth program is not installed (looked for {candidate!r}). {INSTALL_HINT}")
    return found


def find_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    """The soundfont to use: ``soundfont`` if given, else ``$MIDI_EVENT_TRANSFORMER_SOUNDFONT``, else the first
    existing file of ``SOUNDFONT_PATHS``.

    Raises:
        AudioRenderingError: the given file does not exist, or none was found (the message says what to install).
    """
    if soundfont is None:
        soundfont = os.environ.get(SOUNDFONT_ENV) or None
    if soundfont is not None:
        path = Path(soundfont)
        if not path.is_file():
            raise AudioRenderingError(f"soundfont {str(path)!r} does not exist or is not a file")
        return path
    for candidate in SOUNDFONT_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise AudioRenderingError(f"no General MIDI soundfont found (looked in {', '.join(SOUNDFONT_PATHS[:3])}, ...). "
                              f"{INSTALL_HINT}")


def render_audio(
    midi_path: str | os.PathLike,
    wav_path: str | os.PathLike,
    soundfont: str | os.PathLike | None = None,
    sample_rate: int = 44100,
    gain: float = 0.5,
    timeout: float | None = 600.0,
) -> Path:
    """Render a MIDI file to a 16-bit stereo WAV file with fluidsynth (faster than real time, no audio device).

    Args:
        midi_path: the MIDI file.
        wav_path: the WAV file to write (parent folders are created).
        soundfont: a ``.sf2`` file; default: see ``find_soundfont``.
        sample_rate: samples per second (8000 .. 96000).
        gain: fluidsynth's master gain (0 .. 10; 0.5 avoids clipping on dense piano music).
        timeout: seconds before fluidsynth is stopped (None: no limit).

    Returns:
        `Path` of the written WAV file.

    Raises:
        AudioRenderingError: fluidsynth or the soundfont is missing (the message says what to install), or
            fluidsynth failed or wrote nothing.
        FileNotFoundError: ``midi_path`` does not exist.
        ValueError: ``sample_rate`` or ``gain`` out of range.
    """
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool):
        raise TypeError(f"sample_rate must be an int, got {type(sample_rate).__name__}")
    if not 8000 <= sample_rate <= 96000:
        raise ValueError(f"sample_rate must be within 8000..96000, got {sample_rate}")
    if not 0 <= gain <= 10:
        raise ValueError(f"gain must be within 0..10, got {gain}")
    midi_path, wav_path = Path(midi_path), Path(wav_path)
    if not midi_path.is_file():
        raise FileNotFoundError(f"MIDI file {str(midi_path)!r} does not exist")
    program = find_fluidsynth()
    font = find_soundfont(soundfont)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    command = [program, "-n", "-i", "-q", "-a", "file", "-T", "wav", "-F", str(wav_path), "-r", str(sample_rate),
               "-g", str(gain), str(font), str(midi_path)]
    logger.info("rendering %s -> %s with %s", midi_path, wav_path, font)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        raise AudioRenderingError(f"fluidsynth did not finish rendering {midi_path} within {timeout} s") from error
    if result.returncode != 0 or not wav_path.is_file() or wav_path.stat().st_size <= 44:
        message = (result.stderr or result.stdout).strip().splitlines()
        detail = message[-1] if message else f"exit status {result.returncode}"
        raise AudioRenderingError(f"fluidsynth failed to render {midi_path}: {detail}")
    return wav_path


def audio_problem() -> str | None:
    """Why audio cannot be rendered here (fluidsynth or a soundfont missing), or None when it can."""
    try:
        find_fluidsynth()
        find_soundfont()
    except AudioRenderingError as error:
        return str(error)
    return None


__all__ = ["AudioRenderingError", "SOUNDFONT_PATHS", "audio_problem", "find_fluidsynth", "find_soundfont",
           "render_audio"]
