"""Shared pytest fixtures, and what keeps `make test` (pytest -n 2 --dist loadfile) short.

- `shared_artifact(key, build)`: an expensive artifact (a simulated region, an embedded world)
  built once per test run into a folder both xdist workers see (the run's base temporary
  folder), under a file lock, so files of either worker that need the same one reuse it.
  Tests read it; a test that alters one copies it first.
- `shared_simulation(*args)`: `earthembed simulate` with those options, as a shared artifact.
- JAX's persistent compilation cache in that folder (JAX_COMPILATION_CACHE_DIR, so the
  subprocesses a test starts share it too): a model function compiled by one test is loaded
  by the next one that compiles the same shapes, in either worker.
- `fast_compile`: the files that mostly compile training steps and small models
  (`pytestmark = pytest.mark.usefixtures("fast_compile")`) compile without XLA's LLVM
  optimizations.
- The files known to be long run first (`HEAVY_FIRST`), so the two workers finish together
  instead of one running a long file alone at the end.
- The files that compile training steps (`ONE_WORKER`, 4-6 GB each at their peak) run one
  after the other on one worker (one xdist work unit), never side by side.
- EARTHEMBED_TEST_RSS=FILE: each test's peak resident memory and CPU seconds (setup to
  teardown, in its worker's process; the largest child waited for so far, and the children's
  CPU) appended to FILE, to find what drives a worker's memory and time (`sort -n FILE`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The longest test files, longest first (CPU seconds measured alone with -n 0 on 2 shared
# cores, session 16; `make test` prints the slowest tests): handed out first. The chain
# compiles the training step that test_train's resume test then loads from the cache.
HEAVY_FIRST = (
    "tests/e2e/test_chain.py",  # 261 s, building tiny_td (77 s, shared) included
    "tests/beam_jobs/test_build_training_data.py",  # 312 s
    "tests/model/test_train.py",  # two step compiles (tiny_td shared)
    "tests/model/test_train_step.py",  # the 4-device step's compile, eager loss terms
    "tests/beam_jobs/test_embed_reliability.py",  # 72 s
    "tests/beam_jobs/test_embed.py",  # ~60 s, building the embed region (shared) included
    "tests/beam_jobs/io/test_stac_search.py",
    "tests/beam_jobs/test_dask_engine.py",
)


def _shared_root(config: pytest.Config) -> Path:
    """The run's folder shared by its xdist workers (each worker's base temporary folder is
    `<run's>/popen-gwN`); with -n 0, the run's own base temporary folder."""
    base = config._tmp_path_factory.getbasetemp()  # noqa: SLF001  (pytest's own factory)
    root = (base.parent if hasattr(config, "workerinput") else base) / "shared"
    root.mkdir(exist_ok=True)
    return root


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path_factory is configured
def pytest_configure(config: pytest.Config) -> None:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(_shared_root(config) / "jax-cache")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    if "jax" in sys.modules:  # imported before this hook: set it there too
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# The files that compile training steps: 4.0-5.8 GB resident each at their peak (the other
# files 1.7-2.6 GB). Run side by side on the two workers they summed to 10.5 GB; as one
# work unit they run one after the other on one worker, in HEAVY_FIRST's order.
ONE_WORKER = (
    "tests/e2e/test_chain.py",
    "tests/model/test_train.py",
    "tests/model/test_train_step.py",
)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """--dist loadfile with the ONE_WORKER files as one work unit (xdist's own scheduler
    otherwise: a file is a unit, handed out in collection order)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class _OneWorkerFiles(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return ONE_WORKER[0] if scope in ONE_WORKER else scope

    return _OneWorkerFiles(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """The long files first (stable otherwise): --dist loadfile hands out files in this order."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With EARTHEMBED_TEST_RSS set, a row per test: peak RSS (MB, from a high-water mark
    reset before it: /proc/self/clear_refs), RSS after (MB), the largest child so far (MB),
    CPU seconds of the process and of the children it waited for, node id."""
    path = os.environ.get("EARTHEMBED_TEST_RSS")
    if not path:
        yield
        return
    import resource

    def cpu(who):
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    own, kids = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    yield
    big_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    own, kids = cpu(resource.RUSAGE_SELF) - own, cpu(resource.RUSAGE_CHILDREN) - kids
    with open(path, "a") as f:
        f.write(
            f"{_status_kb('VmHWM') // 1024} {_status_kb('VmRSS') // 1024} {big_child} "
            f"{own:.1f} {kids:.1f} {item.nodeid}\n"  # the id last: it may hold spaces
        )


def release_memory() -> None:
    """Drop this process's compiled JAX executables and cached training steps, and give freed
    heap pages back. A later test that needs the same function loads it from the persistent
    compilation cache (the trace, seconds, not the compile)."""
    import gc

    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    if (train := sys.modules.get("model.train")) is not None:
        train._STEP_FNS.clear()  # noqa: SLF001  (the process's reuse of jitted steps)
    gc.collect()
    # Imported here, not looked up in sys.modules: in a file that never imported it the
    # trim was skipped, and glibc kept a freed step compile's ~2.3 GB of pages resident.
    from beam_jobs.inference import trim_heap

    trim_heap()


@pytest.fixture(scope="module", autouse=True)
def _release_memory_after_each_file():
    """After each test file: `release_memory`. An xdist worker lives for the whole run, and
    what one file compiled (a training step is hundreds of MB of kernels, its compile 1.5 GB
    at its peak) otherwise stays resident to the end: the two workers' sum grew to ~11 GB by
    the last files."""
    yield
    release_memory()


@pytest.fixture
def release_memory_after():
    """`release_memory` after the test too: for tests that compile a training step the next
    test does not use, so that it is not resident while the next one compiles its own.
    Yields `release_memory`, for a test that releases midway. (Not for tests that run a
    model eagerly: they share the many small per-operation compiles a release would drop.)"""
    yield release_memory
    release_memory()


@pytest.fixture(scope="module")
def fast_compile():
    """XLA without its LLVM optimizations (`jax_disable_most_optimizations`, and the same
    in the environment for the subprocesses a test starts) for one test file: for the files
    whose time is compiling training steps and small models (a training step compiles in
    ~60% of the CPU, measured on test_train_step's 4-device test: 369 -> 230 s). HLO passes
    (fusion) still run; values agree with the optimized build to float rounding (<= 1.3e-7
    on the shipped encoder), not bit for bit, so such a file compares within itself only.
    The persistent cache keys on the options: the two builds never mix."""
    import jax

    before, env = jax.config.read("jax_disable_most_optimizations"), os.environ.get(_NO_OPT)
    jax.config.update("jax_disable_most_optimizations", True)
    os.environ[_NO_OPT] = "1"
    yield
    jax.config.update("jax_disable_most_optimizations", before)
    if env is None:
        os.environ.pop(_NO_OPT, None)
    else:
        os.environ[_NO_OPT] = env


_NO_OPT = "JAX_DISABLE_MOST_OPTIMIZATIONS"


@pytest.fixture(scope="session")
def shared_artifact(pytestconfig) -> Callable[[str, Callable[[Path], None]], Path]:
    """A function (key, build) -> the folder `build(folder)` filled, once per test run.

    The first caller (of either worker) builds it under an exclusive lock; the others wait
    for it and reuse it. A build that raised leaves no done marker: the next caller retries.
    """
    root = _shared_root(pytestconfig)

    def get(key: str, build: Callable[[Path], None]) -> Path:
        folder = root / key
        with open(root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (folder / ".done").exists():
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir(parents=True)
                    build(folder)
                    (folder / ".done").write_text("ok\n")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return folder

    return get


@pytest.fixture(scope="session")
def shared_simulation(shared_artifact) -> Callable[..., Path]:
    """A function (*simulate options but --out) -> the simulation's folder (catalog.json,
    labels/), simulated once per test run for each distinct set of options."""

    def get(*args: str) -> Path:
        from beam_jobs import simulate

        key = "sim-" + hashlib.sha256(json.dumps(args).encode()).hexdigest()[:16]
        folder = shared_artifact(key, lambda out: simulate.run(["--out", str(out / "sim"), *args]))
        return folder / "sim"

    return get


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


@pytest.fixture(scope="session")
def tiny_td(shared_artifact) -> Path:
    """A simulated 64 x 64 px region -> 16 training examples of 16 x 16 px, 4 frames, by the
    real jobs (simulate, build-training-data); the simulation is `tiny_td.parent / "sim"`.
    Shared by the model tests and the end-to-end chain."""

    def build(root: Path) -> None:
        from beam_jobs import build_training_data, simulate

        sim = root / "sim"
        simulate.run(
            ["--out", str(sim), "--sim-region", "demo", "--years", "2023", "--size-km", "0.64"]
            + ["--seed", "3", "--biome", "tropical", "--cloud-cover", "0.3"]
        )
        rc = build_training_data.run(
            ["--stac", str(sim / "catalog.json"), "--years", "2023", "--num-samples", "16"]
            + ["--patch-size", "16", "--max-frames", "4", "--eval-fraction", "0.25"]
            + ["--seed", "0", "--out", str(root / "td")]
        )
        assert rc == 0

    return shared_artifact("tiny-td", build) / "td"
