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


SHIPPED_BUNDLE_FILES = ("bundle.json", "config.json", "params.msgpack", "stats.json")


@pytest.fixture(scope="session")
def shipped_bundle() -> Path:
    """The shipped tiny bundle model/weights/tiny (EARTHEMBED_TINY_BUNDLE points elsewhere).

    It is part of the repository, so a missing file fails the test (never a skip): the tests
    that need it would otherwise pass silently without ever running the real model.
    """
    path = Path(os.environ.get("EARTHEMBED_TINY_BUNDLE", REPO_ROOT / "model" / "weights" / "tiny"))
    for name in SHIPPED_BUNDLE_FILES:
        if not (path / name).is_file():
            pytest.fail(
                f"shipped model bundle incomplete: {path / name} is missing "
                "(model/weights/tiny is part of the repository; `make pretrain` rebuilds it)",
                pytrace=False,
            )
    return path
