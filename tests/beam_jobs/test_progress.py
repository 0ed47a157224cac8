"""Progress lines: counts, rates and ETA by hand."""

import logging

from beam_jobs import progress


def test_format_progress_by_hand():
    # 12 of 40 chips in 30 s: 0.4 chips/s; 110592 px / 30 s = 3686.4 px/s; 28 left / 0.4 = 70 s
    line = progress.format_progress(12, 40, "chips", 30.0, pixels=110_592, groups=(1, 3, "tiles"))
    assert line == "12/40 chips (30%), 1/3 tiles; 0.40 chips/s, 3686 px/s; ETA 1m10s"


def test_skipped_units_count_as_done_but_not_in_the_rate():
    # 10 done now in 20 s (0.5/s) + 10 from an earlier run: 20 of 40 left -> 40 s
    line = progress.format_progress(10, 40, "chips", 20.0, skipped=10)
    assert line == "20/40 chips (50%); 0.50 chips/s; ETA 40s"


def test_unknown_and_finished_eta():
    assert progress.format_progress(0, 5, "samples", 3.0).endswith("0.00 samples/s; ETA ?")
    assert (
        progress.format_progress(5, 5, "samples", 2.0)
        == "5/5 samples (100%); 2.50 samples/s; ETA 0s"
    )


def test_format_duration():
    assert progress.format_duration(12.4) == "12s"
    assert progress.format_duration(72) == "1m12s"
    assert progress.format_duration(3725) == "1h02m"
    assert progress.format_duration(float("nan")) == "?"


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_logs_at_most_every_few_seconds_and_at_the_end(caplog):
    clock = _Clock()
    logger = logging.getLogger("test_progress")
    p = progress.Progress(
        "embed", 4, "chips", groups=(2, "tiles"), pixels=True, every_s=5, clock=clock, logger=logger
    )
    with caplog.at_level(logging.INFO, logger="test_progress"):
        clock.t = 102.0
        p.add(1, pixels=100)  # the first line comes at once
        clock.t = 104.0
        p.add(1, pixels=100)  # 2 s later: quiet
        clock.t = 108.0
        p.add(1, pixels=100)  # 6 s after the last line
        clock.t = 109.0
        p.add(1, pixels=100)  # the last chip: always
        p.add_group()  # quiet (1 s after the last line)
        p.add_group()  # the last tile: always
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "embed: 1/4 chips (25%), 0/2 tiles; 0.50 chips/s, 50 px/s; ETA 6s",
        "embed: 3/4 chips (75%), 0/2 tiles; 0.38 chips/s, 38 px/s; ETA 3s",
        "embed: 4/4 chips (100%), 0/2 tiles; 0.44 chips/s, 44 px/s; ETA 0s",
        "embed: 4/4 chips (100%), 2/2 tiles; 0.44 chips/s, 44 px/s; ETA 0s",
    ]


def test_tracker_is_one_per_run_id():
    a = progress.tracker("run-a", "x", 3, "units")
    assert progress.tracker("run-a", "x", 3, "units") is a
    assert progress.tracker("run-b", "x", 3, "units") is not a
