"""benchmarks/index_bench.py: the planet projection's arithmetic on hand-computed numbers and
a tiny run whose report is consistent with its own figures."""

from __future__ import annotations

import json

import pytest

from benchmarks import index_bench


def test_planet_projection_hand_values():
    pr = index_bench.planet_projection(
        n_vectors=1000,
        bytes_per_vector=100,
        shard_vectors=300,
        nlist=10,
        nprobe=2,
        ns_per_code=1.0,
        ns_per_centroid=2.0,
    )
    assert pr["total_bytes"] == 100_000 and pr["n_shards"] == pr["fan_out"] == 4  # ceil(1000/300)
    assert pr["shard_bytes"] == 30_000
    assert pr["codes_per_query"] == 200  # 2 of 10 cells of 1000 vectors
    assert pr["codes_per_shard"] == 60  # 2 of 10 cells of 300 vectors
    assert pr["cpu_s_per_query"] == pytest.approx(220e-9)  # 10 centroids x 2 ns + 200 x 1 ns
    planet = index_bench.planet_projection(
        n_vectors=1.5e12,
        bytes_per_vector=136,
        shard_vectors=1e9,
        nlist=1 << 20,
        nprobe=64,
        ns_per_code=1.0,
        ns_per_centroid=0.0,
    )
    assert planet["total_bytes"] == 204e12 and planet["n_shards"] == 1500
    assert planet["codes_per_query"] == pytest.approx(64 * 1.5e12 / 2**20)  # 9.16e7


def test_planet_nprobes_scale_the_measured_share():
    rows = [{"nprobe": 8, "recall_at_10": 0.9}, {"nprobe": 32, "recall_at_10": 0.96}]
    assert index_bench.planet_nprobes({"nlist": 512, "rows": rows}) == [2**20 // 16, 256]
    assert index_bench.planet_nprobes({"nlist": 512, "rows": rows[:1]}) == [256]


def test_tiny_run_reports_its_own_figures(tmp_path):
    out = tmp_path / "ib.json"
    argv = ["--n", "3000", "--queries", "20", "--latency-queries", "5", "--nprobes", "64"]
    assert index_bench.run([*argv, "--kinds", "exact,ivf-fp16", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    exact, fp16 = res["kinds"]
    assert exact["rows"][0]["recall_at_10"] == 1.0  # the truth is the exact kind
    assert fp16["nlist"] == 32 and [r["nprobe"] for r in fp16["rows"]] == [32]  # 64 capped
    assert fp16["rows"][0]["recall_at_10"] >= 0.99  # every cell scanned: float16 ~ exact
    assert exact["bytes_per_vector"] == exact["bytes"] / 3000 > 64 * 4  # float32 + ids
    (share, fixed) = res["projections"]
    # Every cell (32 of 32) was scanned to reach 0.95: the planet row scans every cell too.
    assert (share["nprobe"], fixed["nprobe"]) == (2**20, 256)
    assert share["codes_per_query"] == 1.5e12
    assert fixed["total_bytes"] == pytest.approx(1.5e12 * fp16["bytes_per_vector"])
    assert share["cpu_s_per_query"] > fixed["cpu_s_per_query"]
    assert "| ivf-fp16 |" in index_bench.markdown(res)
