"""`earthembed evaluate`: the harness on a toy data set, embedders, the command end to end."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from toy_data import index_embedder, toy_dataset, toy_window_obs

import evaluation
from beam_jobs.io import stac
from evaluation import evaluate, probes, report


@pytest.fixture(scope="module")
def toy_results():
    ds = toy_dataset()
    return ds, evaluate.evaluate(ds, index_embedder, (1, 10, None), repeats=3, seed=0)


def test_evaluate_results_keys_and_shapes(toy_results, tmp_path):
    ds, res = toy_results
    for key in ("dataset", "features", "best_baseline", "embedding", "error_reduction"):
        assert key in res
    assert res["dataset"] == "toy"
    assert list(res["features"]) == list(evaluation.BASELINES)
    budgets = ["1", "10", "max"]
    for entry in [*res["features"].values(), res["embedding"]]:
        assert list(entry) == budgets
        for bk in budgets:
            assert list(entry[bk]) == list(evaluation.PROBES)
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
        assert res["error_reduction"][bk] == probes.error_reduction(emb, best["balanced_accuracy"])
    # The stripes separate perfectly in S2 reflectance.
    assert res["features"]["median_composite"]["10"]["knn1"][0] == 1.0
    paths = report.write_report(res, tmp_path)
    on_disk = json.loads(paths["json"].read_text())
    assert (
        on_disk["features"]["designed"]["max"]["logreg"]
        == res["features"]["designed"]["max"]["logreg"]
    )
    md = paths["md"].read_text()
    assert "## Budget 10 per class" in md and "| median_composite |" in md
    assert "Paired (embedding" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_paired_statistics(toy_results):
    ds, res = toy_results
    for bk, n in (("1", 3), ("10", 3), ("max", 1)):
        p = res["paired"][bk]
        best = res["best_baseline"][bk]
        assert (p["baseline"], p["baseline_probe"], p["n"]) == (best["name"], best["probe"], n)
        # The mean of the per-draw differences is the difference of the two means.
        e_mean = res["embedding"][bk][p["embedding_probe"]][0]
        assert p["diff_mean"] == pytest.approx(e_mean - best["balanced_accuracy"])
        assert p["diff_ci95"][0] <= p["diff_mean"] <= p["diff_ci95"][1]
    assert res["paired"]["max"]["diff_sd"] == 0.0


def test_evaluate_class_recall_and_its_table(toy_results):
    ds, res = toy_results
    rec = res["class_recall"]
    assert set(rec) == {*evaluation.BASELINES, "embedding"}
    for name, per_budget in rec.items():
        for bk, per_probe in per_budget.items():
            for p, per_class in per_probe.items():
                assert set(per_class) == {"1", "2", "3"}
                # balanced accuracy is the mean recall, draw by draw and so on average
                assert np.mean(list(per_class.values())) == pytest.approx(
                    (res["embedding"] if name == "embedding" else res["features"][name])[bk][p][0]
                )
    md = report.results_markdown(res)
    assert "## Recall per class" in md
    # Each cell: the best baseline's recall (the stripes separate perfectly in S2
    # reflectance: 1.000) / the embedding's with its best probe.
    for c, name in res["classes"].items():
        cells = [
            f"1.000 / {rec['embedding'][bk][probes.best_probe(res['embedding'][bk])[0]][c]:.3f}"
            for bk in ("1", "10", "max")
        ]
        assert f"| {name} | " + " | ".join(cells) + " |" in md


def test_embed_pixels_without_a_source():
    ds = toy_dataset(16, 16)
    seen = []

    def spy(obs):
        seen.append(sorted(obs.sources))
        return index_embedder(obs)

    evaluate.embed_pixels(spy, ds, ["cop_dem"])
    assert seen == [["sentinel2_l2a"]]
    assert sorted(ds.observations.sources) == ["cop_dem", "sentinel2_l2a"]  # not modified
    with pytest.raises(ValueError, match="sentinel1"):
        evaluate.embed_pixels(spy, ds, ["sentinel1"])
    res = evaluate.evaluate(ds, spy, (2,), repeats=1, probes=("knn1",), embed_without=["cop_dem"])
    assert res["embed_without"] == ["cop_dem"]


def test_evaluate_without_embedder_has_no_embedding_keys():
    ds = toy_dataset(24, 24)
    res = evaluate.evaluate(ds, None, (2,), repeats=2, probes=("knn1",))
    assert "embedding" not in res and "error_reduction" not in res
    assert list(res["features"]["xy"]) == ["2"] and list(res["features"]["xy"]["2"]) == ["knn1"]


def test_embed_pixels_follows_the_row_major_contract():
    ds = toy_dataset(16, 16)
    emb = evaluate.embed_pixels(index_embedder, ds)
    np.testing.assert_array_equal(emb[:, 0], ds.pixel_index.astype(np.float32))
    with pytest.raises(ValueError, match="contract"):
        evaluate.embed_pixels(lambda obs: np.zeros((3, 2)), ds)


def test_load_embedder(tmp_path, monkeypatch):
    assert evaluate.load_embedder("baselines") is None
    mod = types.ModuleType("toy_embedder_mod")
    mod.embed = index_embedder
    monkeypatch.setitem(sys.modules, "toy_embedder_mod", mod)
    assert evaluate.load_embedder("toy_embedder_mod:embed") is index_embedder
    with pytest.raises(ValueError, match="module:function"):
        evaluate.load_embedder("not a spec")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    if importlib.util.find_spec("model") is not None:
        import model

        if not hasattr(model, "load_bundle"):
            with pytest.raises(ValueError, match="load_bundle"):
                evaluate.load_embedder(str(bundle))


# ---------------------------------------------------------------------------------- command


def test_help_imports_nothing_heavy_and_shows_every_default():
    import subprocess

    code = (
        "import sys\n"
        "from beam_jobs import cli\n"
        "try:\n"
        "    cli.main(['evaluate', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = ('numpy', 'schemas', 'sklearn', 'jax', 'tensorflow', 'model', 'apache_beam',\n"
        "         'rasterio', 'pyarrow', 'matplotlib', 'beam_jobs.io')\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(evaluation.__file__).resolve().parents[1],
    ).stdout
    assert "LOADED []" in out
    assert "usage: earthembed evaluate" in out
    for action in evaluate.build_parser()._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
    # The defaults of today's command, each shown by the help.
    defaults = {
        "--embedder": "baselines",
        "--budgets": "auto",
        "--repeats": "30",
        "--seed": "0",
        "--max-per-class": "1000",
        "--max-test": "4000",
        "--sim-size-km": "2.56",
        "--sim-year": "2023",
        "--probes": "auto",
    }
    help_text = " ".join(evaluate.build_parser().format_help().split())
    for option, value in defaults.items():
        assert f"{option} " in help_text and f"(default: {value})" in help_text, option
    args = evaluate.build_parser().parse_args(["--dataset", "eolearn", "--out", "o"])
    assert {k: v for k, v in vars(args).items() if k not in ("dataset", "out")} == {
        "embedder": "baselines",
        "budgets": "auto",
        "repeats": 30,
        "seed": 0,
        "block": None,
        "cache_dir": None,
        "data_dir": None,
        "max_per_class": 1000,
        "max_test": 4000,
        "sim_size_km": 2.56,
        "sim_year": 2023,
        "probes": "auto",
        "sim_sources": "",
        "embed_without": "",
        "verbose": False,
    }


# ---------------------------------------------------------------------------------- end to end


def test_run_eolearn_end_to_end(tmp_path, realdata_dir):
    pytest.importorskip("beam_jobs.io.realdata")
    args = ["--dataset", "eolearn", "--repeats", "2", "--out", str(tmp_path)]
    assert evaluate.run([*args, "--data-dir", str(realdata_dir / "eolearn_slovenia")]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset"] == "eolearn"
    assert set(res["classes"].values()) >= {"forest", "grassland"}
    assert set(res["features"]) == set(evaluation.BASELINES)
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
    pts = points.window_to_points(toy_window_obs(label_map))
    points.write_point_table(pts, tmp_path / "obs.parquet")
    names = np.array(["bare", "crop", "tree"])[label_map.reshape(-1) - 1]
    pq.write_table(
        pa.table({"point_id": pts.point_ids.astype(str), "label": names}),
        tmp_path / "labels.parquet",
    )
    mod = types.ModuleType("toy_embedder_mod")
    mod.embed = index_embedder
    monkeypatch.setitem(sys.modules, "toy_embedder_mod", mod)
    spec = f"points:{tmp_path / 'obs.parquet'}:{tmp_path / 'labels.parquet'}"
    argv = ["--dataset", spec, "--embedder", "toy_embedder_mod:embed", "--block", "4"]
    assert evaluate.run([*argv, "--repeats", "2", "--out", str(tmp_path / "out")]) == 0
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
    assert evaluate.run([*argv, "--repeats", "2", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset"] == "sim:7:temperate" and len(res["classes"]) >= 2
    assert (tmp_path / "cache" / "sim_7_temperate_640m_2023" / "catalog.json").exists()
    # the reader's datasets (and GDAL's blocks of them) were closed once the data set loaded
    assert len(stac._DATASETS) == 0
    chance = 1 / len(res["classes"])
    assert res["best_baseline"]["max"]["balanced_accuracy"] > chance + 0.2
    # A rerun reuses the cached simulation (and gives the same numbers).
    assert evaluate.run([*argv, "--repeats", "2", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["features"] == res["features"]
