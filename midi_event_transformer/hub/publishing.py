"""Publish a saved model or LoRA adapter folder to the Hugging Face Hub in one commit.

What goes up: weights (safetensors), ``config.json`` (with ``auto_map``), ``generation_config.json``, the
tokenizer files, the modeling / configuration / tokenization code that ``auto_map`` names and every module
they import (so ``AutoModel.from_pretrained(repo, trust_remote_code=True)`` works without this package), the
model card ``README.md`` (written with ``model_card.write_model_card`` when missing) and pictures / licence
texts. Pickled weights (``*.bin``, ``*.pt``), hidden files, caches and ``checkpoint-*`` folders stay local.

Example::

    >>> from midi_event_transformer.hub.publishing import push_to_hub
    >>> push_to_hub("out/model", "me/pop909-small", private=True, commit_message="first model")
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

UPLOAD_SUFFIXES = (".json", ".safetensors", ".py", ".md", ".png", ".txt", ".jinja")
SKIPPED_DIRS = ("__pycache__", "runs", "wandb")


class IncompleteModelDirectoryError(ValueError):
    """A folder to publish lacks a file the Hub repository needs (the message names it)."""


def _code_files(directory: Path, auto_map: dict[str, Any]) -> set[str]:
    """The ``.py`` files ``auto_map`` names, with the modules they import relatively, checked to exist."""
    from transformers.dynamic_module_utils import get_relative_import_files

    references = []
    for value in auto_map.values():
        references += value if isinstance(value, (list, tuple)) else [value]
    needed: set[str] = set()
    for reference in references:
        if not reference:
            continue
        if "--" in reference:  # "repo--module.Class": code from another repository
            continue
        module_file = directory / (reference.rsplit(".", 1)[0] + ".py")
        if not module_file.is_file():
            raise IncompleteModelDirectoryError(
                f"{directory}: auto_map names {reference!r} but {module_file.name} is missing")
        needed.add(module_file.name)
        try:
            imports = get_relative_import_files(str(module_file))
        except FileNotFoundError as error:
            raise IncompleteModelDirectoryError(
                f"{directory}: {module_file.name} imports a module that is missing ({error})") from error
        needed.update(Path(path).name for path in imports)
    return needed


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise IncompleteModelDirectoryError(f"{path} is not readable JSON: {error}") from error


def check_model_directory(local_dir: str | os.PathLike, adapter: bool = False) -> list[str]:
    """Check that a folder holds what a Hub repository of this kind needs; return the required file names.

    Model: ``config.json`` with an ``auto_map``, ``model.safetensors`` (or a sharded index and its shards), the
    code ``auto_map`` names and its imports, ``tokenizer_config.json`` (its ``auto_map`` code too). A missing
    ``generation_config.json`` is only logged. Adapter: ``adapter_config.json`` and ``adapter_model.safetensors``.

    Raises:
        IncompleteModelDirectoryError: a required file is missing or unreadable (the message names it).
    """
    directory = Path(local_dir)
    if not directory.is_dir():
        raise IncompleteModelDirectoryError(f"{directory} is not a directory")
    if adapter:
        required = ["adapter_config.json", "adapter_model.safetensors"]
        for name in required:
            if not (directory / name).is_file():
                raise IncompleteModelDirectoryError(f"{directory} is not a saved adapter: {name} is missing")
        _read_json(directory / "adapter_config.json")
        return required

    if not (directory / "config.json").is_file():
        raise IncompleteModelDirectoryError(f"{directory} is not a saved model: config.json is missing")
    config = _read_json(directory / "config.json")
    auto_map = config.get("auto_map") or {}
    if "AutoModel" not in auto_map and "AutoModelForCausalLM" not in auto_map:
        raise IncompleteModelDirectoryError(
            f"{directory}/config.json has no auto_map for AutoModel: save it with save_pretrained from this package")
    required = ["config.json", *sorted(_code_files(directory, auto_map))]
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file():
        required.append("model.safetensors")
    elif index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (directory / shard).is_file()]
        if missing:
            raise IncompleteModelDirectoryError(f"{directory}: weight shards {missing} are missing")
        required += [index.name, *shards]
    else:
        raise IncompleteModelDirectoryError(f"{directory} has no model.safetensors (or sharded index): nothing to "
                                            "publish (pickled .bin weights are not uploaded)")
    tokenizer_config = directory / "tokenizer_config.json"
    if not tokenizer_config.is_file():
        raise IncompleteModelDirectoryError(f"{directory}: tokenizer_config.json is missing (save the tokenizer too)")
    required.append(tokenizer_config.name)
    required += sorted(_code_files(directory, _read_json(tokenizer_config).get("auto_map") or {}) - set(required))
    if not (directory / "generation_config.json").is_file():
        logger.warning("%s has no generation_config.json: the Hub repository will use transformers' defaults",
                       directory)
    return required


def list_upload_files(local_dir: str | os.PathLike, adapter: bool = False) -> list[str]:
    """Paths (relative, POSIX) of the files ``push_to_hub`` uploads from ``local_dir``, sorted.

    Every required file (``check_model_directory``) plus other files with a suffix in ``UPLOAD_SUFFIXES`` or named
    ``LICENSE*`` / ``NOTICE*``, outside hidden, cache and ``checkpoint-*`` folders; other files are logged as
    left out.
    """
    directory = Path(local_dir)
    required = set(check_model_directory(directory, adapter=adapter))
    chosen, left_out = set(required), []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        parts = relative.parts
        if any(part.startswith(".") or part in SKIPPED_DIRS or part.startswith("checkpoint-") for part in parts):
            continue
        if not path.is_file():
            continue
        name = relative.as_posix()
        if path.suffix.lower() in UPLOAD_SUFFIXES or path.name.upper().startswith(("LICENSE", "NOTICE")):
            chosen.add(name)
        elif name not in chosen:
            left_out.append(name)
    if left_out:
        logger.warning("not uploading %d file(s) from %s: %s", len(left_out), directory, ", ".join(left_out))
    return sorted(chosen)


def push_to_hub(
    local_dir: str | os.PathLike,
    repo_id: str,
    *,
    adapter: bool = False,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    card_fields: dict[str, Any] | None = None,
    api: Any = None,
) -> Any:
    """Create (if needed) the Hub repository ``repo_id`` and upload a saved model or adapter folder in one commit.

    Args:
        local_dir: the folder written by ``save_pretrained`` (model + tokenizer) or by peft (adapter).
        repo_id: ``"owner/name"``.
        adapter: the folder is a LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``).
        private: visibility when the repository is created (None: the account's default). An existing
            repository keeps its visibility.
        revision: branch to commit to (created from the default branch if missing); None: the default branch.
        commit_message: default ``"Upload model"`` / ``"Upload adapter"``.
        commit_description, create_pr: as ``HfApi.create_commit``.
        token: Hub token (default: the logged-in one).
        card_fields: when given, ``README.md`` is (re)written first with ``write_model_card(local_dir,
            adapter=adapter, repo_id=repo_id, **card_fields)`` (this replaces e.g. the generic card peft writes);
            when None, it is written that way only if missing.
        api: an ``HfApi``-like object (``create_repo``, ``create_branch``, ``create_commit``); tests pass a recorder.

    Returns:
        What ``api.create_commit`` returns (a ``huggingface_hub.CommitInfo``).

    Raises:
        IncompleteModelDirectoryError: the folder lacks a required file.
        ValueError: ``repo_id`` is not ``"owner/name"``-shaped.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/") or " " in repo_id:
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    directory = Path(local_dir)
    check_model_directory(directory, adapter=adapter)
    if card_fields is not None or not (directory / "README.md").is_file():
        from .cards import write_model_card

        logger.info("writing a model card to %s/README.md", directory)
        write_model_card(directory, adapter=adapter, **{"repo_id": repo_id, **(card_fields or {})})
    files = list_upload_files(directory, adapter=adapter)

    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True, token=token)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True, token=token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(directory / name)) for name in files]
    logger.info("uploading %d files from %s to %s", len(operations), directory, repo_id)
    return api.create_commit(
        repo_id, operations=operations, repo_type="model", revision=revision,
        commit_message=commit_message or ("Upload adapter" if adapter else "Upload model"),
        commit_description=commit_description, create_pr=create_pr, token=token)


__all__ = ["IncompleteModelDirectoryError", "check_model_directory", "list_upload_files", "push_to_hub"]
