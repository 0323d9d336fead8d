#!/usr/bin/env python
"""Publish a saved model or LoRA adapter folder to the Hugging Face Hub (one commit).

    python scripts/push_to_hub.py out/model --repo-id me/pop909-small --private
    python scripts/push_to_hub.py out/lora --adapter --repo-id me/pop909-lora --revision dev
    python scripts/push_to_hub.py out/model --repo-id me/pop909-small --dry-run   # list the files only

Log in first (``hf auth login``) or pass ``--token``. A missing README.md is written from the model card
template (``midi_event_transformer.hub.cards``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from midi_event_transformer.hub.publishing import (
    IncompleteModelDirectoryError,
    list_upload_files,
    push_to_hub,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("local_dir", help="folder written by save_pretrained (model + tokenizer) or by peft")
    parser.add_argument("--repo-id", required=True, help="Hub repository, owner/name")
    parser.add_argument("--adapter", action="store_true", help="the folder is a LoRA adapter")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--dry-run", action="store_true", help="print the files that would be uploaded and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.dry_run:
            print(json.dumps(list_upload_files(args.local_dir, adapter=args.adapter), indent=2))
            return 0
        info = push_to_hub(args.local_dir, args.repo_id, adapter=args.adapter, private=args.private or None,
                           revision=args.revision, commit_message=args.commit_message, create_pr=args.create_pr,
                           token=args.token)
    except (IncompleteModelDirectoryError, ValueError) as error:
        print(f"push_to_hub: error: {error}", file=sys.stderr)
        return 2
    print(getattr(info, "commit_url", info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
