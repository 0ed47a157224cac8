"""tests/conftest.py's scheduling: the ONE_WORKER files are one xdist work unit (one after
the other on one worker); every other file is its own unit, as under plain --dist loadfile."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture
def top(pytestconfig):
    """The top-level tests/conftest.py module, as pytest loaded it."""
    path = str(TESTS / "conftest.py")
    plugins = pytestconfig.pluginmanager.get_plugins()
    return next(p for p in plugins if getattr(p, "__file__", None) == path)


class _Config:
    """What xdist's scheduler and the hook read of the config: --dist, and --tx as -n 2 sets."""

    def __init__(self, dist: str):
        self._values = {"dist": dist, "tx": ["2*popen"]}

    def getvalue(self, name: str):
        return self._values[name]


def test_one_worker_files_are_one_work_unit(top):
    sched = top.pytest_xdist_make_scheduler(_Config("loadfile"), None)
    assert sched.numnodes == 2
    units = {sched._split_scope(f"{f}::test_a[x-1]") for f in top.ONE_WORKER}
    assert units == {top.ONE_WORKER[0]}
    assert sched._split_scope("tests/beam_jobs/test_embed.py::test_b") == (
        "tests/beam_jobs/test_embed.py"
    )
    assert sched._split_scope("tests/model/test_export.py::TestX::test_c") == (
        "tests/model/test_export.py"
    )
    # the files exist, and run in HEAVY_FIRST's order inside the unit
    assert all((REPO / f).is_file() for f in top.ONE_WORKER)
    rank = [top.HEAVY_FIRST.index(f) for f in top.ONE_WORKER]
    assert rank == sorted(rank)


def test_other_distributions_keep_xdists_own_scheduler(top):
    assert top.pytest_xdist_make_scheduler(_Config("load"), None) is None
    assert top.pytest_xdist_make_scheduler(_Config("no"), None) is None
