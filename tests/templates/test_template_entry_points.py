"""templates/<job>/main.py as the flex-template launcher runs it, on the DirectRunner.

The launcher runs `python main.py --name=value ...` with the template parameters plus Beam's
options (among them Dataflow's `--region`). Here the example parameters' gs:// paths are
rewritten into a local folder and the runner is the DirectRunner (the FnApiRunner, see
beam_jobs/runner.py).
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import runpy
import sys
from pathlib import Path

import pytest

from beam_jobs import cloud

TEMPLATES = cloud.REPO_ROOT / "templates"
# What the launcher adds to the template parameters, reduced to what a local run accepts.
BEAM_ARGS = ["--runner=DirectRunner", "--project=my-project", "--region=europe-west1"]


def _examples(job: str, gcs_root: Path | None = None) -> dict[str, str]:
    params = json.loads((TEMPLATES / job / "example_parameters.json").read_text())
    if gcs_root is not None:
        params = {k: v.replace("gs://", f"{gcs_root}/") for k, v in params.items()}
    return params


def _launch(job: str, params: dict[str, str], monkeypatch) -> None:
    """Run templates/JOB/main.py the way the launcher does."""
    main = TEMPLATES / job / "main.py"
    argv = [f"--{k}={v}" for k, v in params.items()] + BEAM_ARGS
    monkeypatch.setattr(sys, "argv", [str(main), *argv])
    runpy.run_path(str(main), run_name="__main__")


def _module(job: str):
    name = f"beam_jobs.{job}"
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not written yet (issue #6)")
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def gcs_root(tmp_path_factory) -> Path:
    """Stands in for gs://: gs://my-bucket/x is GCS_ROOT/my-bucket/x."""
    return tmp_path_factory.mktemp("gcs")


@pytest.fixture(scope="module")
def simulated(gcs_root) -> Path:
    """The simulate template's example (0.64 km, one year), launched through its main.py."""
    with pytest.MonkeyPatch.context() as mp:
        _launch("simulate", _examples("simulate", gcs_root), mp)
    return Path(_examples("simulate", gcs_root)["out"])


@pytest.mark.parametrize("job", cloud.JOBS)
def test_entry_point_hands_the_parameters_to_the_jobs_run(job, monkeypatch):
    module = _module(job)
    seen = []
    monkeypatch.setattr(module, "run", lambda argv=None: seen.append(argv) or 0)
    params = _examples(job)
    _launch(job, params, monkeypatch)
    (argv,) = seen
    args, beam_args = module.build_parser().parse_known_args(argv)
    options = cloud.job_options(module.build_parser())
    for name, value in params.items():
        action = options[name]
        parsed = getattr(args, action.dest)
        if action.nargs == 0:  # a flag: true or false
            assert parsed is (value == "true"), name
        elif action.nargs in ("+", "*"):  # one template parameter is one value of the list
            assert parsed == [value], name
        else:
            assert parsed == (action.type or str)(value), name
    assert sorted(beam_args) == sorted(BEAM_ARGS)


@pytest.mark.slow
def test_simulate_entry_point_writes_the_catalog(simulated):
    params = json.loads((simulated / "sim_params.json").read_text())
    opts = params["options"]
    assert (opts["size_km"], opts["years"], opts["cloud_cover"]) == ("0.64", "2023", 0.3)
    assert (opts["region"], opts["verbose"]) == ("demo", True)
    assert params["beam_args"] == BEAM_ARGS  # Dataflow's --region among them, in order
    assert params["region"]["years"] == [2023]
    catalog = json.loads((simulated / "catalog.json").read_text())
    children = {link["href"].split("/")[-2] for link in catalog["links"] if link["rel"] == "child"}
    assert children == {"sentinel2_l2a", "sentinel1", "landsat_c2l2", "cop_dem", "era5_land"}
    assert (simulated / "labels" / "landcover_2023.tif").is_file()


@pytest.mark.slow
def test_build_training_data_entry_point_on_the_simulated_catalog(simulated, gcs_root, monkeypatch):
    params = _examples("build_training_data", gcs_root)
    assert params["stac"] == str(simulated / "catalog.json")
    assert (params["num_samples"], params["patch_size"], params["max_frames"]) == ("2", "8", "2")
    _launch("build_training_data", params, monkeypatch)
    out = Path(params["out"])
    stats = json.loads((out / "stats.json").read_text())
    # 2 samples, eval fraction 0.1 -> round(0.2) = 0 in eval
    assert stats["examples"] == {"train": 2, "eval": 0}
    assert (stats["patch_size"], stats["max_frames"], stats["years"]) == (8, 2, [2023])
    # the static DEM: one frame of 8 x 8 valid pixels per example
    assert stats["cop_dem"]["elevation"]["count"] == 2 * 8 * 8
    # at most 2 frames of 8 x 8 pixels per example for a time series
    assert 0 < stats["sentinel2_l2a"]["B04"]["count"] <= 2 * 2 * 8 * 8
    records = 0
    for shard in out.glob("train-*.tfrecord.gz"):
        with gzip.open(shard, "rb") as f:
            data = f.read()
        while data:  # TFRecord framing: u64 length, u32 crc, payload, u32 crc
            n = int.from_bytes(data[:8], "little")
            data = data[12 + n + 4 :]
            records += 1
    assert records == 2


@pytest.mark.slow
def test_cluster_entry_point_on_tiny_tiles(gcs_root, monkeypatch):
    """An analysis template end to end: the cluster example's parameters on two 40 x 40 px
    tiles of five well-separated vector classes (8-column stripes): every stripe is one
    cluster, and the outputs name the tiles' model and period."""
    import numpy as np
    import rasterio
    from affine import Affine

    from beam_jobs.io.embeddings import write_embedding_cog

    params = _examples("cluster", gcs_root)
    assert (params["k"], params["period"]) == ("5", "2023")
    centres = np.eye(64, dtype=np.float32)[:5]
    stripes = np.repeat(np.arange(5), 8)  # column -> class
    rng = np.random.default_rng(0)
    for i in range(2):
        emb = centres[np.broadcast_to(stripes, (40, 40))] + 0.05 * rng.random((40, 40, 64))
        emb /= np.linalg.norm(emb, axis=2, keepdims=True)
        write_embedding_cog(
            Path(params["embeddings"]) / "2023" / "31N" / f"t{i}.tif",
            emb.astype(np.float32),
            Affine(10.0, 0.0, 600_000.0 + 400 * i, 0.0, -10.0, 5_600_000.0),
            32631,
            tags={"model_version": "m-1", "model_sha256": "ab" * 32},
        )
    _launch("cluster", params, monkeypatch)
    out = Path(params["out"])
    for i in range(2):
        with rasterio.open(out / f"t{i}_cluster.tif") as src:
            labels, tags = src.read(1), src.tags()
        assert (labels == labels[:1]).all()  # columns are constant
        assert sorted(set(labels[0])) == [1, 2, 3, 4, 5]
        assert all(len(set(labels[0, stripes == c])) == 1 for c in range(5))
        assert (tags["source_model_version"], tags["source_period"]) == ("m-1", "2023")
    report = json.loads((out / "clusters.json").read_text())
    assert report["sample_size"] == 2 * 40 * 40 and sorted(report["sample_counts"]) == [640] * 5
    assert (out / "cluster.png").stat().st_size > 5_000
