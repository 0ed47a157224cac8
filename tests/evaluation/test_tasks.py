"""The newer tasks end to end with cheap stand-in embedders: regression, change detection,
like-for-like eolearn, the held-out simulated tasks' truths."""

import json
import sys
import types

import numpy as np
import pytest
from toy_data import toy_window_obs

from evaluation import baselines, datasets, evaluate


def _composite_embedder(obs):
    """A stand-in embedder: the S2 median composite (a designed feature, not a model)."""
    return baselines.median_composite(obs)


def _angle_embedder(obs):
    """A stand-in embedder for cosine scores: the mean S2 composite as an angle (unit rows)."""
    m = np.nanmean(baselines.median_composite(obs), axis=1)
    return np.stack([np.cos(10 * m), np.sin(10 * m)], axis=1)


def _toy_regression(h=40, w=40, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.uniform(0, 3, (h, w))  # a continuous per-pixel quantity
    obs = toy_window_obs(np.zeros((h, w), int), seed)
    s2 = obs["sentinel2_l2a"]
    s2.values[..., 6] = 0.1 + 0.1 * target[None]  # B08 carries it; other bands noise
    split = datasets.block_split((h, w), 8, seed)
    index, is_test = datasets.sample_split_pixels(
        np.ones((h, w), bool), split, seed=seed, max_train=400, max_test=400
    )
    return datasets.LabelledPixels(
        "toyreg",
        obs,
        index,
        np.zeros(len(index), np.int64),
        is_test,
        {},
        targets=target.reshape(-1)[index],
    )


def test_evaluate_regression_with_a_stand_in_embedder(tmp_path):
    ds = _toy_regression()
    res = evaluate.evaluate_regression(ds, _composite_embedder, (10, None), repeats=3, seed=0)
    assert res["task"] == "regression" and res["budgets"] == ["10", "max"]
    emb = res["embedding"]["max"]["ridge"]
    # B08 is linear in the target, the noise is 0.01 -> 0.1 in target units at most.
    assert emb["r2"][0] > 0.95 and emb["mae"][0] < 0.1
    assert len(res["paired"]["10"]["mae"]) == 7 and res["paired"]["10"]["mae"]["n"] == 3
    assert res["paired"]["max"]["mae"]["n"] == 1
    # The embedding is the median composite: the baseline of the same name ties it exactly.
    assert res["features"]["median_composite"]["max"] == res["embedding"]["max"]
    p = res["paired"]["max"]
    assert p["mae"]["diff_mean"] <= 0.0 and res["error_reduction"]["max"] >= 0.0
    from evaluation.report import results_markdown, write_report

    md = results_markdown(res)
    assert "Paired (embedding" in md and "MAE embedding - best baseline" in md
    assert write_report(res, tmp_path)["png"].stat().st_size > 0


def test_change_scores_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [np.nan, np.nan]])
    b = np.array([[0.0, 3.0], [0.0, 1.0], [1.0, 0.0]])
    s = evaluate.change_scores(a, b, cosine=True)
    assert s == pytest.approx([1.0, 0.0, 0.0])  # orthogonal, parallel, unknown
    d = evaluate.change_scores(a[:2], b[:2], cosine=False)
    # Columns standardized over the four rows: col 0 (1,0,0,0), col 1 (0,2,3,1).
    z0 = (np.array([1, 0, 0, 0]) - 0.25) / np.std([1, 0, 0, 0])
    z1 = (np.array([0, 2, 3, 1]) - 1.5) / np.std([0, 2, 3, 1])
    want = [np.hypot(z0[0] - z0[2], z1[0] - z1[2]), np.hypot(z0[1] - z0[3], z1[1] - z1[3])]
    assert d == pytest.approx(want)


def test_evaluate_change_with_a_stand_in_embedder():
    h = w = 30
    rows, cols = np.mgrid[:h, :w]
    before_map = (rows // 5 + cols // 5) % 3 + 1
    after_map = before_map.copy()
    changed_px = (rows < 10) & (cols < 15)
    after_map[changed_px] = before_map[changed_px] % 3 + 1
    before, after = toy_window_obs(before_map, 0), toy_window_obs(after_map, 1)
    idx = np.arange(h * w)
    ds = datasets.ChangePixels(
        "toychange",
        before,
        after,
        idx,
        changed_px.reshape(-1),
        np.where(changed_px.reshape(-1), 5, 0).astype(np.int8),
        info={"event_types": ["a", "b", "c", "d", "crop_rotation"]},
    )
    res = evaluate.evaluate_change(ds, _angle_embedder, seed=0, bootstrap=5)
    assert res["task"] == "change" and res["n_changed"] == 150
    assert res["embedding"]["auc"] > 0.95
    assert res["best_baseline"]["auc"] > 0.95
    assert set(res["features"]) == {"median_composite", "designed"}
    assert res["paired"]["n"] == 5 and "crop_rotation" in res["per_event"]
    from evaluation.report import results_markdown

    assert "| crop_rotation | 150 |" in results_markdown(res)


def test_run_fuel_moisture_with_a_stand_in_embedder(tmp_path, realdata_dir, monkeypatch):
    mod = types.ModuleType("fm_stand_in")
    mod.embed = _composite_embedder
    monkeypatch.setitem(sys.modules, "fm_stand_in", mod)
    argv = ["--dataset", "fuel_moisture", "--embedder", "fm_stand_in:embed", "--budgets"]
    argv += ["10,max", "--repeats", "2", "--probes", "ridge", "--out", str(tmp_path)]
    argv += ["--data-dir", str(realdata_dir / "presto_fuel_moisture")]
    assert evaluate.run(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["task"] == "regression" and res["n_test"] == 735
    assert set(res["features"]) == {"median_composite", "designed", "pca64", "xy", "raw_series"}
    # Fuel moisture (test sd 36.8 %) from real inputs: clearly better than the mean, far
    # from perfect (the designed baselines reach MAE ~22 %, R^2 ~0.4 with all samples).
    best = res["best_baseline"]["max"]
    assert 15.0 < best["mae"] < 30.0 and 0.1 < best["r2"] < 0.7
    emb = res["embedding"]["max"]["ridge"]
    assert 15.0 < emb["mae"][0] < 35.0
    assert res["paired"]["10"]["mae"]["n"] == 2


@pytest.mark.parametrize("variant", ["s2", "s2dem"])
def test_eolearn_like_for_like_variants(realdata_dir, variant):
    ds = datasets.load_dataset(
        f"eolearn:{variant}", data_dir=realdata_dir / "eolearn_slovenia", max_test=200
    )
    assert ds.name == f"eolearn:{variant}" and ds.extra_series == {}
    assert ("cop_dem" in ds.observations) == (variant == "s2dem")
    names = baselines.designed_feature_names(ds.observations, ds.extra_series)
    # Ten S2 bands x 15 statistics, and the DEM's two bands only where both sides see it.
    assert len(names) == 150 + (2 if variant == "s2dem" else 0)
    with pytest.raises(ValueError, match="eolearn:s2dem"):
        datasets.load_dataset("eolearn:ndvi", data_dir=realdata_dir / "eolearn_slovenia")


@pytest.mark.parametrize("variant", ["", ":s2", ":s2dem"])
def test_eolearn_validation_split_reads_the_train_pool_only(realdata_dir, variant):
    d = realdata_dir / "eolearn_slovenia"
    full = datasets.load_dataset(f"eolearn{variant}", data_dir=d)
    val = datasets.load_dataset(f"eolearn{variant}:val", data_dir=d)
    assert val.name == f"eolearn{variant}:val" and "validation" in val.info["split"]
    # Every pixel comes from the full set's train pool, with its label; no test pixel.
    pos = {int(p): i for i, p in enumerate(full.pixel_index)}
    rows = np.array([pos[int(p)] for p in val.pixel_index])
    assert not full.is_test[rows].any()
    np.testing.assert_array_equal(val.labels, full.labels[rows])
    if variant == "":  # the NDVI pseudo-band follows its pixels
        np.testing.assert_array_equal(
            val.extra_series["ndvi"].values, full.extra_series["ndvi"].values[:, rows]
        )
    # The sides: no 8-neighbours across them (the 1 px buffer), the counts of the docstring.
    w = full.observations.spatial_shape[1]
    r, c = np.divmod(val.pixel_index, w)
    fit, held = ~val.is_test, val.is_test
    gap = np.maximum(abs(r[fit, None] - r[None, held]), abs(c[fit, None] - c[None, held]))
    assert gap.min() >= 2
    names = {v: k for k, v in val.class_names.items()}
    counts = {
        n: (int((val.labels[fit] == names[n]).sum()), int((val.labels[held] == names[n]).sum()))
        for n in ("forest", "grassland", "shrubland", "artificial surface")
    }
    assert counts == {
        "forest": (544, 410),
        "grassland": (394, 516),
        "shrubland": (57, 47),
        "artificial surface": (16, 13),
    }
    with pytest.raises(ValueError, match=r"eolearn\[:s2\|:s2dem\]\[:val\]"):
        datasets.load_dataset("eolearn:s2:dem:val", data_dir=d)


def test_fine_group_labels_by_hand():
    lab = np.array([[1, 2, 3], [4, 5, 6], [7, 2, 4]])
    crops, ids = datasets.fine_group_labels(lab, "crops")
    assert ids == [4, 5, 6]
    np.testing.assert_array_equal(crops, [[0, 0, 0], [4, 5, 6], [0, 0, 4]])
    forests, _ = datasets.fine_group_labels(lab, "forests")
    np.testing.assert_array_equal(forests, [[0, 2, 3], [0, 0, 0], [0, 2, 0]])
    with pytest.raises(ValueError, match="crops"):
        datasets.fine_group_labels(lab, "wetlands")


def test_heldout_footprint_is_disjoint_from_the_pretraining_one():
    import simulation

    for biome in ("tropical", "temperate"):
        bbox = [float(v) for v in datasets.heldout_sim_bbox(biome, 2.56).split(",")]
        held = simulation.make_region(seed=303, years=[2021], biome=biome, bbox=bbox)
        demo = simulation.make_region(seed=11, years=[2023], biome=biome, size_km="5.12x2.56")
        (hw,), (dw,) = held.windows, demo.windows
        assert hw.epsg == dw.epsg
        # 40 km east of the demo centre; both about 2.56 km wide.
        assert hw.x0 - dw.x0 == pytest.approx(40_000 + 2560 - 1280, abs=130)
        assert 2500 <= hw.width * 10 <= 2700 and hw.x0 > dw.x0 + dw.width * 10


def test_heldout_sim_argv_parses_for_both_biomes(tmp_path):
    """The tropical footprint lies west of Greenwich and south of the equator: its box
    starts with '-' and still reaches simulate as the box (it once read as an option)."""
    from beam_jobs import flags

    for biome in ("tropical", "temperate"):
        argv = datasets.heldout_sim_argv(tmp_path, 303, biome, size_km=2.56, sources=None)
        args = flags.simulate_parser().parse_args(argv)
        assert args.bbox == datasets.heldout_sim_bbox(biome, 2.56)
        assert (args.years, args.seed, args.biome) == ("2021,2022", 303, biome)
    assert datasets.heldout_sim_bbox("tropical", 2.56).startswith("-")


def test_peak_lai_truth():
    import simulation
    from simulation import world as W

    region = simulation.make_region(seed=5, years=[2021], biome="temperate", size_km=0.48)
    (win,) = region.windows
    lai = simulation.peak_lai(region, win, 2021)
    lc = simulation.landcover(region, win, 2021)
    assert lai.shape == win.shape and np.isfinite(lai).all() and lai.min() >= 0
    # Sampled only on day 0 (step 365): the LAI of January 1st at noon, edges mixed.
    jan = simulation.peak_lai(region, win, 2021, step_days=365.0)
    world, f = W.get_world(region, win.epsg), W.window_fields(region, win)
    t = W.year_start_ms(2021) + W.MS_PER_DAY // 2
    want = W.surface_state(region, world, f, None, t).lai
    e = f.edge
    want[e] = (
        f.frac1[e] * want[e]
        + (1 - f.frac1[e]) * W.surface_state(region, world, f, e, t, second=True).lai
    )
    np.testing.assert_allclose(jan.reshape(-1), want, rtol=1e-6)
    assert (lai >= jan - 1e-6).all()
    # Forest canopies peak far above built-up ground.
    forest, built = np.isin(lc, [2, 3]), lc == 10
    if forest.any() and built.any():
        assert np.median(lai[forest]) > np.median(lai[built]) + 1.0


def test_sample_split_pixels_caps_each_side():
    split = datasets.block_split((40, 40), 8, 0)
    mask = np.ones((40, 40), bool)
    idx, is_test = datasets.sample_split_pixels(mask, split, seed=0, max_train=50, max_test=30)
    assert (~is_test).sum() == 50 and is_test.sum() == 30
    flat = split.reshape(-1)
    assert (flat[idx[is_test]] == datasets.SPLIT_TEST).all()
    assert (flat[idx[~is_test]] == datasets.SPLIT_TRAIN).all()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["simlai:77:temperate", "simfine:77:temperate:crops"])
def test_run_heldout_sim_tasks_end_to_end(tmp_path, spec):
    cache = tmp_path.parent / "heldout_cache"
    argv = ["--dataset", spec, "--sim-size-km", "0.96", "--sim-sources", "sentinel2_l2a"]
    argv += ["--block", "8", "--repeats", "2", "--cache-dir", str(cache), "--out", str(tmp_path)]
    assert evaluate.run(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["info"]["years"] == [2021, 2022]
    if spec.startswith("simlai"):
        assert res["task"] == "regression" and res["best_baseline"]["max"]["r2"] > 0.5
    else:
        assert set(res["classes"].values()) <= {
            "winter_cereal",
            "summer_maize",
            "winter_barley_then_catch_crop",
        }
