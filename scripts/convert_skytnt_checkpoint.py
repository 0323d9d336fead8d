#!/usr/bin/env python
"""Convert a SkyTNT/midi-model checkpoint (or LoRA adapter) directory into the midi-event-transformer format.

    python scripts/convert_skytnt_checkpoint.py path/to/midi-model-tv2o-medium out/tv2o-medium
    python scripts/convert_skytnt_checkpoint.py --lora path/to/reference_lora out/lora
"""

from __future__ import annotations

import argparse
import sys

from midi_event_transformer.hub.conversion import convert_skytnt_checkpoint, convert_skytnt_lora


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="reference directory (config.json + model.safetensors, or a LoRA adapter)")
    parser.add_argument("dst", help="output directory")
    parser.add_argument("--lora", action="store_true", help="convert a LoRA adapter for peft.PeftModel")
    parser.add_argument("--source-repo-id", default=None,
                        help="Hub id the checkpoint came from, named in the model card (e.g. skytnt/midi-model-tv2o-medium)")
    args = parser.parse_args(argv)
    try:
        if args.lora:
            out = convert_skytnt_lora(args.src, args.dst)
        else:
            out = convert_skytnt_checkpoint(args.src, args.dst, source_repo_id=args.source_repo_id)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
