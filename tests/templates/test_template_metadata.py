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
}
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
}


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
