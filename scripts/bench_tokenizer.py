"""Benchmark MidiEventTransformerTokenizer.encode_midi on a folder of MIDI files (POP909 by default).

Prints one JSON object: files/s, events/s, workers, and the versions involved.

    python scripts/bench_tokenizer.py                      # ../shared/midi/pop909, 1 process
    python scripts/bench_tokenizer.py --workers 2
    python scripts/bench_tokenizer.py --profile 15         # cProfile top 15 functions on stderr (1 process)
    python scripts/bench_tokenizer.py --decode             # also time decode_midi
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when this file is loaded from elsewhere
from bench_common import versions  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _encode_files(paths: list[str]) -> tuple[int, int]:
    """(files, events) encoded by one process."""
    from midi_event_transformer import MidiEventTransformerTokenizer

    tokenizer = MidiEventTransformerTokenizer()
    events = 0
    for path in paths:
        events += len(tokenizer.encode_midi(path)) - 2
    return len(paths), events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(REPO_ROOT.parent / "shared" / "midi" / "pop909"))
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N files")
    parser.add_argument("--repeat", type=int, default=1, help="encode the files this many times")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile one process and print the N most expensive functions on stderr")
    parser.add_argument("--decode", action="store_true", help="also measure decode_midi (1 process)")
    args = parser.parse_args(argv)

    files = sorted(str(p) for p in Path(args.folder).glob("*.mid"))[:args.limit]
    if not files:
        parser.error(f"no .mid files in {args.folder}")
    files = files * args.repeat
    _encode_files(files[:2])  # warm imports

    result: dict = {"folder": args.folder, "workers": args.workers}
    if args.profile:
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        n_files, n_events = _encode_files(files)
        profiler.disable()
        seconds = time.perf_counter() - start
        stats_text = io.StringIO()
        pstats.Stats(profiler, stream=stats_text).sort_stats("tottime").print_stats(args.profile)
        print(stats_text.getvalue(), file=sys.stderr)
        result["profiled"] = True
    else:
        start = time.perf_counter()
        if args.workers == 1:
            n_files, n_events = _encode_files(files)
        else:
            chunks = [files[i::args.workers] for i in range(args.workers)]
            with ProcessPoolExecutor(args.workers) as pool:
                counts = list(pool.map(_encode_files, chunks))
            n_files, n_events = sum(c[0] for c in counts), sum(c[1] for c in counts)
        seconds = time.perf_counter() - start
    result.update(files=n_files, events=n_events, seconds=round(seconds, 3),
                  files_per_s=round(n_files / seconds, 1), events_per_s=round(n_events / seconds),
                  reference_files_per_s=37, reference_events_per_s=73000)

    if args.decode:
        from midi_event_transformer import MidiEventTransformerTokenizer

        tokenizer = MidiEventTransformerTokenizer()
        encoded = [tokenizer.encode_midi(p) for p in files[:100]]
        start = time.perf_counter()
        for ids in encoded:
            tokenizer.decode_midi(ids)
        decode_seconds = time.perf_counter() - start
        result["decode_events_per_s"] = round(sum(len(e) for e in encoded) / decode_seconds)

    result["cpu_count"] = os.cpu_count()
    result["versions"] = versions()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
