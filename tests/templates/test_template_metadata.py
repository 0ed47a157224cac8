"""templates/<job>/metadata.json against each job's own parser, and every regex on values."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re

import pytest

from beam_jobs import cloud
from schemas import sensors

TEMPLATES = cloud.REPO_ROOT / "templates"
FLAG = "^(true|false)$"
KEYS = {"name", "label", "helpText", "isOptional", "regexes"}

# Values each parameter must accept beyond its documented example, and must reject; keyed by
# name, or by job.name where a job's parameter differs (embed_points writes one file).
GOOD = {
    "embed_points.out": ["gs://my-bucket/points.parquet", "gs://my-bucket/a/b.parquet"],
    "out": ["gs://my-bucket", "gs://my-bucket/a/b/", "gs://my.bucket-1/x_y=z/v1.2"],
    "stac": [
        "gs://my-bucket/catalog.json",
        "gs://my-bucket/a/b/catalog.json",
        "gs://b-1/i.parquet",
    ],
    "stac_api": [
        "https://planetarycomputer.microsoft.com/api/stac/v1",
        "https://stac.dataspace.copernicus.eu/v1/",
        "https://landsatlook.usgs.gov/stac-server",
        "https://example.com:8443/stac",
    ],
    "collections": [
        "sentinel-2-l2a",
        "sentinel-2-c1-l2a,landsat-c2-l2,cop-dem-glo-30",
        "HLSS30.v2.0",
    ],
    "observations": ["gs://my-bucket/obs.parquet"],
    "aoi": ["gs://my-bucket/aoi.geojson", "gs://my-bucket/a/aoi.json"],
    "model": ["gs://my-bucket/models/tiny", "gs://my-bucket/m/", "/opt/earthembed/weights/base"],
    "bbox": ["4.3,50.8,4.5,50.9", "-70.5,-10.25,-70.4,-10.2", "179,-90,180,90"],
    "years": ["2023", "2023,2024", "2022-2024", "2019,2021-2023"],
    "year": ["2023", "1984"],
    "period": ["2023-01-01/2024-01-01", "2023-03-31/2023-12-01"],
    "size_km": ["0.64", "5", "5.12x2.56"],
    "seed": ["0", "42"],
    "halo": ["0", "16"],
    "subperiods": ["0", "3"],
    "cloud_cover": ["0", "0.4", "1", "1.0"],
    "eval_fraction": ["0", "0.25", "1"],
    "sources": [",".join(sensors.SENSORS), "sentinel2_l2a"],
    "formats": ["cog", "cog,parquet,stac", "parquet"],
    # the analysis jobs (and index)
    "embeddings": ["gs://my-bucket/emb", "gs://my-bucket/aef/", "gs://my-bucket/emb/catalog.json"],
    "points": ["gs://my-bucket/sites.parquet", "gs://my-bucket/a/sites.csv"],
    "sample.out": ["gs://my-bucket/at_points.parquet", "gs://my-bucket/a/b.parquet"],
    "quicklook.out": ["gs://my-bucket/ql.png", "gs://my-bucket/a/b.png"],
    "id_column": ["point_id", "_id", "ID2"],
    "query": ["4.65,50.585", "-70,-10.5", "179.9,-89.99"],
    "query_file": ["gs://my-bucket/q.parquet", "gs://my-bucket/q.csv"],
    "label_points": ["gs://my-bucket/labels/points_2023.parquet", "gs://my-bucket/l.csv"],
    "label_column": ["class_name", "landcover"],
    "target": ["lai", "agb_t_ha"],
    "k": ["1", "10", "100000"],
    "cluster.k": ["2", "9", "10", "99", "100", "199", "249", "254"],
    "dtype": ["float32", "int16"],
    "min_confidence": ["0", "0.5", "1", "1.0"],
    "block": ["1", "512"],
    "periods": [
        "2023,2024",
        "20230401_20240401,20240401_20250401",
        "2023-01-01/2024-01-01,2024-01-01/2025-01-01",
        "2022,20230401_20240401",
    ],
    "threshold": ["0.8", "-0.25", "0", "1", "-1"],
    "min_area_ha": ["0", "2", "0.5", "100"],
    "sample_size": ["1", "5000"],
    "method": ["knn", "logistic", "forest"],
    "cv_block": ["1000", "250.5"],
    "folds": ["2", "5", "10"],
    "bands": ["A01,A16,A09", "A00,A63,A32"],
    "kind": ["exact", "ivf-fp16", "ivf-sq8"],
    "shard_vectors": ["1", "500000000"],
    "train_size": ["131072"],
    "nlist": ["1", "1024"],
    "nprobe": ["1", "64"],
}
# An analysis job's period: a year, a label or ISO dates (embed's period takes dates only).
ANALYSIS_PERIODS = ["2023", "20230401_20240401", "2023-01-01/2024-01-01", "1999"]
ANALYSIS_JOBS = ("sample", "similarity", "index", "cluster", "classify", "quicklook")
GOOD.update({f"{job}.period": ANALYSIS_PERIODS for job in ANALYSIS_JOBS})
_GCS_BAD = [
    "gs://my-bucket/../x",
    "gs://my-bucket/a/../../x",
    "gs://my-bucket/./x",
    "gs://my-bucket/.hidden",
    "/tmp/x",
    "s3://my-bucket/x",
    "gs://my bucket/x",
    "gs://my-bucket/a b",
    "gs://b/x",
    "gs://My-Bucket/x",
    "",
]
_INT_BAD = ["-1", "1.5", "abc", "", "1e3"]
BAD = {
    "out": _GCS_BAD,
    "embed_points.out": [*_GCS_BAD, "gs://my-bucket/emb", "gs://my-bucket/emb.csv"],
    "model": [v for v in _GCS_BAD if v != "/tmp/x"] + ["weights/tiny", "/opt/../etc", "/"],
    "stac": [*_GCS_BAD, "gs://my-bucket/catalog.txt", "https://example.com/stac"],
    "stac_api": [
        "http://earth-search.aws.element84.com/v1",  # https only on Dataflow
        "https://",
        "https://user:secret@example.com/v1",  # no credentials in templates
        "https://example.com/v1?token=secret",
        "https://example.com/../v1",
        "https://example.com/a b",
        "https://-example.com/v1",
        "gs://my-bucket/catalog.json",
        "ftp://example.com/v1",
        "",
    ],
    "collections": ["", "sentinel-2-l2a,", ",cop-dem", "a,,b", "a b", "-x", "sentinel-2-l2a;rm"],
    "observations": [*_GCS_BAD, "gs://my-bucket/obs.csv"],
    "aoi": [*_GCS_BAD, "gs://my-bucket/aoi.shp"],
    "bbox": [
        "4.3,50.8,4.5",
        "4.3;50.8;4.5;50.9",
        "a,b,c,d",
        "4.3,50.8,4.5,50.9,1",
        "4.3,,4.5,50.9",
    ],
    "years": ["20x3", "203", "2023-", "2023,,2024", "2023 2024", "23"],
    "year": ["20x3", "23", "2023,2024", "2023-2024"],
    "period": ["2023-13-01/2024-01-01", "2023-01-01", "2023/2024", "2023-01-32/2024-01-01"],
    "size_km": ["5x", "x5", "-1", "5km"],
    "seed": _INT_BAD,
    "halo": _INT_BAD,
    "subperiods": _INT_BAD,
    "tile_size": [*_INT_BAD, "0"],
    "chip_size": [*_INT_BAD, "0"],
    "batch_size": [*_INT_BAD, "0"],
    "num_samples": [*_INT_BAD, "0"],
    "patch_size": [*_INT_BAD, "0"],
    "max_frames": [*_INT_BAD, "0"],
    "read_block": [*_INT_BAD, "0"],
    "prefetch": _INT_BAD,
    "cloud_cover": ["1.5", "-0.1", "", "0.4.1"],
    "eval_fraction": ["1.5", "-0.1", ""],
    "biome": ["arctic", "", "temperate,tropical"],
    "composite": ["median", ""],
    "sources": ["modis", "sentinel2_l2a,,sentinel1", "sentinel2_l2a,"],
    "formats": ["tiff", "cog,tiff", "cog,"],
    "verbose": ["yes", "True", "1", ""],
    "overwrite": ["yes", "True", ""],
    "retry_failed": ["no", "False", ""],
    "unit_check": ["no", "False", ""],
    "bf16": ["yes", "1"],
    "share_model": ["yes", "1", ""],
    "provider": ["earth-search", "PC", "planetary-computer,cdse", ""],
    "requester_pays": ["yes", "1", ""],
    "no_sign": ["yes", "1", ""],
    "embeddings": _GCS_BAD,
    "points": [*_GCS_BAD, "gs://my-bucket/sites.json", "gs://my-bucket/sites"],
    "sample.out": [*_GCS_BAD, "gs://my-bucket/out", "gs://my-bucket/out.csv"],
    "quicklook.out": [*_GCS_BAD, "gs://my-bucket/ql", "gs://my-bucket/ql.jpg"],
    "id_column": ["", "1st", "a b", "a;b", "a-b", "x" * 129, "$(id)"],
    "query": ["4.65", "4.65,50.585,1", "4.65;50.585", "a,b", "4.65,,50", "", "4.65 50.585"],
    "query_file": [*_GCS_BAD, "gs://my-bucket/q.json"],
    "label_points": [*_GCS_BAD, "gs://my-bucket/l.geojson"],
    "label_column": ["", "class name", "c;rm", "`id`"],
    "target": ["", "1x", "a|b"],
    "k": [*_INT_BAD, "0"],
    "cluster.k": [*_INT_BAD, "0", "1", "255", "300", "1000"],
    "dtype": ["float64", "int8", ""],
    "min_confidence": ["1.5", "-0.1", "", "0.4.1", ".5"],
    "block": [*_INT_BAD, "0"],
    "periods": ["2023", "2023,", ",2024", "2023,2024,2025", "2023;2024", "2023 2024", "23,24", ""],
    "threshold": ["1.5", "-1.5", "", "0.8.1", "--0.8", "+0.8"],
    "min_area_ha": ["-1", "", "2ha", "1e3"],
    "sample_size": [*_INT_BAD, "0"],
    "method": ["svm", "", "knn,forest"],
    "cv_block": ["0", "-1", "", "1km", "0.5"],
    "folds": [*_INT_BAD, "0", "1"],
    "bands": ["A01,A16", "A01,A16,A09,A02", "A64,A01,A02", "a01,a16,a09", "1,2,3", ""],
    "pca": ["yes", "1", ""],
    "kind": ["ivf", "flat", ""],
    "shard_vectors": [*_INT_BAD, "0"],
    "train_size": [*_INT_BAD, "0"],
    "nlist": [*_INT_BAD, "0"],
    "nprobe": [*_INT_BAD, "0"],
}
_ANALYSIS_PERIOD_BAD = [
    "23",
    "20231",
    "2023_2024",
    "20231301_20240101",
    "2023/2024",
    "2023-01-01",
    "../2023",
    "",
    "2023,2024",
]
BAD.update({f"{job}.period": _ANALYSIS_PERIOD_BAD for job in ANALYSIS_JOBS})


def _metadata(job: str) -> dict:
    return json.loads((TEMPLATES / job / "metadata.json").read_text())


def _example_parameters(job: str) -> dict[str, str]:
    return json.loads((TEMPLATES / job / "example_parameters.json").read_text())


def _job_parser(job: str):
    module = f"beam_jobs.{job}"
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet (issue #6); its template waits for its parser")
    return importlib.import_module(module).build_parser()


def _values(table: dict, job: str, name: str) -> list[str] | None:
    return table.get(f"{job}.{name}", table.get(name))


def _documented_example(spec: dict) -> str:
    match = re.search(r"Example: (\S+)$", spec["helpText"])
    assert match, f"{spec['name']}: helpText must end with 'Example: VALUE'"
    return match.group(1)


@pytest.mark.parametrize("job", cloud.JOBS)
def test_metadata_is_well_formed(job):
    meta = _metadata(job)
    assert meta["name"] == f"earthembed {job.replace('_', '-')}"
    assert meta["description"]
    names = [p["name"] for p in meta["parameters"]]
    assert len(names) == len(set(names))
    for spec in meta["parameters"]:
        assert set(spec) == KEYS, spec["name"]
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec["name"])
        assert spec["label"] and spec["helpText"] and isinstance(spec["isOptional"], bool)
        assert len(spec["regexes"]) == 1
        pattern = spec["regexes"][0]
        # anchored, and only what POSIX egrep, Java and Python read alike
        assert pattern.startswith("^") and pattern.endswith("$"), spec["name"]
        assert not re.search(r"\(\?|\\[dswDSWbB]", pattern), spec["name"]
        re.compile(pattern)


def test_no_parameter_is_a_beam_pipeline_option():
    """The launcher passes every parameter as --name=value beside Beam's own options: a job
    parameter named like one of them (classify's labelled points were `labels`, Dataflow's
    job labels) would be read as both. The job keeps such a spelling as an alias only."""
    from apache_beam.options.pipeline_options import PipelineOptions

    beam = set(PipelineOptions([]).get_all_options())
    assert {"labels", "region", "project", "temp_location"} <= beam
    for job in cloud.JOBS:
        names = {p["name"] for p in _metadata(job)["parameters"]}
        assert not names & beam, f"{job}: {sorted(names & beam)} are Beam pipeline options"
    # classify's --labels still reads the points on the command line
    args, _ = _job_parser("classify").parse_known_args(
        ["--embeddings", "e", "--period", "2023", "--labels", "p.parquet", "--target", "y"]
        + ["--out", "o"]
    )
    assert args.labels == "p.parquet"


@pytest.mark.parametrize("job", cloud.JOBS)
def test_parameters_are_the_jobs_options(job):
    """Names, required/optional, flags and choices: the job's build_parser() is the truth."""
    options = cloud.job_options(_job_parser(job))
    excluded = cloud.EXCLUDED_OPTIONS.get(job, {})
    assert set(excluded) <= set(options), "an excluded option the job does not have"
    for name in excluded:
        assert options[name].default is not None and not options[name].required
    specs = {p["name"]: p for p in _metadata(job)["parameters"]}
    assert set(specs) == set(options) - set(excluded)
    for name, spec in specs.items():
        action = options[name]
        assert spec["isOptional"] == (not action.required), name
        if action.nargs == 0:
            assert spec["regexes"] == [FLAG], f"{name} is a flag: true or false"
        else:
            assert spec["regexes"] != [FLAG], name
        for choice in action.choices or ():
            assert re.fullmatch(spec["regexes"][0], str(choice)), f"{name} rejects {choice}"


@pytest.mark.parametrize("job", cloud.JOBS)
def test_regexes_accept_documented_values(job):
    meta = _metadata(job)
    for spec in meta["parameters"]:
        for value in [_documented_example(spec), *(_values(GOOD, job, spec["name"]) or [])]:
            assert re.fullmatch(spec["regexes"][0], value), f"{job}.{spec['name']}: {value!r}"
    examples = _example_parameters(job)
    assert cloud.validate_parameters(meta, examples) == examples  # complete and valid


@pytest.mark.parametrize("job", cloud.JOBS)
def test_regexes_reject_bad_values(job):
    for spec in _metadata(job)["parameters"]:
        bad = _values(BAD, job, spec["name"])
        assert bad, f"add values {job}.{spec['name']} must reject to BAD"
        for value in bad:
            assert not re.fullmatch(spec["regexes"][0], value), f"{job}.{spec['name']}: {value!r}"


@pytest.mark.parametrize("job", cloud.JOBS)
def test_bad_parameters_are_rejected_naming_them(job):
    """What `earthembed cloud run` checks before calling gcloud: a bad value, a missing
    required parameter or an unknown one is a CloudError naming the parameter."""
    meta = _metadata(job)
    examples = _example_parameters(job)
    for spec in meta["parameters"]:
        name = spec["name"]
        for value in _values(BAD, job, name):
            expected = re.escape(f"parameter {name!r}: {value!r} does not match ")
            with pytest.raises(cloud.CloudError, match="^" + expected):
                cloud.validate_parameters(meta, {**examples, name: value})
        if not spec["isOptional"]:
            without = {k: v for k, v in examples.items() if k != name}
            with pytest.raises(cloud.CloudError, match=f"^parameter {name!r} is required"):
                cloud.validate_parameters(meta, without)
    with pytest.raises(cloud.CloudError, match="^unknown parameter 'no_such' for template "):
        cloud.validate_parameters(meta, {**examples, "no_such": "1"})


@pytest.mark.parametrize(
    "job, first, second",
    [("similarity", "query", "query_file"), ("classify", "label_column", "target"),
     ("quicklook", "bands", "pca")],
)  # fmt: skip
def test_exclusive_parameters_are_named(job, first, second):
    """The analysis jobs' mutually exclusive options, checked before a launch."""
    specs = {p["name"]: p for p in _metadata(job)["parameters"]}
    base = {k: v for k, v in _example_parameters(job).items() if k not in (first, second)}
    both = {**base, first: _documented_example(specs[first]),
            second: _documented_example(specs[second])}  # fmt: skip
    with pytest.raises(cloud.CloudError, match=f"^parameters {first} and {second} exclude each"):
        cloud.check_parameter_groups(job, both)
    for one in (first, second):
        cloud.check_parameter_groups(job, {**base, one: _documented_example(specs[one])})
    parser = _job_parser(job)
    required = any(
        g.required and {a.dest for a in g._group_actions} >= {first, second}
        for g in parser._mutually_exclusive_groups
    )
    if required:  # similarity and classify need one of the two
        with pytest.raises(
            cloud.CloudError, match=f"^give one of the parameters {first}, {second}"
        ):
            cloud.check_parameter_groups(job, base)
    else:
        cloud.check_parameter_groups(job, base)
