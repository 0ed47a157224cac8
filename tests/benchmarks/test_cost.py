"""benchmarks/cost.py: the cost arithmetic against numbers worked out by hand."""

import argparse
import json

import pytest

from benchmarks import cost, run_all


def test_areas_in_pixels():
    # 1,000 km2 = 1e9 m2; a 10 m pixel is 100 m2.
    assert cost.PX_PER_1000_KM2 == 1e7
    assert cost.GLOBAL_LAND_YEAR_PX == 1.5e12


def test_n1_standard_4_hourly_price():
    # 4 x 0.056 + 15 x 0.003557 + 25 x 0.000054 = 0.224 + 0.053355 + 0.00135
    assert cost.N1_STANDARD_4.usd_per_hour == pytest.approx(0.278705, abs=1e-9)


def test_rate_scales_with_vcpus_and_hours_and_dollars_follow():
    # 1,000 px/s measured on 2 vCPUs -> 2,000 px/s on a 4-vCPU worker.
    row = cost.dataflow_row("ours", 1000.0, 2)
    assert row.px_per_s == 2000.0
    # 1e7 px / 2,000 px/s = 5,000 s = 1.38889 h; x $0.278705 = $0.387090.
    assert row.hours(1e7) == pytest.approx(5000 / 3600)
    assert row.usd(1e7) == pytest.approx(0.38709027, rel=1e-7)
    # 1.5e12 px / 2,000 px/s = 7.5e8 s = 208,333.3 h; x $0.278705 = $58,063.54.
    assert row.hours(1.5e12) == pytest.approx(208333.333, rel=1e-6)
    assert row.usd(1.5e12) == pytest.approx(58063.54, rel=1e-6)


def test_anchor_rates_in_hours():
    cpu, l4 = cost.anchor_rows()
    # 1e7 / 500 / 3600 = 5.556 h; 1e7 / 2,800 / 3600 = 0.992 h; the L4 is not priced.
    assert cpu.hours(1e7) == pytest.approx(5.5556, abs=1e-4)
    assert l4.hours(1e7) == pytest.approx(0.99206, abs=1e-5)
    assert l4.usd(1e7) is None
    assert cpu.usd(1e7) == pytest.approx(5.5556 * 0.278705, rel=1e-4)


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="positive"):
        cost.worker_px_per_s(0.0, 2, cost.N1_STANDARD_4)
    with pytest.raises(ValueError, match="positive"):
        cost.worker_hours(1e7, -1.0)


def test_table_prints_the_figures_and_the_placeholders():
    md = cost.markdown(1000.0, 2, what="toy", command="python -m benchmarks.cost --px-per-s 1000")
    assert "Command: `python -m benchmarks.cost --px-per-s 1000`" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| ours, Dataflow"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:7] == ["2,000", "0.2787", "1.39", "0.39", "208,333", "58,064"]
    assert "| ours, GPU | — |" in md and "not measured (no GPU in this session)" in md
    # Presto: $5-10 per 1,000 km2 -> x 1.5e5 for the globe = $750,000-1,500,000.
    assert "| 5-10 |" in md and "750,000-1,500,000" in md


def test_embed_speed_json_is_read_and_run_all_renders_the_section(tmp_path):
    doc = {
        "end_to_end": {"px_per_s": 945.0},
        "machine": "2 cores, AMD EPYC, Linux x86_64, Python 3.11.7",
        "model": "tiny-e554d1efcdb0",
        "compute_dtype": "float32",
        "date": "2026-12-06",
        "max_rss_gb": 12.4,
    }
    rate, vcpus, what = cost.from_embed_speed(doc)
    assert (rate, vcpus) == (945.0, 2)
    # 15 GB / 4 processes = 3.75 GB each: 12.4 GB does not fit.
    assert "12.4 GB per process does NOT fit the 3.75 GB" in what
    assert "fits the 3.75 GB" in cost.memory_note(2.5)
    # the embed job's own sampled peak, when the JSON has it, not the benchmark process's
    job = {**doc, "end_to_end": {"px_per_s": 945.0, "peak_rss_gb": 2.42}}
    assert "2.4 GB per process fits the 3.75 GB" in cost.from_embed_speed(job)[2]
    work = tmp_path / "embed_speed"
    work.mkdir()
    (work / "embed_speed.json").write_text(json.dumps(doc))
    opts = argparse.Namespace(embed_work=str(work), out_root=str(tmp_path))
    md = run_all.BENCHMARKS["cost"].run(opts)
    assert md.startswith("## Cost per area")
    # 945 px/s on 2 vCPUs -> 1,890 px/s per n1-standard-4; 1e7 / 1890 / 3600 = 1.47 h.
    assert "| 1,890 | 0.2787 | 1.47 |" in md
    with pytest.raises(FileNotFoundError, match="embed,cost"):
        empty = argparse.Namespace(embed_work=None, out_root=str(tmp_path / "none"))
        run_all.BENCHMARKS["cost"].run(empty)
