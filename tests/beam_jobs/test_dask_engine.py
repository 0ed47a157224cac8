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


def _worker_of(x):
    import time

    time.sleep(0.5)
    return distributed.get_worker().address


def test_work_units_spread_over_the_workers(dask_address, tmp_path):
    """Four elements of a Create run on both workers (Beam's runner makes a Create of up to
    128 elements one partition: one task on one worker)."""
    out = str(tmp_path / "workers.json")
    with runner.create_pipeline(runner.pipeline_options(_dask(dask_address))) as p:
        _ = (
            p
            | beam.Create(range(4))
            | beam.Reshuffle()
            | beam.Map(_worker_of)
            | beam.combiners.ToList()
            | beam.Map(_write_lines(out))
        )
    workers = json.loads(Path(out).read_text())
    assert len(workers) == 4 and len(set(workers)) == 2


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


class _Touch(beam.DoFn):
    """Appends each element it processes to a file: how many times did it run?"""

    def __init__(self, path: str):
        self._path = path

    def process(self, x):
        with open(self._path, "a") as f:
            f.write(f"{x}\n")
        yield x


def test_side_inputs_do_not_rerun_their_upstream(dask_address, tmp_path):
    """A DoFn upstream of two side inputs and a main output runs once per element (Beam's
    runner ran it three times: once per side input, once for the leaf)."""
    calls, out = tmp_path / "calls.txt", str(tmp_path / "out.json")
    with runner.create_pipeline(runner.pipeline_options(_dask(dask_address))) as p:
        xs = p | beam.Create(range(6)) | beam.Reshuffle() | beam.ParDo(_Touch(str(calls)))
        total = xs | "Sum" >> beam.CombineGlobally(sum)
        n = xs | "Count" >> beam.combiners.Count.Globally()
        side = {"t": beam.pvalue.AsSingleton(total), "n": beam.pvalue.AsSingleton(n)}
        _ = (
            xs
            | "Join" >> beam.Map(lambda x, t, n: [x, t, n], **side)
            | "All" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_lines(out))
        )
    assert json.loads(Path(out).read_text()) == [[x, 15, 6] for x in range(6)]
    assert sorted(int(v) for v in calls.read_text().split()) == list(range(6))


@pytest.mark.slow
def test_build_training_data_on_dask_equals_fnapi(dask_address, catalog, tmp_path):
    """tf.Transform's analyzers (side inputs, CoGroupByKey, Reshuffle) on the cluster: the
    same shards, stats.json, dead letters and transform variables, byte for byte.
    (saved_model.pb is not compared: its traced functions carry TF's process-wide name
    counters, `__inference_signature_wrapper_4043` on a worker, `_10597` in this process.)"""
    from beam_jobs import build_training_data as btd

    args = ["--stac", str(catalog), "--years", "2023", "--num-samples", "6"]
    args += ["--patch-size", "8", "--max-frames", "4", "--eval-fraction", "0.34"]
    assert btd.run([*args, "--out", str(tmp_path / "fn")]) == 0
    assert btd.run([*args, "--out", str(tmp_path / "dask"), *_dask(dask_address)]) == 0
    suffixes = (".tfrecord.gz", "stats.json", "deadletter.jsonl", ".pbtxt")
    suffixes += ("variables.index", "variables.data-00000-of-00001")
    fn = _digests(tmp_path / "fn", suffixes)
    assert len(fn) == 2 + 1 + 1 + 3  # a train and an eval shard
    assert _digests(tmp_path / "dask", suffixes) == fn
    stats = json.loads((tmp_path / "fn" / "stats.json").read_text())
    assert stats["examples"] == {"train": 4, "eval": 2}
