"""The second engine: jobs on a dask.distributed LocalCluster (2 worker processes, 127.0.0.1)
through `--runner DaskRunner` give the FnApiRunner's outputs byte for byte.

Beam's own DaskRunner mixes a ParDo's tagged outputs into one bag and computes only the last
transform; `test_tagged_outputs_and_every_branch` fails on it (checked) and passes on ours.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import apache_beam as beam
import pytest

from beam_jobs import embed, inference, runner

distributed = pytest.importorskip("dask.distributed")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

SIM_BBOX = "4.643759,50.586682,4.660491,50.588896"  # two 64 x 30 px granules (test_embed's)


@pytest.fixture(scope="module")
def dask_address():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    try:
        yield cluster.scheduler_address
    finally:
        client.close()
        cluster.close()


def _dask(address: str) -> list[str]:
    return ["--runner", "DaskRunner", "--dask_client_address", address]


def _write_lines(path: str):
    def write(values):
        Path(path).write_text(json.dumps(sorted(values)))

    return write


class _SplitOdd(beam.DoFn):
    def process(self, x):
        if x % 2:
            yield beam.pvalue.TaggedOutput("odd", x)
        else:
            yield x


def test_runner_alias():
    opts = runner.pipeline_options(["--runner", "DaskRunner"])
    assert opts.get_all_options()["runner"] == "beam_jobs.dask_engine.DaskRunner"
    assert runner.pipeline_options([]).get_all_options()["runner"] is None


def test_tagged_outputs_and_every_branch(dask_address, tmp_path):
    """Each consumer of a tagged output sees only its tag; a side branch that feeds nothing
    (here the odd numbers written to a file) runs too."""
    odd_file, even_file = str(tmp_path / "odd.json"), str(tmp_path / "even.json")
    with runner.create_pipeline(runner.pipeline_options(_dask(dask_address))) as p:
        parts = p | beam.Create(range(10)) | beam.ParDo(_SplitOdd()).with_outputs("odd", main="m")
        _ = (
            parts.odd
            | "AllOdd" >> beam.combiners.ToList()
            | "WriteOdd" >> beam.Map(_write_lines(odd_file))
        )
        groups = (
            parts.m
            | "Shuffle" >> beam.Reshuffle()
            | "Key" >> beam.Map(lambda x: (x % 4, x))
            | beam.GroupByKey()
            | "Sort" >> beam.MapTuple(lambda k, vs: [k, sorted(vs)])
        )
        _ = (
            groups
            | "All" >> beam.combiners.ToList()
            | "WriteEven" >> beam.Map(_write_lines(even_file))
        )
    assert json.loads(Path(odd_file).read_text()) == [1, 3, 5, 7, 9]
    assert json.loads(Path(even_file).read_text()) == [[0, [0, 4, 8]], [2, [2, 6]]]


@pytest.fixture(scope="module")
def catalog(embed_sim_catalog) -> Path:
    return embed_sim_catalog  # conftest.py: test_embed's region (SIM_BBOX), S2 and the DEM


def _digests(folder: Path, suffixes: tuple[str, ...]) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name.endswith(suffixes)
    }


def test_embed_on_dask_equals_fnapi(dask_address, catalog, tmp_path, shipped_bundle):
    args = ["--stac", str(catalog), "--bbox", SIM_BBOX, "--period", "2023-05-01/2023-08-01"]
    args += ["--tile-size", "64", "--chip-size", "32", "--halo", "8", "--batch-size", "2"]
    args += ["--model", str(shipped_bundle)]
    inference.clear_bundle_cache()
    assert embed.run([*args, "--out", str(tmp_path / "fn")]) == 0
    assert embed.run([*args, "--out", str(tmp_path / "dask"), *_dask(dask_address)]) == 0
    inference.clear_bundle_cache()
    fn = _digests(tmp_path / "fn", (".tif", ".parquet"))
    assert len(fn) == 2 * 3  # two tiles: COG, quality sidecar, GeoParquet
    assert _digests(tmp_path / "dask", (".tif", ".parquet")) == fn
