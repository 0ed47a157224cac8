"""The quality harness: probes, splits, features and the report, on hand-built data."""

import datetime as dt
import importlib.util
import json
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import evaluate as quality
from schemas.grid import GridWindow
from schemas.observations import Observations, SourceFrames


def _ms(y, m, d):
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp() * 1000)


def _toy_window_obs(label_map: np.ndarray, seed: int = 0) -> Observations:
    """A window whose S2 reflectance separates the classes, plus a DEM; some frames cloudy."""
    rng = np.random.default_rng(seed)
    h, w = label_map.shape
    times = np.array([_ms(2023, m, 15) for m in range(1, 13)])
    t = len(times)
    base = 0.05 + 0.1 * label_map[None, :, :, None].astype(np.float32)
    values = base + rng.normal(0, 0.01, (t, h, w, 10)).astype(np.float32)
    valid = rng.random((t, h, w)) > 0.2
    s2 = SourceFrames("sentinel2_l2a", values, valid, times)
    dem = np.stack([100 + rng.normal(0, 5, (h, w)), rng.uniform(0, 10, (h, w))], -1)
    cop = SourceFrames("cop_dem", dem[None].astype(np.float32), np.ones((1, h, w), bool), [0])
    window = GridWindow(32633, 465180.0, 5080260.0, w, h)
    return Observations({"sentinel2_l2a": s2, "cop_dem": cop}, window=window)


def _toy_dataset(h=48, w=48, seed=0) -> quality.LabelledPixels:
    """Three classes in 4 px diagonal stripes (each in every block), block split, sampled."""
    rows, cols = np.mgrid[:h, :w]
    label_map = (rows // 4 + cols // 4) % 3 + 1
    obs = _toy_window_obs(label_map, seed)
    split = quality.block_split((h, w), 8, seed)
    index, labels, is_test = quality.sample_labelled_pixels(label_map, split, seed=seed)
    return quality.LabelledPixels(
        "toy", obs, index, labels, is_test, {1: "a", 2: "b", 3: "c"}, info={}
    )


def _index_embedder(obs: Observations) -> np.ndarray:
    """A toy embedder: the row-major pixel index and the S2 median composite, per pixel."""
    h, w = obs.spatial_shape
    return np.concatenate(
        [np.arange(h * w, dtype=np.float32)[:, None], quality.median_composite(obs)], axis=1
    )


# ---------------------------------------------------------------------------------- probes


def test_probes_separable_toy_set_are_perfect():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    # No pure-noise columns: standardizing on 1 sample per class would blow them up to the
    # signal's scale, which is the probe's documented behaviour, not what this test is about.
    feats = np.eye(4)[labels] * 10 + rng.normal(0, 0.1, (200, 4))
    is_test = np.tile(np.arange(50) >= 25, 4)
    train_pool, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    for budget in (1, 10, None):
        train = train_pool[quality.balanced_draw(labels[train_pool], budget, rng)]
        res = quality.run_probes(feats, labels, train, test_idx)
        assert res == {"knn1": 1.0, "knn3": 1.0, "logreg": 1.0}, (budget, res)


def test_probes_on_shuffled_labels_are_at_chance():
    # 4 classes: chance is 0.25. Averaged over 20 draws of 10 per class against 400 test
    # pixels, the mean's std is about 0.01; the tolerance of 0.05 is five of those.
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 200)
    feats = np.eye(4)[labels] * 10 + rng.normal(0, 0.1, (800, 4))
    shuffled = rng.permutation(labels)
    is_test = np.tile(np.arange(200) >= 100, 4)
    train_pool, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    acc = {p: [] for p in quality.PROBES}
    for _ in range(20):
        train = train_pool[quality.balanced_draw(shuffled[train_pool], 10, rng)]
        for p, v in quality.run_probes(feats, shuffled, train, test_idx).items():
            acc[p].append(v)
    for p, v in acc.items():
        assert abs(np.mean(v) - 0.25) < 0.05, (p, np.mean(v))


def test_probes_standardize_on_train_and_impute_nan():
    # Column 0 separates the classes but sits on a huge offset; column 1 is all NaN in the
    # training draw and garbage in the test set: it must be neutralized, not crash.
    labels = np.array([0, 1, 0, 1, 0, 1])
    feats = np.array(
        [[1e6, np.nan], [1e6 + 1, np.nan], [1e6, 5.0], [1e6 + 1, -5.0], [1e6, np.nan], [1e6 + 1, 0]]
    )
    res = quality.run_probes(feats, labels, np.array([0, 1]), np.array([2, 3, 4, 5]))
    assert res == {"knn1": 1.0, "knn3": 1.0, "logreg": 1.0}


def test_run_probes_recall_per_class_hand_computed():
    # 1-NN on one feature: train 0 -> class 0, 10 -> class 1. Test class 0 at 1, 2, 9 (the
    # last nearer class 1): recall 2/3; class 1 at 8, 11: recall 1. Balanced: (2/3 + 1) / 2.
    feats = np.array([[0.0], [10.0], [1.0], [2.0], [9.0], [8.0], [11.0]])
    labels = np.array([0, 1, 0, 0, 0, 1, 1])
    recall: dict = {}
    res = quality.run_probes(
        feats, labels, np.array([0, 1]), np.arange(2, 7), ("knn1",), recall_out=recall
    )
    assert recall == {"knn1": {0: pytest.approx(2 / 3), 1: 1.0}}
    assert res["knn1"] == pytest.approx(np.mean(list(recall["knn1"].values())))


def test_knn3_breaks_ties_by_the_nearest_neighbour():
    # One sample per class: the 3 neighbours are 3 classes; the nearest decides, as for k=1.
    feats = np.array([[0.0], [1.0], [2.0], [1.9], [0.1]])
    labels = np.array([5, 3, 4, 4, 5])
    res = quality.run_probes(feats, labels, np.array([0, 1, 2]), np.array([3, 4]), ("knn3",))
    assert res == {"knn3": 1.0}


def test_balanced_draw_takes_min_of_budget_and_class_size():
    labels = np.array([0] * 5 + [1] * 30 + [2] * 12)
    rng = np.random.default_rng(0)
    for budget, want in ((1, [1, 1, 1]), (10, [5, 10, 10]), (None, [5, 30, 12])):
        idx = quality.balanced_draw(labels, budget, rng)
        assert len(set(idx.tolist())) == len(idx)
        assert np.bincount(labels[idx], minlength=3).tolist() == want


def test_parse_budgets():
    assert quality.parse_budgets("1,10,max") == [1, 10, None]
    with pytest.raises(ValueError, match="budgets"):
        quality.parse_budgets("0,max")


def test_error_reduction_on_hand_numbers():
    assert quality.error_reduction(0.9, 0.8) == pytest.approx(0.5)  # err 0.1 vs 0.2
    assert quality.error_reduction(0.7, 0.8) == pytest.approx(-0.5)  # err 0.3 vs 0.2
    assert quality.error_reduction(1.0, 0.75) == pytest.approx(1.0)
    assert quality.error_reduction(1.0, 1.0) == 0.0
    assert quality.error_reduction(0.9, 1.0) is None


# ---------------------------------------------------------------------------------- splits


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    block=st.integers(1, 20),
    seed=st.integers(0, 2**31 - 1),
    buffer=st.integers(1, 3),
)
def test_block_split_never_puts_neighbours_on_both_sides(h, w, block, seed, buffer):
    split = quality.block_split((h, w), block, seed, buffer=buffer)
    assert split.shape == (h, w)
    assert set(np.unique(split).tolist()) <= {-1, 0, 1}
    train = split == quality.SPLIT_TRAIN
    test = split == quality.SPLIT_TEST
    # Every test pixel's (2*buffer+1)^2 neighbourhood, the 8-neighbours included, has no train.
    pad = np.pad(train, buffer)
    for dr in range(-buffer, buffer + 1):
        for dc in range(-buffer, buffer + 1):
            shifted = pad[buffer + dr : buffer + dr + h, buffer + dc : buffer + dc + w]
            assert not (test & shifted).any()
    # Test is whole blocks; a block's side depends only on its position, not on the shape.
    big = quality.block_split((h + 17, w + 5), block, seed, buffer=buffer)
    assert np.array_equal(big[:h, :w] == quality.SPLIT_TEST, test)


def test_block_split_is_blockwise_seeded_and_balanced():
    a = quality.block_split((160, 160), 16, 3)
    assert np.array_equal(a, quality.block_split((160, 160), 16, 3))
    assert not np.array_equal(a, quality.block_split((160, 160), 16, 4))
    test_blocks = (a == quality.SPLIT_TEST).reshape(10, 16, 10, 16).any(axis=(1, 3))
    assert 0.3 < test_blocks.mean() < 0.7
    # Buffer pixels lie only at block edges next to a test block.
    no_buffer = quality.block_split((160, 160), 16, 3, buffer=0)
    assert np.array_equal(no_buffer == quality.SPLIT_TEST, a == quality.SPLIT_TEST)
    assert ((a == quality.SPLIT_BUFFER) == ((no_buffer == 0) & (a != 0))).all()


def test_sample_labelled_pixels_filters_classes_and_caps():
    label_map = np.zeros((40, 40), np.int64)
    label_map[:, :20] = 1  # 800 px
    label_map[:, 20:] = 2  # 800 px
    label_map[0, :30] = 3  # 30 px: below 50, dropped
    split = quality.block_split((40, 40), 5, 0)
    index, labels, is_test = quality.sample_labelled_pixels(
        label_map, split, classes=[1, 2, 3], max_per_class=100, max_test=60
    )
    assert set(labels.tolist()) == {1, 2}
    flat_split = split.reshape(-1)[index]
    assert (flat_split[is_test] == quality.SPLIT_TEST).all()
    assert (flat_split[~is_test] == quality.SPLIT_TRAIN).all()
    assert np.array_equal(label_map.reshape(-1)[index], labels)
    for c in (1, 2):
        assert np.sum(~is_test & (labels == c)) == 100
        assert np.sum(is_test & (labels == c)) == 30
    assert len(set(index.tolist())) == len(index)


# ---------------------------------------------------------------------------------- features


def test_designed_features_hand_computed():
    # Two pixels, five frames: Jan 5, Jan 20, Feb 10, Jun 1, Jun 30 of 2023.
    times = np.array([_ms(2023, 1, 5), _ms(2023, 1, 20), _ms(2023, 2, 10), _ms(2023, 6, 1)])
    times = np.append(times, _ms(2023, 6, 30))
    s2 = np.full((5, 2, 1, 10), np.nan, np.float32)
    s2[:, 0, 0, 0] = [0.1, 0.3, 0.2, 0.5, 0.9]  # B02 of pixel 0
    s2[:, 1, 0, 0] = [0.4, 0.4, 0.4, 0.4, 0.4]
    valid = np.ones((5, 2, 1), bool)
    valid[4, 1, 0] = False  # a cloudy frame of pixel 1 (its value must be ignored)
    s2[4, 1, 0, 0] = 99.0
    dem = np.array([[[[250.0, 3.0]], [[260.0, 4.0]]]], np.float32)
    obs = Observations(
        {
            "sentinel2_l2a": SourceFrames("sentinel2_l2a", s2, valid, times),
            "cop_dem": SourceFrames("cop_dem", dem, np.ones((1, 2, 1), bool), [0]),
        },
        point_ids=np.array(["a", "b"]),
        lon=np.array([14.5, 14.6]),
        lat=np.array([45.8, 45.9]),
    )
    feats = quality.designed_features(obs)
    names = quality.designed_feature_names(obs)
    assert feats.shape == (2, 10 * 15 + 2) and len(names) == feats.shape[1]
    b02 = feats[:, :15]
    assert names[:3] == ["sentinel2_l2a.B02.p10", "sentinel2_l2a.B02.p50", "sentinel2_l2a.B02.p90"]
    # Pixel 0 sorted: 0.1 0.2 0.3 0.5 0.9; p10 at rank 0.4 -> 0.14; p50 0.3; p90 at 3.6 -> 0.74.
    np.testing.assert_allclose(b02[0, :3], [0.14, 0.3, 0.74], rtol=1e-5)
    # Monthly medians: Jan (0.1, 0.3) -> 0.2, Feb 0.2, Jun (0.5, 0.9) -> 0.7, others NaN.
    monthly = b02[0, 3:]
    np.testing.assert_allclose(monthly[[0, 1, 5]], [0.2, 0.2, 0.7], rtol=1e-5)
    assert np.isnan(np.delete(monthly, [0, 1, 5])).all()
    np.testing.assert_allclose(b02[1, :3], [0.4, 0.4, 0.4])
    assert b02[1, 3 + 5] == pytest.approx(0.4)  # June: the cloudy 99 is ignored
    assert np.isnan(feats[:, 15:150]).all()  # the other bands were never observed
    assert names[-2:] == ["cop_dem.elevation", "cop_dem.slope"]
    np.testing.assert_allclose(feats[:, -2:], [[250.0, 3.0], [260.0, 4.0]])
    # The composite: pixel 0 median 0.3, pixel 1 median of the four clear 0.4.
    comp = quality.median_composite(obs)
    assert comp.shape == (2, 10)
    np.testing.assert_allclose(comp[:, 0], [0.3, 0.4], rtol=1e-6)


def test_designed_features_extra_series_and_window_order():
    label_map = np.array([[1, 2, 3], [3, 2, 1]])
    obs = _toy_window_obs(label_map)
    times = np.array([_ms(2016, 3, 1), _ms(2016, 3, 20), _ms(2017, 3, 5)])
    ndvi = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]] * 3, np.float32) * [[1], [2], [3]]
    extra = {"ndvi": quality.PixelSeries(ndvi, times)}
    feats = quality.designed_features(obs, extra)
    names = quality.designed_feature_names(obs, extra)
    assert feats.shape == (6, len(names)) and names[-15] == "ndvi.p10"
    # March across both years: median of (v, 2v, 3v) = 2v, row-major pixel order.
    np.testing.assert_allclose(feats[:, names.index("ndvi.m03")], 2 * ndvi[0], rtol=1e-6)
    # A point set of selected pixels gives the same rows as the window.
    pts = quality.select_pixels(obs, np.array([4, 0]))
    np.testing.assert_array_equal(
        quality.designed_features(pts), quality.designed_features(obs)[[4, 0]]
    )


def test_pca_and_xy_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 200))
    x[:, 3] = np.nan
    p = quality.pca_features(x, 64)
    assert p.shape == (100, 64) and np.isfinite(p).all()
    assert quality.pca_features(x[:10], 64).shape == (10, 10)
    ds = _toy_dataset(16, 16)
    feats = quality.baseline_features(ds.observations, ds.pixel_index)
    lon, lat = quality.pixel_lonlat(ds.observations, ds.pixel_index)
    np.testing.assert_allclose(feats["xy"], np.stack([lon, lat], 1).astype(np.float32))
    assert 14.0 < lon.min() and lon.max() < 14.6 and 45.8 < lat.min() and lat.max() < 45.9


# ---------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def toy_results():
    ds = _toy_dataset()
    return ds, quality.evaluate(ds, _index_embedder, (1, 10, None), repeats=3, seed=0)


def test_evaluate_results_keys_and_shapes(toy_results, tmp_path):
    ds, res = toy_results
    for key in ("dataset", "features", "best_baseline", "embedding", "error_reduction"):
        assert key in res
    assert res["dataset"] == "toy"
    assert list(res["features"]) == list(quality.BASELINES)
    budgets = ["1", "10", "max"]
    for entry in [*res["features"].values(), res["embedding"]]:
        assert list(entry) == budgets
        for bk in budgets:
            assert list(entry[bk]) == list(quality.PROBES)
            for mean, std in entry[bk].values():
                assert 0.0 <= mean <= 1.0 and std >= 0.0
        for mean_std in entry["max"].values():
            assert mean_std[1] == 0.0  # max is drawn once
    assert res["feature_dims"] == {
        "median_composite": 10,
        "designed": 10 * 15 + 2,
        "pca64": 64,
        "xy": 2,
        "embedding": 11,
    }
    for bk in budgets:
        best = res["best_baseline"][bk]
        assert best["balanced_accuracy"] == max(
            m for e in res["features"].values() for m, _ in e[bk].values()
        )
        emb = max(m for m, _ in res["embedding"][bk].values())
        assert res["error_reduction"][bk] == quality.error_reduction(emb, best["balanced_accuracy"])
    # The stripes separate perfectly in S2 reflectance.
    assert res["features"]["median_composite"]["10"]["knn1"][0] == 1.0
    paths = quality.write_report(res, tmp_path)
    on_disk = json.loads(paths["json"].read_text())
    assert (
        on_disk["features"]["designed"]["max"]["logreg"]
        == res["features"]["designed"]["max"]["logreg"]
    )
    md = paths["md"].read_text()
    assert "## Budget 10 per class" in md and "| median_composite |" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_class_recall_and_its_table(toy_results):
    ds, res = toy_results
    rec = res["class_recall"]
    assert set(rec) == {*quality.BASELINES, "embedding"}
    for name, per_budget in rec.items():
        for bk, per_probe in per_budget.items():
            for p, per_class in per_probe.items():
                assert set(per_class) == {"1", "2", "3"}
                # balanced accuracy is the mean recall, draw by draw and so on average
                assert np.mean(list(per_class.values())) == pytest.approx(
                    (res["embedding"] if name == "embedding" else res["features"][name])[bk][p][0]
                )
    md = quality.results_markdown(res)
    assert "## Recall per class" in md
    # Each cell: the best baseline's recall (the stripes separate perfectly in S2
    # reflectance: 1.000) / the embedding's with its best probe.
    for c, name in res["classes"].items():
        cells = [
            f"1.000 / {rec['embedding'][bk][quality.best_probe(res['embedding'][bk])[0]][c]:.3f}"
            for bk in ("1", "10", "max")
        ]
        assert f"| {name} | " + " | ".join(cells) + " |" in md


def test_embed_pixels_without_a_source():
    ds = _toy_dataset(16, 16)
    seen = []

    def spy(obs):
        seen.append(sorted(obs.sources))
        return _index_embedder(obs)

    quality.embed_pixels(spy, ds, ["cop_dem"])
    assert seen == [["sentinel2_l2a"]]
    assert sorted(ds.observations.sources) == ["cop_dem", "sentinel2_l2a"]  # not modified
    with pytest.raises(ValueError, match="sentinel1"):
        quality.embed_pixels(spy, ds, ["sentinel1"])
    res = quality.evaluate(ds, spy, (2,), repeats=1, probes=("knn1",), embed_without=["cop_dem"])
    assert res["embed_without"] == ["cop_dem"]


def test_evaluate_without_embedder_has_no_embedding_keys():
    ds = _toy_dataset(24, 24)
    res = quality.evaluate(ds, None, (2,), repeats=2, probes=("knn1",))
    assert "embedding" not in res and "error_reduction" not in res
    assert list(res["features"]["xy"]) == ["2"] and list(res["features"]["xy"]["2"]) == ["knn1"]


def test_embed_pixels_follows_the_row_major_contract():
    ds = _toy_dataset(16, 16)
    emb = quality.embed_pixels(_index_embedder, ds)
    np.testing.assert_array_equal(emb[:, 0], ds.pixel_index.astype(np.float32))
    with pytest.raises(ValueError, match="contract"):
        quality.embed_pixels(lambda obs: np.zeros((3, 2)), ds)


def test_load_embedder(tmp_path, monkeypatch):
    assert quality.load_embedder("baselines") is None
    mod = types.ModuleType("toy_embedder_mod")
    mod.embed = _index_embedder
    monkeypatch.setitem(sys.modules, "toy_embedder_mod", mod)
    assert quality.load_embedder("toy_embedder_mod:embed") is _index_embedder
    with pytest.raises(ValueError, match="module:function"):
        quality.load_embedder("not a spec")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    if importlib.util.find_spec("model") is not None:
        import model

        if not hasattr(model, "load_bundle"):
            with pytest.raises(ValueError, match="load_bundle"):
                quality.load_embedder(str(bundle))


def test_load_dataset_rejects_bad_specs():
    for spec in ("foo", "sim:abc", "points:only_one.parquet", "eolearn:x"):
        with pytest.raises(ValueError, match="dataset"):
            quality.load_dataset(spec)


# ---------------------------------------------------------------------------------- end to end


def test_run_eolearn_end_to_end(tmp_path, realdata_dir):
    pytest.importorskip("beam_jobs.io.realdata")
    args = ["--dataset", "eolearn", "--repeats", "2", "--out", str(tmp_path)]
    assert quality.run([*args, "--data-dir", str(realdata_dir / "eolearn_slovenia")]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset"] == "eolearn"
    assert set(res["classes"].values()) >= {"forest", "grassland"}
    assert set(res["features"]) == set(quality.BASELINES)
    assert list(res["best_baseline"]) == ["1", "10", "max"]
    # Real land cover from a year of NDVI: far above chance with the whole train pool.
    chance = 1 / len(res["classes"])
    assert res["best_baseline"]["max"]["balanced_accuracy"] > chance + 0.2
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.png").exists()


def test_run_points_dataset_with_a_toy_embedder(tmp_path, monkeypatch):
    points = pytest.importorskip("beam_jobs.io.points")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, cols = np.mgrid[:24, :24]
    label_map = (rows // 4 + cols // 4) % 3 + 1
    pts = points.window_to_points(_toy_window_obs(label_map))
    points.write_point_table(pts, tmp_path / "obs.parquet")
    names = np.array(["bare", "crop", "tree"])[label_map.reshape(-1) - 1]
    pq.write_table(
        pa.table({"point_id": pts.point_ids.astype(str), "label": names}),
        tmp_path / "labels.parquet",
    )
    mod = types.ModuleType("toy_embedder_mod")
    mod.embed = _index_embedder
    monkeypatch.setitem(sys.modules, "toy_embedder_mod", mod)
    spec = f"points:{tmp_path / 'obs.parquet'}:{tmp_path / 'labels.parquet'}"
    argv = ["--dataset", spec, "--embedder", "toy_embedder_mod:embed", "--block", "4"]
    assert quality.run([*argv, "--repeats", "2", "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["classes"] == {"0": "bare", "1": "crop", "2": "tree"}
    assert res["info"]["split"] == "hashed 40 m UTM cells"
    assert set(res["embedding"]) == set(res["error_reduction"]) == {"1", "10", "max"}
    # The toy embedding carries the S2 composite, which separates the classes.
    assert res["embedding"]["max"]["knn1"] == [1.0, 0.0]
    assert res["error_reduction"]["max"] == 0.0  # both perfect: nothing to reduce


@pytest.mark.slow
def test_run_sim_end_to_end(tmp_path):
    argv = ["--dataset", "sim:7:temperate", "--sim-size-km", "0.64", "--block", "8"]
    assert quality.run([*argv, "--repeats", "2", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset"] == "sim:7:temperate" and len(res["classes"]) >= 2
    assert (tmp_path / "cache" / "sim_7_temperate_640m_2023" / "catalog.json").exists()
    chance = 1 / len(res["classes"])
    assert res["best_baseline"]["max"]["balanced_accuracy"] > chance + 0.2
    # A rerun reuses the cached simulation (and gives the same numbers).
    assert quality.run([*argv, "--repeats", "2", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["features"] == res["features"]
