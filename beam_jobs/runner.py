"""Pipeline construction shared by every job: options, the local runner, years and periods,
and the atomic write of a job's small output files (local or object store).

Locally (no --runner, or DirectRunner) pipelines run on the Python FnApiRunner, built the way
the DirectRunner builds it, so `--direct_num_workers` and `--direct_running_mode` apply. The
DirectRunner's own first choice is a runner that downloads a binary at run time, which fails
offline, so it is never left to choose. Any other --runner (DataflowRunner) is used as given.
"""

from __future__ import annotations

import datetime as dt
import logging

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


def pipeline_options(beam_args: list[str] | None, **overrides) -> PipelineOptions:
    """Beam options from leftover command-line args; main-session pickling for local runs."""
    opts = PipelineOptions(beam_args or [], **overrides)
    opts.view_as(SetupOptions).save_main_session = False
    standard = opts.view_as(StandardOptions)
    standard.runner = RUNNER_ALIASES.get(standard.runner, standard.runner)
    return opts


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
    """INFO (DEBUG with --verbose) for the jobs; `QUIET_LOGGERS` at WARNING unless verbose."""
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
