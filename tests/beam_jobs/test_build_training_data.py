"""build-training-data: sampling, periods, moments, and DirectRunner builds.

Pipeline runs are shared per fixture (TF + TFT start slowly): one on a point table made from
the real WorldCereal sample, and two on a tiny simulated region (in-process; two processes
with monthly composites over a catalog with one corrupt COG).
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from beam_jobs import build_training_data as btd
from beam_jobs import runner, simulate
from beam_jobs.inspect_tfrecords import iter_records
from model import input_pipeline
from schemas import composite, examples, sensors
from schemas.grid import GridWindow

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _ms(y: int, m: int, d: int = 1) -> int:
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp() * 1000)


# ------------------------------------------------------------------------------- pure


def _map() -> np.ndarray:
    """60 x 80 map: class 1 most of it, class 2 a strip, class 3 a small block, -1 a corner."""
    lc = np.ones((60, 80), np.int16)
    lc[:, 50:65] = 2
    lc[40:48, 10:18] = 3
    lc[:10, :10] = -1
    return lc


def test_stratified_positions_balanced_and_reproducible():
    lc = _map()
    a = btd.stratified_positions(lc, num_samples=30, patch_size=8, rng=np.random.default_rng(1))
    b = btd.stratified_positions(lc, num_samples=30, patch_size=8, rng=np.random.default_rng(1))
    c = btd.stratified_positions(lc, num_samples=30, patch_size=8, rng=np.random.default_rng(2))
    assert a == b and a != c
    classes = [k for _, _, k in a]
    assert {k: classes.count(k) for k in set(classes)} == {1: 10, 2: 10, 3: 10}
    for r, col, k in a:
        assert 0 <= r <= 60 - 8 and 0 <= col <= 80 - 8
        assert lc[r + 4, col + 4] == k  # the class is the patch-centre pixel's
    # 31 samples over 3 classes: 11/10/10 in some order.
    d = btd.stratified_positions(lc, num_samples=31, patch_size=8, rng=np.random.default_rng(0))
    counts = sorted(np.unique([k for _, _, k in d], return_counts=True)[1].tolist())
    assert counts == [10, 10, 11]


def test_uniform_positions_and_too_small_region():
    pos = btd.uniform_positions(20, 30, num_samples=50, patch_size=16, rng=np.random.default_rng(0))
    assert all(0 <= r <= 4 and 0 <= c <= 14 for r, c in pos)
    assert len(set(pos)) > 10
    with pytest.raises(ValueError, match="smaller than --patch-size"):
        btd.uniform_positions(8, 30, num_samples=1, patch_size=16, rng=np.random.default_rng(0))


def test_draw_valid_period_full_and_month_runs():
    support = runner.year_bounds_ms(2023)
    starts = {a for a, _ in composite.month_bounds_ms(*support)}
    ends = {b for _, b in composite.month_bounds_ms(*support)}
    rng = np.random.default_rng(0)
    periods = [btd.draw_valid_period(support, rng) for _ in range(400)]
    full = sum(p == support for p in periods)
    assert 150 < full < 250  # about half
    lengths = set()
    for a, b in periods:
        if (a, b) == support:
            continue
        assert a in starts and b in ends and support[0] <= a < b <= support[1]
        months = len(composite.month_bounds_ms(a, b))
        assert btd.MIN_SUBPERIOD_MONTHS <= months <= btd.MAX_SUBPERIOD_MONTHS
        lengths.add(months)
    assert lengths == set(range(3, 12))
    assert btd.draw_valid_period(support, rng, full_fraction=1.0) == support


def test_eval_mask_exact_count():
    m = btd.eval_mask(40, 0.25, np.random.default_rng(0))
    assert m.sum() == 10
    assert btd.eval_mask(3, 0.0, np.random.default_rng(0)).sum() == 0
    with pytest.raises(ValueError):
        btd.eval_mask(3, 1.0, np.random.default_rng(0))


def test_plan_patch_samples_grid_aligned_with_labels():
    lc = _map()
    window = GridWindow(32631, 664000.0, 5612120.0, 80, 60)
    regions = {
        2023: btd.Region(window, lc),
        2024: btd.Region(window, None),
    }
    specs = btd.plan_patch_samples(regions, num_samples=21, patch_size=8, eval_fraction=0.2, seed=5)
    again = btd.plan_patch_samples(regions, num_samples=21, patch_size=8, eval_fraction=0.2, seed=5)
    assert [s.to_json() for s in specs] == [s.to_json() for s in again]
    assert sum(s.year == 2023 for s in specs) == 11 and sum(s.year == 2024 for s in specs) == 10
    assert sum(s.split == "eval" for s in specs) == 4
    assert len({s.sample_id for s in specs}) == 21
    for s in specs:
        w = s.window
        assert (w.width, w.height, w.epsg) == (8, 8, 32631)
        assert w.x0 % 10 == 0 and w.y0 % 10 == 0
        assert window.x0 <= w.x0 and w.x0 + 80 <= window.x0 + 800
        assert s.support == runner.year_bounds_ms(s.year)
        if s.year == 2023:
            r, c = int((window.y0 - w.y0) / 10), int((w.x0 - window.x0) / 10)
            np.testing.assert_array_equal(s.landcover, lc[r : r + 8, c : c + 8])
            assert s.class_id == lc[r + 4, c + 4]
        else:
            assert s.landcover is None and s.class_id == -1


def test_band_moments_match_numpy():
    rng = np.random.default_rng(0)
    p, t = 3, 4
    feats = {}
    for s in sensors.SOURCE_IDS:
        c = len(sensors.get_sensor(s).bands)
        tt = examples.num_frames(s, t)
        feats[f"{s}/values"] = rng.normal(5, 2, (tt, p, p, c)).astype(np.float32)
        feats[f"{s}/valid"] = rng.random((tt, p, p)) > 0.4
        feats[f"{s}/band_valid"] = rng.random((tt, c)) > 0.2
    m = btd.band_moments(feats)
    v = feats["sentinel1/values"][..., 1]
    use = feats["sentinel1/valid"] & feats["sentinel1/band_valid"][:, None, None, 1]
    x = v[use].astype(np.float64)
    assert m["sentinel1__VH__count"] == x.size
    assert m["sentinel1__VH__mean"] == pytest.approx(x.mean())
    assert m["sentinel1__VH__m2"] == pytest.approx(((x - x.mean()) ** 2).sum())


def test_point_supports_from_first_month():
    from schemas.observations import Observations, SourceFrames

    times = [_ms(2020, 11, 14), _ms(2021, 3, 2)]
    sf = SourceFrames("sentinel1", np.zeros((2, 1, 1, 2)), np.ones((2, 1, 1), bool), times)
    obs = Observations({"sentinel1": sf}, point_ids=np.array(["a"], object))
    assert btd.point_supports(obs, None) == [(_ms(2020, 11), _ms(2021, 11))]
    assert btd.point_supports(obs, [2021]) == [runner.year_bounds_ms(2021)]


def test_num_shards_from_example_size():
    # 128 x 128 px, 16 frames: 22,020,096 B an example, 12 a shard of 256 MiB.
    assert btd.num_shards(230, 128, 16) == 20
    assert btd.num_shards(12, 128, 16) == 1
    assert btd.num_shards(13, 128, 16) == 2
    assert btd.num_shards(2700, 1, 12) == 1
    assert btd.num_shards(0, 32, 12) == 1


def _write_examples(records: list[bytes], prefix: str, n: int) -> None:
    import apache_beam as beam

    with runner.create_pipeline(runner.pipeline_options([])) as p:
        _ = (
            p
            | beam.Create([("train", r, {}) for r in records], reshuffle=False)
            | btd.WriteExamples(prefix, n)
        )


def test_write_examples_is_independent_of_arrival_order(tmp_path):
    """Same records in two orders -> byte-identical shards, each in SHA-256 order, all N
    present (empty ones too), nothing else in the directory."""
    import hashlib

    records = [f"example {i}".encode() * (1 + i % 3) for i in range(40)]
    for name, recs in (("a", records), ("b", records[::-1])):
        (tmp_path / name).mkdir()
        _write_examples(recs, str(tmp_path / name / "train"), 64)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [f"train-{i:05d}-of-00064.tfrecord.gz" for i in range(64)]
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    got = []
    for f in files:
        a, b = (tmp_path / "a" / f).read_bytes(), (tmp_path / "b" / f).read_bytes()
        assert a == b, f
        shard = list(iter_records(str(tmp_path / "a" / f)))
        keys = [hashlib.sha256(r).digest() for r in shard]
        assert keys == sorted(keys)
        assert all(int.from_bytes(k[:8], "big") % 64 == int(f[6:11]) for k in keys)
        got += shard
    assert sorted(got) == sorted(records)
    assert sum(1 for f in files if not list(iter_records(str(tmp_path / "a" / f)))) > 0


def test_write_examples_equals_an_in_memory_writer(tmp_path):
    """Records spilled to files and read back one at a time: each shard byte-identical to
    `write_shard` fed that shard's records from memory in SHA-256 order; the spill folder
    is gone afterwards."""
    import hashlib

    rng = np.random.default_rng(0)
    records = [rng.integers(0, 255, size=int(n), dtype=np.uint8).tobytes() for n in range(1, 30)]
    records += [records[3]]  # a duplicate example is written twice, as before
    _write_examples(records, str(tmp_path / "a" / "train"), 3)
    for shard in range(3):
        mine = sorted(
            (hashlib.sha256(r).digest(), r)
            for r in records
            if int.from_bytes(hashlib.sha256(r).digest()[:8], "big") % 3 == shard
        )
        ref = tmp_path / f"ref-{shard}.tfrecord.gz"
        assert btd.write_shard(str(ref), [r for _, r in mine]) == len(mine)
        got = tmp_path / "a" / f"train-{shard:05d}-of-00003.tfrecord.gz"
        assert got.read_bytes() == ref.read_bytes(), shard
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        f"train-{i:05d}-of-00003.tfrecord.gz" for i in range(3)
    ]


def test_spilled_record_round_trip(tmp_path):
    record = bytes(range(256)) * 1000
    path = btd.spill_record(str(tmp_path / "s.spill"), b"\x01" * 32, record)
    assert path == str(tmp_path / "s.spill" / ("01" * 32 + ".z"))
    assert btd.read_spilled(path) == record
    assert Path(path).stat().st_size < len(record)  # compressed
    btd.remove_spill_dir(str(tmp_path / "s.spill"))
    assert not (tmp_path / "s.spill").exists()
    btd.remove_spill_dir(str(tmp_path / "s.spill"))  # nothing to remove: no error


# ------------------------------------------------------------------------------- helpers


def _records(out: Path, split: str) -> list[bytes]:
    paths = sorted(glob.glob(str(out / f"{split}-*-of-*.tfrecord.gz")))
    return [r for p in paths for r in iter_records(p)]


def _deadletters(out: Path) -> list[dict]:
    text = (out / "deadletter.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _assert_stats_match_numpy(out: Path) -> dict:
    """stats.json equals numpy mean/std over the usable values of the training examples."""
    stats = json.loads((out / "stats.json").read_text())
    assert stats["schema_version"] == examples.SCHEMA_VERSION
    train = [examples.decode_example(r) for r in _records(out, "train")]
    assert stats["examples"]["train"] == len(train)
    checked = 0
    for s in sensors.SOURCE_IDS:
        for c, b in enumerate(sensors.get_sensor(s).band_names):
            xs = []
            for ex in train:
                use = ex[f"{s}/valid"] & ex[f"{s}/band_valid"][:, None, None, c]
                xs.append(ex[f"{s}/values"][..., c][use])
            x = np.concatenate(xs).astype(np.float64)
            got = stats[s][b]
            assert got["count"] == x.size, (s, b)
            if x.size:
                assert got["mean"] == pytest.approx(x.mean(), rel=1e-4, abs=1e-6), (s, b)
                assert got["std"] == pytest.approx(x.std(), rel=1e-4, abs=1e-6), (s, b)
                checked += 1
            else:
                assert (got["mean"], got["std"]) == (0.0, 1.0)
    assert checked > 0
    return stats


def _parse_all_with_tf(records: list[bytes], patch_size: int, max_frames: int) -> dict:
    tf = pytest.importorskip("tensorflow")
    parsed = input_pipeline.parse_examples(
        tf.constant(records), patch_size=patch_size, max_frames=max_frames
    )
    assert parsed["sentinel2_l2a/values"].shape[0] == len(records)
    return parsed


# ------------------------------------------------------------------------------- point table


@pytest.fixture(scope="module")
def realdata_root(realdata_dir) -> Path:
    return realdata_dir


@pytest.fixture(scope="module")
def points_build(tmp_path_factory, realdata_root):
    from beam_jobs.io import points
    from beam_jobs.io.realdata import read_worldcereal

    tmp = tmp_path_factory.mktemp("points")
    obs = read_worldcereal(realdata_root / "worldcereal_belgium_2021" / "inputs.nc")
    pts = points.window_to_points(obs, sample=25, seed=0)
    table = tmp / "points.parquet"
    points.write_point_table(pts, table)
    out = tmp / "td"
    rc = btd.run(
        [
            "--observations",
            str(table),
            "--out",
            str(out),
            "--eval-fraction",
            "0.2",
            "--subperiods",
            "1",
            "--max-frames",
            "12",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    return out, table


def test_point_table_builds_pixel_examples(points_build):
    from beam_jobs.io import points

    out, table = points_build
    train, evals = _records(out, "train"), _records(out, "eval")
    # 25 points x (whole period + 1 sub-period); 5 points (10 examples) in eval.
    assert (len(train), len(evals)) == (40, 10)
    assert _deadletters(out) == []
    parsed = _parse_all_with_tf(train + evals, patch_size=1, max_frames=12)
    assert parsed["target/landcover"].shape == (50, 1, 1)
    assert (parsed["target/landcover"].numpy() == -1).all()
    assert (parsed["patch_size"].numpy() == 1).all()

    # Values equal the table's (after the model transforms), frame by frame.
    obs = points.read_point_table(table)
    ex = examples.decode_example(train[0])
    pid = ex["location/point_id"].item().decode()
    i = list(obs.point_ids).index(pid)
    s1 = obs["sentinel1"]
    n = int(ex["sentinel1/frame_valid"].sum())
    keep = s1.valid[:, i, 0]
    np.testing.assert_array_equal(ex["sentinel1/times_ms"][:n], s1.times_ms[keep])
    np.testing.assert_array_equal(ex["sentinel1/values"][:n, 0, 0], s1.values[keep, i, 0])
    era = obs["era5_land"]
    k = int(ex["era5_land/frame_valid"].sum())
    want = sensors.model_transform("era5_land", era.values[era.valid[:, i, 0], i, 0])
    np.testing.assert_allclose(ex["era5_land/values"][:k, 0, 0], want, rtol=1e-6)
    # Support = Nov 2020 .. Oct 2021 (12 months from the first composite).
    assert ex["support_period"].tolist() == [_ms(2020, 11), _ms(2021, 11)]
    assert ex["location/lon"] == pytest.approx(obs.lon[i], abs=1e-5)
    # WorldCereal has no B8A: that band is absent, the other nine are present.
    bv = ex["sentinel2_l2a/band_valid"][ex["sentinel2_l2a/frame_valid"]]
    assert not bv[:, 7].any() and bv[:, :7].all()


def test_point_table_stats_equal_numpy(points_build):
    out, _ = points_build
    stats = _assert_stats_match_numpy(out)
    assert stats["sentinel2_l2a"]["B8A"]["count"] == 0
    assert stats["landsat_c2l2"]["SR_B2"] == {"count": 0, "mean": 0.0, "std": 1.0}
    assert 270 < stats["era5_land"]["temperature_2m"]["mean"] < 295
    assert set(stats["eval_shift"]) >= {"sentinel1", "sentinel2_l2a"}
    assert (out / "transform_fn" / "transform_fn" / "saved_model.pb").exists()
    assert not (out / ".tft_tmp").exists()


def test_point_table_rebuild_is_byte_identical(points_build, tmp_path):
    """Two processes instead of one, same flags: the same shard files and stats.json, byte
    for byte (what lets `make pretrain` reproduce its training data from run to run)."""
    out, table = points_build
    again = tmp_path / "again"
    argv = ["--observations", str(table), "--out", str(again), "--eval-fraction", "0.2"]
    argv += ["--subperiods", "1", "--max-frames", "12", "--seed", "3"]
    assert (
        btd.run(argv + ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
        == 0
    )
    names = sorted(p.name for p in out.glob("*-of-*.tfrecord.gz"))
    assert names == ["eval-00000-of-00001.tfrecord.gz", "train-00000-of-00001.tfrecord.gz"]
    assert names == sorted(p.name for p in again.glob("*-of-*.tfrecord.gz"))
    for name in names + ["stats.json"]:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_rerun_refuses_existing_build(points_build):
    out, table = points_build
    with pytest.raises(SystemExit, match="--overwrite"):
        btd.run(["--observations", str(table), "--out", str(out)])


# ------------------------------------------------------------------------------- simulated


SIM_ARGS = ["--size-km", "0.64", "--seed", "0", "--cloud-cover", "0.3"]


@pytest.fixture(scope="module")
def sim_catalog(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate.run(["--out", str(out), "--sim-region", "demo", "--years", "2023,2024", *SIM_ARGS])
    return out / "catalog.json"


def _build_sim(catalog: Path, out: Path, *extra: str, years: str = "2023") -> None:
    args = [
        "--stac",
        str(catalog),
        "--years",
        years,
        "--num-samples",
        "8",
        "--patch-size",
        "16",
        "--max-frames",
        "6",
        "--eval-fraction",
        "0.25",
        "--out",
        str(out),
        *extra,
    ]
    assert btd.run(args) == 0


@pytest.fixture(scope="module")
def sim_build(sim_catalog, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim_td")
    _build_sim(sim_catalog, out)
    return out


def test_sim_build_counts_parse_and_stats(sim_build, sim_catalog):
    out = sim_build
    train, evals = _records(out, "train"), _records(out, "eval")
    dead = _deadletters(out)
    assert len(train) + len(evals) == 8 - len(dead)
    assert len(dead) == 0
    parsed = _parse_all_with_tf(train + evals, patch_size=16, max_frames=6)
    assert parsed["sentinel2_l2a/values"].shape[1:] == (6, 16, 16, 10)
    assert parsed["cop_dem/values"].shape[1:] == (1, 16, 16, 2)
    assert parsed["sentinel2_l2a/frame_valid"].numpy().any(axis=1).all()
    _assert_stats_match_numpy(out)
    exs = [examples.decode_example(r) for r in train + evals]
    for ex in exs:
        assert ex["location/x"] % 10 == 0 and ex["location/y"] % 10 == 0
        a, b = ex["valid_period"]
        s0, s1 = runner.year_bounds_ms(2023)
        assert s0 <= a < b <= s1
        t = ex["sentinel2_l2a/times_ms"][ex["sentinel2_l2a/frame_valid"]]
        assert ((t >= s0) & (t < s1)).all() and (np.diff(t) > 0).all()
    labels = sim_catalog.parent / "labels" / "landcover_2023.tif"
    if labels.exists():
        # Stratified: patch classes spread evenly (8 samples over K classes: counts differ <= 1).
        cls = [int(ex["target/class_id"]) for ex in exs]
        counts = np.unique(cls, return_counts=True)[1]
        assert counts.max() - counts.min() <= 1 and min(cls) >= 0
        assert all(ex["target/text"].item() for ex in exs)


def test_sim_two_processes_monthly_with_a_corrupt_asset(sim_catalog, tmp_path):
    """One run for two cases (a build costs a minute): two processes with monthly composites,
    and a garbage COG under one 2024 Sentinel-2 item. The 2024 samples that read it are
    dead-lettered with the reason, the 2023 samples are written, the job completes, and every
    written example holds monthly composites."""
    import pystac

    copy = tmp_path / "cat"
    shutil.copytree(sim_catalog.parent, copy)
    cat = pystac.read_file(str(copy / "catalog.json"))
    items = [
        i
        for i in cat.get_items(recursive=True)
        if i.collection_id == "sentinel2_l2a" and i.datetime.year == 2024
    ]
    item = items[len(items) // 2]
    href = item.assets["B04"].get_absolute_href()
    Path(href).write_bytes(b"this is not a GeoTIFF" * 100)
    out = tmp_path / "td"
    _build_sim(
        copy / "catalog.json",
        out,
        "--composite",
        "monthly",
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
        years="2023,2024",
    )
    dead = _deadletters(out)
    records = _records(out, "train") + _records(out, "eval")
    exs = [examples.decode_example(r) for r in records]
    written = [ex["sample_id"].item().decode() for ex in exs]
    assert len(written) == 8 - len(dead)
    assert dead, "samples reading the corrupt asset must be dead-lettered"
    assert all(d["sample_id"].startswith("2024_") for d in dead)
    assert all(item.id in d["reason"] and "B04" in d["reason"] for d in dead)
    assert sum(w.startswith("2023_") for w in written) == 4
    for ex in exs:
        t = ex["sentinel2_l2a/times_ms"][ex["sentinel2_l2a/frame_valid"]]
        np.testing.assert_array_equal(t, composite.month_start_ms(t))  # monthly composites
    stats = json.loads((out / "stats.json").read_text())
    assert stats["composite"] == "monthly"
    assert stats["examples"]["train"] + stats["examples"]["eval"] == len(written)


def test_resolve_region_bbox_clips_to_labels(sim_catalog):
    full = btd.resolve_region(str(sim_catalog), 2023)
    assert full.landcover is not None and full.landcover.shape == full.window.shape
    sub = full.window.subwindow(10, 20, 30, 40)
    minx, miny, maxx, maxy = sub.lonlat_bounds()
    bbox = f"{minx},{miny},{maxx},{maxy}"
    region = btd.resolve_region(str(sim_catalog), 2023, bbox=bbox)
    w = region.window
    # The bbox's grid window (a little larger than `sub`: lon/lat edges are curved in UTM),
    # clipped to the map, with the map's pixels.
    assert w.x0 <= sub.x0 and w.y0 >= sub.y0
    assert w.x0 + 10 * w.width >= sub.x0 + 10 * sub.width
    r, c = int(round((full.window.y0 - w.y0) / 10)), int(round((w.x0 - full.window.x0) / 10))
    np.testing.assert_array_equal(
        region.landcover, full.landcover[r : r + w.height, c : c + w.width]
    )
    assert (w.x0 - full.window.x0) % 10 == 0
