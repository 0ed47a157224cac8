"""Pipeline construction: local runs on the FnApiRunner, option parsing."""

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import runner


def test_local_pipeline_runs_on_fnapi_runner():
    opts = runner.pipeline_options([])
    p = runner.create_pipeline(opts)
    assert isinstance(p.runner, fn_runner.FnApiRunner)
    with p:
        out = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * x) | beam.CombineGlobally(sum)
        assert_that(out, equal_to([14]))


def test_direct_runner_name_and_multiprocessing_options_stay_local():
    opts = runner.pipeline_options(
        [
            "--runner",
            "DirectRunner",
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
        ]
    )
    assert runner.is_local(opts)
    assert isinstance(runner.create_pipeline(opts).runner, fn_runner.FnApiRunner)
    assert not runner.is_local(runner.pipeline_options(["--runner", "DataflowRunner"]))


def test_parse_years():
    assert runner.parse_years("2023,2024") == [2023, 2024]
    assert runner.parse_years("2024, 2022-2023") == [2022, 2023, 2024]
    for bad in ("", "20x3", "1800"):
        with pytest.raises(ValueError, match="--years"):
            runner.parse_years(bad)


def test_year_and_period_bounds():
    assert runner.year_bounds_ms(1970) == (0, 365 * 86_400_000)
    assert runner.parse_period("1970-01-02/1970-01-03") == (86_400_000, 2 * 86_400_000)
    with pytest.raises(ValueError, match="not after"):
        runner.parse_period("2024-01-02/2024-01-01")
    with pytest.raises(ValueError, match="--period"):
        runner.parse_period("2024")


def test_write_bytes_atomic_creates_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "manifest.json"
    runner.write_bytes_atomic(str(path), b'{"a": 1}')
    runner.write_bytes_atomic(str(path), b'{"a": 2}')
    assert path.read_bytes() == b'{"a": 2}'
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]


def test_setup_logging_quiets_library_info_and_ignorable_warnings():
    import logging

    loggers = [logging.getLogger(n) for n in runner.QUIET_LOGGERS]
    saved = [(lg, lg.level, list(lg.filters)) for lg in loggers]
    saved += [
        (lg, lg.level, list(lg.filters)) for lg in (logging.getLogger(), logging.getLogger("absl"))
    ]
    try:
        runner.setup_logging(verbose=False)
        typehints = logging.getLogger("apache_beam.typehints.native_type_compatibility")
        assert not typehints.isEnabledFor(logging.INFO)
        assert typehints.isEnabledFor(logging.WARNING)  # real warnings still print
        absl = logging.getLogger("absl")

        def record(msg):
            return logging.LogRecord("absl", logging.WARNING, __file__, 1, msg, None, None)

        assert not absl.filter(record("Analyzer (x) node's cache key varies on repeated tracing."))
        assert absl.filter(record("something real"))
    finally:
        for lg, level, filters in saved:
            lg.setLevel(level)
            lg.filters[:] = filters


def test_negative_number_lists_after_an_option_name_are_its_value():
    """A box or point west of Greenwich after a separate option name (argparse alone reads
    '-60.1,...' as an option: "expected one argument")."""
    from beam_jobs import flags

    box = "-51.949189,-3.433122,-51.926167,-3.409987"
    argv = ["--out", "o", "--bbox", box, "--seed", "-3", "--years", "2021"]
    args, rest = runner.parse_job_args(flags.simulate_parser(), argv)
    assert (args.bbox, args.seed, args.years, rest) == (box, -3, "2021", [])
    with pytest.raises(SystemExit):  # what the join is for
        flags.simulate_parser().parse_args(["--out", "o", "--bbox", box])
    # only after an option that takes a value, and only number lists
    p = flags.simulate_parser()
    assert runner.join_negative_lists(p, ["--verbose", "-1,2"]) == ["--verbose", "-1,2"]
    assert runner.join_negative_lists(p, ["--bbox", "-x,2"]) == ["--bbox", "-x,2"]
    assert runner.join_negative_lists(p, ["--bbox", "-1.5e-3,2,3,4"]) == ["--bbox=-1.5e-3,2,3,4"]
    assert runner.join_negative_lists(p, ["--bbox=-1,2,3,4"]) == ["--bbox=-1,2,3,4"]
