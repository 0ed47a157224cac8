"""`earthembed <command> ...`: dispatch to each command's `run(argv)`.

Nothing is imported before a command is chosen, and `earthembed <command> --help` imports only
the command's parser (beam_jobs/flags.py for the Beam jobs), not the job: Beam, TensorFlow and
JAX take seconds to import, help takes none of them.

Run as a program (`earthembed ...`, `python -m beam_jobs.cli ...`), a command runs in a child
process watched by this small one: when the kernel kills the job (SIGKILL, exit 137: most
often the out-of-memory killer, which leaves no trace in the job's own log), the watcher says
so and how to resume, and exits 137. Before that, on glibc, the program re-executes itself once
with glibc's malloc tunable for transparent huge pages (`malloc_environ`, below).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # has `run(argv=None)`
    parser: str  # "module:function" returning the command's argparse parser
    summary: str
    resume: str = "rerun the same command"  # what to do after the job was killed


_RESUME_TILES = (
    "its completed tiles are kept: rerun the same command to resume, with a lower --batch-size "
    "(or --prefetch 0, --read-block 1, or fewer --direct_num_workers)"
)


JOBS: dict[str, Command] = {
    "simulate": Command(
        "beam_jobs.simulate",
        "beam_jobs.flags:simulate_parser",
        "simulate a multi-sensor region as a STAC catalog of COGs",
    ),
    "build-training-data": Command(
        "beam_jobs.build_training_data",
        "beam_jobs.flags:build_training_data_parser",
        "STAC catalog or point table -> sharded TFRecords + tf.Transform stats",
    ),
    "inspect-tfrecords": Command(
        "beam_jobs.inspect_tfrecords",
        "beam_jobs.flags:inspect_tfrecords_parser",
        "counts, ranges and a PNG strip of TFRecords",
    ),
    "evaluate": Command(
        "evaluation.evaluate",
        "evaluation.evaluate:build_parser",
        "few-shot probes: embeddings vs designed-feature baselines",
    ),
    "train": Command("model.main", "model.main:build_parser", "train the Flax embedding model"),
    "export": Command(
        "model.export", "model.export:build_parser", "export a trained workdir as a model bundle"
    ),
    "embed": Command(
        "beam_jobs.embed",
        "beam_jobs.flags:embed_parser",
        "AOI + year -> int8 COG + GeoParquet + STAC embedding tiles",
        _RESUME_TILES,
    ),
    "embed-points": Command(
        "beam_jobs.embed_points",
        "beam_jobs.flags:embed_points_parser",
        "point observation table -> GeoParquet embeddings",
        "rerun the same command with a lower --batch-size",
    ),
    "index": Command("beam_jobs.index", "beam_jobs.flags:index_parser", "tiles -> ANN index"),
    "search": Command("beam_jobs.search", "beam_jobs.flags:search_parser", "ANN index top-k"),
    "sample": Command(
        "beam_jobs.sample",
        "beam_jobs.flags:sample_parser",
        "embeddings at points (GeoParquet or CSV) -> GeoParquet",
    ),
    "similarity": Command(
        "beam_jobs.similarity",
        "beam_jobs.flags:similarity_parser",
        "query points -> similarity COG per tile, top-k GeoParquet, PNG",
    ),
    "change": Command(
        "beam_jobs.change",
        "beam_jobs.flags:change_parser",
        "two periods -> dot-product COG, change mask and polygons, PNG",
    ),
    "cluster": Command(
        "beam_jobs.cluster",
        "beam_jobs.flags:cluster_parser",
        "k-means on a uniform pixel sample -> class COG per tile, PNG",
    ),
    "classify": Command(
        "beam_jobs.classify",
        "beam_jobs.flags:classify_parser",
        "labelled points -> class or value COG per tile, report.json, PNG",
    ),
    "quicklook": Command(
        "beam_jobs.quicklook",
        "beam_jobs.flags:quicklook_parser",
        "three bands or PCA -> RGB PNG and RGB COG",
    ),
    "cloud": Command(
        "beam_jobs.cloud",
        "beam_jobs.flags:cloud_parser",
        "build and run the Dataflow flex templates (gcloud)",
    ),
}


# glibc's malloc gives every array above its mmap threshold (1 MiB in the jobs:
# inference.bound_heap) fresh pages from the kernel and returns them when it is freed, so
# each model batch faults its activations in 4 KiB at a time: 22 M page faults and 73 of
# 199 CPU-s in the kernel for the demo region's embed. With this tunable (glibc >= 2.35)
# malloc asks for transparent huge pages (madvise) for those mappings: 2 MiB faults, the same
# bytes out (benchmarks/RESULTS.md, embed). Read by the dynamic loader at start-up only, hence
# the re-execution. Unknown to older glibc (ignored); a user's own setting of it is kept
# (`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns it off).
MALLOC_TUNABLE = ("glibc.malloc.hugetlb", "1")


def malloc_environ(environ: dict[str, str]) -> dict[str, str] | None:
    """`environ` with MALLOC_TUNABLE added to GLIBC_TUNABLES, or None when it is there already
    (set by us or by the user, to any value) or this is not Linux on glibc >= 2.35."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        if libc != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
            return None
    except (ValueError, OSError, AttributeError):
        return None
    name, value = MALLOC_TUNABLE
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(t.split("=")[0] == name for t in tunables.split(":")):
        return None
    return {
        **environ,
        "GLIBC_TUNABLES": f"{tunables}:{name}={value}" if tunables else f"{name}={value}",
    }


def reexec_with_malloc_tunables() -> None:
    """Replace this process by the same command line (`sys.orig_argv`) with malloc_environ's
    environment; returns without doing anything when there is nothing to add (so the
    re-executed process goes on) or the interpreter's path is unknown."""
    env = malloc_environ(dict(os.environ))
    if env is None or not sys.executable or not getattr(sys, "orig_argv", None):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _usage() -> str:
    lines = ["usage: earthembed <command> [options]", "", "commands:"]
    for name, command in JOBS.items():
        lines.append(f"  {name:<22}{command.summary}")
    lines.append("")
    lines.append("`earthembed <command> --help` lists a command's options and their defaults.")
    return "\n".join(lines)


def _import(cmd: str, module_name: str):
    """The module, or None (with a message) when this build lacks it."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(
                f"earthembed: command {cmd!r} is not available in this build ({module_name} missing)",
                file=sys.stderr,
            )
            return None
        raise


def killed_message(cmd: str, sig: int, resume: str) -> str:
    """What the watcher prints when the job's process was killed by a signal."""
    if sig == signal.SIGKILL:
        why = (
            "killed by SIGKILL (exit 137), most likely by the kernel's out-of-memory killer: "
            "it needed more memory than the machine had free"
        )
    else:
        why = f"killed by signal {sig} ({signal.Signals(sig).name})"
    return f"earthembed {cmd}: the job was {why}; {resume}"


def _supervise(cmd: str, command: Command, job: Callable[[], int]) -> int:
    """Run `job` in a forked child and wait; a child killed by a signal is reported."""
    if not hasattr(os, "fork") or os.environ.get("EARTHEMBED_NO_WATCHER"):
        return job()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child runs the job and exits the normal way
        os.environ["EARTHEMBED_NO_WATCHER"] = "1"
        return job()
    # The terminal sends Ctrl-C to both; the child handles it. Forward a kill of this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda sig, frame: os.kill(pid, sig))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        print(killed_message(cmd, sig, command.resume), file=sys.stderr)
        return 128 + sig
    return os.WEXITSTATUS(status)


def main(argv: list[str] | None = None) -> int:
    """`earthembed ARGS`; run as a program (argv None) the job is watched (module doc)."""
    watch = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in JOBS:
        print(f"earthembed: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    command = JOBS[cmd]
    if "-h" in rest or "--help" in rest:
        module_name, func = command.parser.split(":")
        module = _import(cmd, module_name)
        if module is None:
            return 2
        getattr(module, func)().print_help()
        return 0
    # TensorFlow's C++ start-up INFO lines (CPU features, no CUDA) say nothing to a user;
    # its warnings and errors still print.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if watch:
        reexec_with_malloc_tunables()

    def job() -> int:
        module = _import(cmd, command.module)
        if module is None:
            return 2
        try:
            result = module.run(rest)
        except MemoryError:
            print(f"earthembed {cmd}: the job ran out of memory; {command.resume}", file=sys.stderr)
            return 1
        return int(result) if isinstance(result, int) else 0

    return _supervise(cmd, command, job) if watch else job()


if __name__ == "__main__":
    sys.exit(main())
