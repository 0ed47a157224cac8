"""The speed harness: warm-up, median of runs, items per second."""

import itertools

import pytest

from benchmarks import speed


def test_time_callable_warms_up_then_takes_the_median():
    calls = []
    # A fake clock: each timed call reads it twice; durations 3, 1, 2 -> median 2.
    ticks = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])
    t = speed.time_callable(
        lambda x, y=0: calls.append((x, y)),
        5,
        y=1,
        items=100,
        unit="pixels",
        warmup=2,
        runs=3,
        name="toy",
        clock=lambda: next(ticks),
    )
    assert calls == [(5, 1)] * 5  # 2 warm-up + 3 timed, same fixed inputs
    assert (t.median_s, t.min_s, t.max_s, t.runs) == (2.0, 1.0, 3.0, 3)
    assert t.items_per_s == 50.0
    assert t.to_dict()["items_per_s"] == 50.0 and t.to_dict()["name"] == "toy"


def test_time_callable_validates():
    with pytest.raises(ValueError, match="runs"):
        speed.time_callable(lambda: None, items=1, runs=0)


def test_time_callable_real_clock_and_markdown():
    counter = itertools.count()
    t = speed.time_callable(lambda: next(counter), items=10, warmup=1, runs=3)
    assert next(counter) == 4 and t.median_s >= 0 and t.name == "<lambda>"
    md = speed.timings_markdown([speed.Timing("a", 4096, "pixels", 5, 2.0, 1.0, 3.0)])
    assert "| a | 4096 pixels | 2.0000 | 1.0000 | 3.0000 | 2,048 |" in md


def test_synthetic_inputs():
    obs = speed.synthetic_window_observations(8)
    assert obs.spatial_shape == (8, 8)
    assert obs["sentinel2_l2a"].num_frames == 73 and obs["cop_dem"].num_frames == 1
