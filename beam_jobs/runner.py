"""Pipeline construction shared by every job: options, the local runner, years and periods,
and the atomic write of a job's small output files (local or object store).

Locally (no --runner, or DirectRunner) pipelines run on the Python FnApiRunner, built the way
the DirectRunner builds it, so `--direct_num_workers` and `--direct_running_mode` apply. The
DirectRunner's own first choice is a runner that downloads a binary at run time, which fails
offline, so it is never left to choose. Any other --runner (DataflowRunner) is used as given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import difflib
import importlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from beam_jobs.io import files

LOCAL_RUNNERS = (None, "", "DirectRunner", "FnApiRunner", "SwitchingDirectRunner")
# Runners Beam knows only by their module path, by the short name users type. The Dask runner
# (ours: Beam's with tagged outputs and every branch computed, beam_jobs/dask_engine.py)
# (`--runner DaskRunner --dask_client_address tcp://HOST:8786`) runs a job on a dask.distributed
# cluster: HPC (dask-jobqueue), Kubernetes (dask-kubernetes) or one machine, without Google Cloud.
RUNNER_ALIASES = {"DaskRunner": "beam_jobs.dask_engine.DaskRunner"}

log = logging.getLogger(__name__)


def pipeline_options(beam_args: list[str] | None, **overrides) -> PipelineOptions:
    """Beam options from leftover command-line args; main-session pickling for local runs."""
    opts = PipelineOptions(beam_args or [], **overrides)
    opts.view_as(SetupOptions).save_main_session = False
    standard = opts.view_as(StandardOptions)
    standard.runner = RUNNER_ALIASES.get(standard.runner, standard.runner)
    return opts


# Runners whose options are declared in their own module (a PipelineOptions subclass is known
# to Beam's parser only once imported): --runner name -> module.
_RUNNER_OPTION_MODULES = {"DaskRunner": "apache_beam.runners.dask.dask_runner"}


def _beam_option_parser(beam_args: Sequence[str]) -> argparse.ArgumentParser:
    """The parser Beam builds from every PipelineOptions subclass (the runner's included)."""
    for name, module in _RUNNER_OPTION_MODULES.items():
        if any(name in a for a in beam_args):
            try:
                importlib.import_module(module)
            except ImportError:  # the runner is not installed: Beam says so when it starts
                pass
    captured: list[argparse.ArgumentParser] = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=captured.append)
    return captured[0]


def unknown_args(beam_args: Sequence[str]) -> list[str]:
    """The args that no Beam pipeline option takes (Beam would drop them with a warning)."""
    _, unknown = _beam_option_parser(beam_args).parse_known_args(list(beam_args))
    return unknown


# A list of numbers whose first is negative: `--bbox -60.1,-3.2,-60.0,-3.1`, `--query -60.1,-3.2`.
_NEGATIVE_LIST = re.compile(r"-\d[\d.]*(e-?\d+)?(,\s*-?\d[\d.]*(e-?\d+)?)+")


def join_negative_lists(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """`--opt -60.1,-3.2` -> `--opt=-60.1,-3.2` for an option of `parser` that takes a value.

    argparse reads any argument that starts with '-' and is not a plain number as an option,
    so a box or a point west of Greenwich after a separate option name failed ("expected one
    argument"); the joined form is what argparse reads as that option's value.
    """
    out: list[str] = []
    for arg in argv:
        prev = out[-1] if out else ""
        action = parser._option_string_actions.get(prev)
        if action is not None and action.nargs != 0 and _NEGATIVE_LIST.fullmatch(arg):
            out[-1] = f"{prev}={arg}"
        else:
            out.append(arg)
    return out


def parse_job_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, list[str]]:
    """A job's options and the Beam options left over; an arg that neither takes is an error.

    Beam itself only logs "Discarding unparseable args" and runs, so a mistyped option
    (`--batchsize 2`) would silently run with the default: `parser.error` exits 2 instead,
    naming the arg and the closest known option. A number list starting with '-' after its
    option's name is that option's value (`join_negative_lists`).
    """
    argv = join_negative_lists(parser, sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(argv)
    unknown = unknown_args(rest)
    if unknown:
        known = [o for a in parser._actions for o in a.option_strings]
        known += [o for a in _beam_option_parser(rest)._actions for o in a.option_strings]
        hints = []
        for arg in unknown:
            if arg.startswith("-"):
                close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1)
                if close:
                    hints.append(f"{arg.split('=', 1)[0]}: did you mean {close[0]}?")
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (neither an option of this command "
            "nor a Beam pipeline option)" + ("; " + "; ".join(hints) if hints else "")
        )
    return args, rest


def local_runner(options: PipelineOptions):
    """The Python FnApiRunner with the pipeline options in its provision info."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=info)


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS


def create_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline on the FnApiRunner locally, on the requested runner otherwise."""
    if is_local(options):
        return beam.Pipeline(runner=local_runner(options), options=options)
    return beam.Pipeline(options=options)


def parse_years(text: str) -> list[int]:
    """'2023,2024' or '2022-2024' -> sorted list of years; ValueError naming the option."""
    years: set[int] = set()
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(p) for p in part.split("-"))
                years.update(range(a, b + 1))
            elif part:
                years.add(int(part))
    except ValueError:
        raise ValueError(f"--years must be like 2023,2024 or 2022-2024; got {text!r}") from None
    if not years or any(y < 1980 or y > 2100 for y in years):
        raise ValueError(f"--years out of range 1980-2100 or empty: {text!r}")
    return sorted(years)


def year_bounds_ms(year: int) -> tuple[int, int]:
    """[start, end) of a calendar year in ms since the epoch (UTC)."""
    start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def parse_period(text: str) -> tuple[int, int]:
    """'2023-03-01/2024-03-01' (ISO dates, end exclusive) -> (start_ms, end_ms)."""
    try:
        a, b = text.split("/")
        start = dt.datetime.fromisoformat(a).replace(tzinfo=dt.UTC)
        end = dt.datetime.fromisoformat(b).replace(tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(
            f"--period must be START/END as ISO dates, e.g. 2023-01-01/2024-01-01; got {text!r}"
        ) from None
    if end <= start:
        raise ValueError(f"--period end {b} is not after start {a}")
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


# INFO loggers of the libraries that say nothing to a user of a job (their warnings still
# print): Beam's note per string type hint it reads as Any (50 of an embed log's 59 lines), its
# state cache size, BatchElements' batch sizes, the file sink's renames; JAX's list of the
# backends it did not find; TensorFlow's "Assets written" and optional-package notes (tf.Transform).
QUIET_LOGGERS = (
    "apache_beam.typehints.native_type_compatibility",
    "apache_beam.runners.worker.statecache",
    "apache_beam.transforms.util",
    "apache_beam.io.filebasedsink",
    "jax._src.xla_bridge",
    "tensorflow",
)
# Warnings that are not: tf.Transform's, which says itself that it is safe to ignore, one per
# analyzer and phase (640 lines of a build-training-data log, logger absl); RunInference's claim
# that the `resource` module is missing (it is there: Beam sets it None when an optional import
# beside it fails; logged twice per run on the root logger).
_IGNORABLE_WARNINGS = (
    "node's cache key varies on repeated tracing",
    "Resource module is not available for current platform",
)


def _not_ignorable(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(text in message for text in _IGNORABLE_WARNINGS)


def setup_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with --verbose) for the jobs; `QUIET_LOGGERS` at WARNING unless verbose.

    Beam's PipelineOptions() and view_as() call logging.basicConfig(), so a job that built its
    options before this (to check them) already has a bare root handler, which would make the
    basicConfig below a no-op and hide every INFO line (progress included): that handler, the
    one of exactly basicConfig's kind, is replaced; other handlers (pytest's) are kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.formatter is not None:
            if handler.formatter._fmt == logging.BASIC_FORMAT:
                root.removeHandler(handler)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verbose:
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for logger in (logging.getLogger(), logging.getLogger("absl")):
        if _not_ignorable not in logger.filters:
            logger.addFilter(_not_ignorable)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write a small file (JSON, a marker) locally or to an object store so that readers see
    the old file or the new one, never a part (`beam_jobs.io.files.atomic_target`)."""
    with files.atomic_target(path) as target, FileSystems.create(target) as f:
        f.write(data)


# ---------------------------------------------------------------------------- dead workers

# What the local job service's thread raises when a multi_processing worker exits; the
# FnApiRunner itself then waits forever for the worker's results.
_WORKER_EXITED = "Worker subprocess exited with return code"


def killed_message(what: str, code: int | str, advice: str) -> str:
    """One line saying a process died, why it most likely did and what to do next."""
    code = str(code)
    if code in ("137", "-9", str(-signal.SIGKILL)):
        why = "killed (SIGKILL, exit 137): most likely the out-of-memory killer"
    else:
        why = f"exit code {code}"
    return f"{what} died ({why}); {advice}"


@contextlib.contextmanager
def fail_on_dead_worker(advice: str, on_death: Callable[[], None] | None = None) -> Iterator[None]:
    """While the block runs, a local worker process that dies ends the job with a message
    (`killed_message`) and exit code 137 (or 1), after `on_death` (e.g. releasing a lock),
    instead of the FnApiRunner's endless wait."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        text = str(args.exc_value)
        if not (isinstance(args.exc_value, RuntimeError) and _WORKER_EXITED in text):
            previous(args)
            return
        code = text.rsplit(" ", 1)[-1]
        log.error(killed_message("a Beam worker process", code, advice))
        if on_death is not None:
            on_death()
        logging.shutdown()
        os._exit(137 if code in ("137", "-9") else 1)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
