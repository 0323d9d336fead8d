"""What the benchmark scripts share: random-weight models, the reference app's sampling, a clock per event, one
subprocess per measurement, the machine and versions a JSON report names, and the MIDI files a script reads
(``--data`` / ``--file-list`` / ``--limit``).

Not a benchmark itself. Scripts import it as ``from bench_common import ...``: ``python scripts/X.py`` puts scripts/
on ``sys.path``; a script that tests load as a file puts it there itself
(``sys.path.insert(0, str(Path(__file__).resolve().parent))``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

from midi_event_transformer.midi_reading import find_midi_files
from midi_event_transformer.vocabulary import TOKENS_PER_EVENT

#: Sampling of the reference's app (and of its generation benchmark): temperature 1, top_p 0.98, top_k 20.
SAMPLING = {"temperature": 1.0, "top_p": 0.98, "top_k": 20}
#: Weight dtypes a model is measured in: fp32, bf16 (``model.to(torch.bfloat16)``) and int8 (dynamic quantization
#: of every Linear layer).
VARIANTS = ("fp32", "bf16", "int8")


def add_file_arguments(parser: argparse.ArgumentParser, limit: int | None = None) -> None:
    """Add ``--data``, ``--file-list`` and ``--limit`` (default ``limit``), read by :func:`midi_files`."""
    parser.add_argument("--data", nargs="*", default=[], help="MIDI files or folders (searched recursively)")
    parser.add_argument("--file-list", help="text file with one MIDI path per line (relative to the list's folder)")
    parser.add_argument("--limit", type=int, default=limit, help="use only the first N files")


def midi_files(data: list[str], file_list: str | None, limit: int | None) -> list[Path]:
    """The MIDI files of ``data`` (files or folders) and of ``file_list`` (one path a line, ``#`` comments, relative
    paths from the list's folder unless they exist as given), the first ``limit`` of them.

    Raises:
        ValueError: neither ``data`` nor ``file_list`` given.
    """
    names = list(data)
    if file_list:
        base = Path(file_list).parent
        for line in Path(file_list).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line)
                names.append(str(path if path.is_absolute() or path.exists() else base / path))
    if not names:
        raise ValueError("give --data and/or --file-list")
    files = find_midi_files(names)
    return files[:limit] if limit else files


def quantize_int8(model):
    """``quantize_dynamic`` of every Linear layer, in place (the recipe applied to both implementations)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=(DeprecationWarning, FutureWarning, UserWarning))
        return quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def in_variant(model, variant: str):
    """``model`` in the weight dtype ``variant`` (one of ``VARIANTS``)."""
    import torch

    if variant == "bf16":
        return model.to(torch.bfloat16)
    if variant == "int8":
        return quantize_int8(model)
    if variant != "fp32":
        raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    return model


def random_model(config_name: str, variant: str = "fp32"):
    """Our model of the named shape (``MidiEventTransformerConfig.from_name``) with random weights (seed 0), in eval
    mode, in the weight dtype ``variant``."""
    import torch

    from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig
    from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    torch.manual_seed(0)
    model = MidiEventTransformerForCausalLM(MidiEventTransformerConfig.from_name(config_name)).eval()
    return model.quantize_dynamic_int8() if variant == "int8" else in_variant(model, variant)


class EventClock:
    """Streamer recording the time each event is finished (every ``TOKENS_PER_EVENT`` generated tokens)."""

    def __init__(self) -> None:
        self.tokens, self.times, self.prompt_seen = 0, [], False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.tokens += 1
        if self.tokens % TOKENS_PER_EVENT == 0:
            self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(script: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``python script --job SPEC`` in a subprocess (a clean process per measurement): the JSON its last stdout
    line holds, or ``{"error": its last stderr line}``."""
    done = subprocess.run([sys.executable, os.path.abspath(script), "--job", json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    """The "model name" of /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(directory: str) -> dict[str, Any] | None:
    """HEAD of the git checkout holding ``directory`` and whether tracked files differ from it; None if not one."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True, check=True).stdout

    try:
        return {"commit": git("rev-parse", "HEAD").strip(),
                "local_changes": bool(git("status", "--porcelain", "--untracked-files=no").strip())}
    except (OSError, subprocess.CalledProcessError):
        return None


def versions(reference_dir: str | None = None) -> dict[str, Any]:
    """Python, the libraries involved, this checkout's commit, the platform and CPU count; with ``reference_dir``
    (a SkyTNT/midi-model checkout) its path and commit."""
    import accelerate
    import numpy
    import peft
    import torch
    import transformers

    import midi_event_transformer

    found = {"python": platform.python_version(), "torch": torch.__version__,
             "transformers": transformers.__version__, "accelerate": accelerate.__version__,
             "numpy": numpy.__version__, "peft": peft.__version__, "mido": version("mido"),
             "midi_event_transformer": midi_event_transformer.__version__,
             "midi_event_transformer_git": git_commit(os.path.dirname(os.path.abspath(__file__))),
             "platform": platform.platform(), "cpu_count": os.cpu_count()}
    if reference_dir:
        reference = {"path": os.path.abspath(reference_dir)}
        if os.path.exists(os.path.join(reference_dir, ".git")):
            reference["git"] = git_commit(reference_dir)
        found["reference"] = reference
    return found


__all__ = ["SAMPLING", "VARIANTS", "EventClock", "cpu_model", "git_commit", "in_variant", "peak_rss_mb",
           "quantize_int8", "random_model", "run_job", "versions"]
