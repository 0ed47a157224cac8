"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """shared/realdata beside the repository (the real samples).

    Absent on a laptop clone without ../shared: the test is skipped. Absent in CI (CI=true),
    where ../shared is always beside the clone: the test fails, so nothing is silently lost.
    """
    path = REPO_ROOT.parent / "shared" / "realdata"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(
                f"real data samples not found at {path} (CI must have ../shared beside the repo)"
            )
        pytest.skip(f"real data samples not found at {path}")
    return path
