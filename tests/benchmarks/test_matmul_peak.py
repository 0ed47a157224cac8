"""benchmarks/matmul_peak.py: the rates arithmetic on hand-computed numbers."""

import pytest

from benchmarks import matmul_peak


def test_rates_hand_computed():
    # 2 chips of 128 x 128 core px = 32,768 px; 2.5e11 FLOPs in 20 s on a 50 GFLOP/s peak:
    # 12.5 GFLOP/s = 0.25 of the peak, 7.6294 MFLOP/px, 1,638.4 px/s; at the peak
    # 50e9 / 7.6294e6 = 6,553.6 px/s; 5,000 px/s needs 5,000 x 7.6294e6 = 38.147 GFLOP/s,
    # 0.76294 of the peak.
    r = matmul_peak.rates(2.5e11, 20.0, 50.0, 32_768, 5000.0)
    assert r["gflops"] == pytest.approx(12.5)
    assert r["fraction_of_peak"] == pytest.approx(0.25)
    assert r["mflop_per_px"] == pytest.approx(7.62939453125)
    assert r["px_per_s"] == pytest.approx(1638.4)
    assert r["px_per_s_at_peak"] == pytest.approx(6553.6)
    assert r["target_gflops"] == pytest.approx(38.14697265625)
    assert r["target_fraction_of_peak"] == pytest.approx(0.762939453125)


def test_matmul_peak_is_the_best_size():
    out = matmul_peak.matmul_peak((8, 16), repeats=2)
    assert set(out["gflops_per_size"]) == {"8", "16"}
    assert out["peak_gflops"] == max(out["gflops_per_size"].values()) > 0
