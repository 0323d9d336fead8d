"""Shared test fixtures: the read-only corpus and reference outputs in ``../shared``."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repo; tests that need it skip with a reason when it is absent."""
    if not (SHARED_DIR / "midi").is_dir():
        pytest.skip(f"shared corpus not found at {SHARED_DIR} (clone the repo beside ../shared)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def pop909_files(shared_dir: Path) -> list[Path]:
    return sorted((shared_dir / "midi" / "pop909").glob("*.mid"))


@pytest.fixture(scope="session")
def bach_files(shared_dir: Path) -> list[Path]:
    return sorted((shared_dir / "midi" / "bach").glob("*.mid"))
