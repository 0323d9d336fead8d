"""Generated samples on disk: :func:`save_samples` writes the ``.mid`` files of a generation, named by
:func:`sample_file_name` (the ``generate`` command, the web app and the training script's samples).

Example::

    >>> from midi_event_transformer import generate_midi
    >>> from midi_event_transformer.generation.outputs import save_samples
    >>> save_samples(generate_midi(seed=3, num_samples=2), "out", seed=3)
    [PosixPath('out/generated_seed3_0.mid'), PosixPath('out/generated_seed3_1.mid')]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def sample_file_name(seed: int, index: int) -> str:
    """The file name of sample ``index`` of a seeded generation: ``generated_seed<seed>_<index>.mid``."""
    return f"generated_seed{seed}_{index}.mid"


def save_samples(midis: Sequence[Any], output_dir: str | os.PathLike, seed: int | None = None, *,
                 names: Sequence[str] | None = None) -> list[Path]:
    """Save each ``mido.MidiFile`` of ``midis`` in ``output_dir`` (created with its parents when missing).

    Args:
        midis: the samples, in order.
        output_dir: the folder to write to.
        seed: the generation's seed: sample ``i`` is saved as :func:`sample_file_name` ``(seed, i)``.
        names: the file names instead (one per sample), e.g. for samples that are not named by a seed.

    Returns:
        the path of each file, in the order of ``midis``.

    Raises:
        ValueError: neither or both of ``seed`` and ``names``, or not one name per sample.
    """
    if (seed is None) == (names is None):
        raise ValueError("give the samples' seed or their names (exactly one)")
    if names is None:
        names = [sample_file_name(seed, index) for index in range(len(midis))]
    elif len(names) != len(midis):
        raise ValueError(f"{len(names)} names for {len(midis)} samples")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for midi, name in zip(midis, names, strict=True):
        path = output_dir / name
        midi.save(path)
        paths.append(path)
    return paths


__all__ = ["sample_file_name", "save_samples"]
