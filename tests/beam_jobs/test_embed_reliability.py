"""embed's reliability (issue 27): wrong requests stop before the model loads, a tile is done
only when all its chips are, one writer per --out, nothing left behind by a kill, and a job
killed for memory says so.

The catalog, AOI and fake model are test_embed.py's (a tiny simulated region, Sentinel-2 and
DEM, two 64 px tiles). The fail-fast tests replace the model loader by one that fails the test:
a check that let the request through would load the model.
"""
# ruff: noqa: F811  (test_embed's fixtures are imported, then named as arguments)

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
from test_embed import (  # noqa: F401  (fixtures)
    LABEL,
    PERIOD,
    SIM_BBOX,
    TILES,
    _argv,
    _codes,
    _run_plan,
    _tile_dir,
    aoi_file,
    fake_model,
    sim_catalog,
)

from beam_jobs import embed, flags, inference, runner
from beam_jobs.io import files
from schemas import embedding, grid
from schemas.grid import Tile, utm_to_lonlat

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the checks under test must come first."""

    def load(path, compute_dtype="float32"):
        raise AssertionError("the model was loaded before the request was refused")

    inference.clear_bundle_cache()
    monkeypatch.setattr(inference, "load_bundle", load)
    yield
    inference.clear_bundle_cache()


def _base(catalog, out, *extra) -> list[str]:
    return [
        "--stac",
        str(catalog),
        "--bbox",
        SIM_BBOX,
        "--period",
        PERIOD,
        "--out",
        str(out),
        "--tile-size",
        "64",
        "--chip-size",
        "16",
        "--halo",
        "8",
        *extra,
    ]


def _python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -c code args` from the repository root; text output captured."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _replace(argv: list[str], opt: str, value: str) -> list[str]:
    i = argv.index(opt)
    return [*argv[:i], opt, value, *argv[i + 2 :]]


def _refused(argv, capsys) -> str:
    """embed.run refuses `argv` with exit code 2 and returns its one-line error."""
    with pytest.raises(SystemExit) as e:
        embed.run(argv)
    assert e.value.code == 2, e.value.code
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------------------- case 3


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # lon/lat swapped: in range, misses the catalog, the swap hits it
        (("--bbox", "50.586682,4.643759,50.588896,4.660491"), "lat/lon swap"),
        (("--bbox", "50.586682,4.643759,50.588896,4.660491"), "--bbox 4.643759,50.586682"),
        # a box elsewhere
        (("--bbox", "5.6,51.5,5.7,51.6"), "does not intersect the catalog's extent 4.6432"),
        # |lat| > 90: the message says the order is lon,lat
        (("--bbox", "50.58,100.64,50.59,100.66"), "looks like lat,lon"),
        # a source the catalog lacks
        (("--sources", "sentinel1"), "--sources sentinel1: not in the catalog"),
        # a period without items
        (("--period", "2021-05-01/2021-08-01"), "--period 2021-05-01/2021-08-01: no item"),
    ],
)
def test_request_against_the_catalog_fails_fast(
    change, expected, sim_catalog, tmp_path, no_model, capsys
):
    argv = _base(sim_catalog, tmp_path / "out", "--sources", "sentinel2_l2a")
    line = _refused(_replace(argv, *change), capsys)
    assert expected in line, line
    assert not (tmp_path / "out").exists()  # nothing created


def test_year_without_items_names_the_span(sim_catalog, tmp_path, no_model, capsys):
    argv = [a for a in _base(sim_catalog, tmp_path / "o") if a not in ("--period", PERIOD)]
    line = _refused([*argv, "--year", "2021"], capsys)
    assert "--year 2021: no item of sentinel2_l2a" in line
    assert "span 2023-" in line, line


def test_unknown_option_is_an_error_and_beam_options_pass(sim_catalog, tmp_path, no_model, capsys):
    line = _refused(_base(sim_catalog, tmp_path / "o", "--batchsize", "2"), capsys)
    assert "unrecognized arguments: --batchsize 2" in line
    assert "did you mean --batch-size" in line
    beam = [
        "--runner",
        "DirectRunner",
        "--direct_num_workers",
        "2",
        "--direct_running_mode=multi_processing",
        "--project",
        "p",
        "--region",
        "europe-west1",
        "--temp_location",
        "gs://b/tmp",
    ]
    args, rest = runner.parse_job_args(flags.embed_parser(), _base(sim_catalog, "o", *beam))
    assert rest == beam and args.batch_size == flags.DEFAULT_CHIP_BATCH_SIZE
    with pytest.raises(SystemExit):  # a stray positional too
        runner.parse_job_args(flags.embed_parser(), _base(sim_catalog, "o", "stray"))


def test_out_and_stac_are_validated(sim_catalog, tmp_path, no_model, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    argv = _base(sim_catalog, tmp_path / "o")
    assert "is an existing file" in _refused(_replace(argv, "--out", str(a_file)), capsys)
    assert "--out http://example.com/x: http:// is read-only" in _refused(
        _replace(argv, "--out", "http://example.com/x"), capsys
    )
    assert "--out" in _refused(_replace(argv, "--out", str(a_file / "sub")), capsys)
    assert "no such catalog" in _refused(_replace(argv, "--stac", str(tmp_path / "no")), capsys)
    assert "is a folder" in _refused(_replace(argv, "--stac", str(sim_catalog.parent)), capsys)
    # file:// is a local path: the request passes every check
    args, _ = embed.check_request(_replace(argv, "--stac", f"file://{sim_catalog}"))
    assert args.stac == str(sim_catalog)


AOI_DOCS = {
    "point": ({"type": "Point", "coordinates": [4.65, 50.587]}, "must be a Polygon or Multi"),
    "line": (
        {"type": "LineString", "coordinates": [[4.65, 50.587], [4.66, 50.588]]},
        "must be a Polygon or MultiPolygon; the geometry is a LineString",
    ),
    "array": ([[4.65, 50.587], [4.66, 50.588]], "is not a GeoJSON object (got a JSON list)"),
    "no_geometry": ({"type": "Feature", "properties": {}}, "the Feature has no geometry"),
    "null_geometry": (
        {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None}]},
        "feature 0 has no geometry",
    ),
    "bowtie": (
        {
            "type": "Polygon",
            "coordinates": [[[4.64, 50.586], [4.66, 50.589], [4.66, 50.586], [4.64, 50.589]]],
        },
        "invalid Polygon (Self-intersection",
    ),
}


@pytest.mark.parametrize("name", sorted(AOI_DOCS))
def test_bad_aoi_files_get_one_line(name, sim_catalog, tmp_path, no_model, capsys):
    doc, expected = AOI_DOCS[name]
    path = tmp_path / f"{name}.geojson"
    path.write_text(json.dumps(doc))
    argv = [a for a in _base(sim_catalog, tmp_path / "o") if a not in ("--bbox", SIM_BBOX)]
    line = _refused([*argv, "--aoi", str(path)], capsys)
    assert "--aoi" in line and str(path) in line and expected in line, line
    with pytest.raises(ValueError) as e:  # the same from the pure function
        grid.aoi_from_geojson(doc, str(path))
    assert expected in str(e.value)


def test_invalid_item_json_names_the_file(sim_catalog, tmp_path, no_model, capsys):
    """Decision: an unreadable item stops the run (naming it) rather than being skipped: a
    skipped item would leave tiles without that date yet marked done."""
    copy = tmp_path / "cat"
    shutil.copytree(sim_catalog.parent, copy)
    item = sorted((copy / "sentinel2_l2a").glob("*/*.json"))[3]
    item.write_text('{"type": "Feature", broken')
    line = _refused(_base(copy / "catalog.json", tmp_path / "o"), capsys)
    assert "--stac" in line and "cannot read the catalog" in line and item.name in line, line


def _b04_times_10000(catalog_dir: Path) -> int:
    """Every Sentinel-2 B04 rewritten as float32 reflectance x 10000, its raster:bands scale 1:
    the catalog hands DN over as if they were reflectance. Returns the items changed."""
    import pystac
    import rasterio

    cat = pystac.read_file(str(catalog_dir / "catalog.json"))
    n = 0
    for item in cat.get_items(recursive=True):
        if item.collection_id != "sentinel2_l2a":
            continue
        asset = item.assets["B04"]
        path = asset.get_absolute_href()
        with rasterio.open(path) as ds:
            dn, profile = ds.read(1), ds.profile
        values = np.where(dn == 0, np.nan, (dn * 1e-4 - 0.1) * 10000).astype(np.float32)
        profile.update(driver="GTiff", dtype="float32", nodata=None)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(values, 1)
        asset.extra_fields["raster:bands"] = [
            {"data_type": "float32", "scale": 1.0, "offset": 0.0, "unit": "reflectance"}
        ]
        item.save_object(include_self_link=False, dest_href=item.get_self_href())
        n += 1
    return n


def test_catalog_in_wrong_units_fails_before_the_model(sim_catalog, tmp_path, no_model, capsys):
    copy = tmp_path / "cat"
    shutil.copytree(sim_catalog.parent, copy)
    assert _b04_times_10000(copy) > 0
    argv = _base(copy / "catalog.json", tmp_path / "o")
    line = _refused(argv, capsys)
    assert f"--stac {copy / 'catalog.json'}: sentinel2_l2a B04 median " in line, line
    assert "looks like reflectance x 10000 (DN); divide by 10000" in line, line
    assert "--no-unit-check" in line
    # Skipped, the job goes on to load the model (which the fixture refuses).
    with pytest.raises(SystemExit, match="the model was loaded"):
        embed.run([*argv, "--no-unit-check"])


def test_no_valid_pixel_exits_1(sim_catalog, aoi_file, fake_model, tmp_path, caplog):
    """DEM only: the fake model (Sentinel-2 means) embeds nothing; the run says so, exit 1."""
    argv = _argv(sim_catalog, aoi_file, tmp_path / "o", model=fake_model)
    argv = _replace(argv, "--sources", "cop_dem")
    with caplog.at_level(logging.ERROR):
        assert embed.run(argv) == 1
    assert "the run wrote no valid pixel" in caplog.text and "no usable observation" in caplog.text
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["counts"]["pixels_valid"] == 0 and manifest["counts"]["chips_embedded"] == 16


# ------------------------------------------------------------------------------- case 1


def _spec(**kw) -> embed.EmbedSpec:
    a, b = runner.parse_period(PERIOD)
    base = dict(
        out="o",
        stac="s",
        model="m",
        model_version="v",
        model_sha256="s" * 64,
        t_start_ms=a,
        t_end_ms=b,
        tile_size=64,
        chip_size=16,
        halo=8,
        formats=embed.FORMATS,
    )
    return embed.EmbedSpec(**{**base, **kw})


def test_resume_key_covers_what_changes_the_output():
    tile = Tile(32631, 963, 8758, 64)
    key = _spec().tile_key(tile)
    assert key["quantization"] == embedding.QUANTIZATION_RULE and key["aoi_chips"] == "all"
    changed = {
        "model_sha256": "t" * 64,
        "t_end_ms": _spec().t_end_ms + 86_400_000,
        "sources": ("sentinel2_l2a",),
        "chip_size": 32,
        "halo": 4,
        "tile_size": 128,
        "compute_dtype": "bfloat16",
    }
    for name, value in changed.items():
        assert _spec(**{name: value}).tile_key(tile) != key, name
    # The AOI: a box over two chip columns of the tile's lower rows changes the chip set ...
    part = shapely.box(616330.0, 5605130.0, 616500.0, 5605430.0)
    inside = _spec(aoi_wkb={32631: shapely.to_wkb(part)}).tile_key(tile)
    assert inside != key and len(inside["aoi_chips"]) == 16
    # ... and one covering the whole tile does not; nor do the batch size or read block.
    whole = shapely.box(*tile.window.bounds).buffer(100)
    assert _spec(aoi_wkb={32631: shapely.to_wkb(whole)}).tile_key(tile) == key
    assert _spec(read_block=1).tile_key(tile) == key


def _corrupt_one_b04(catalog_dir: Path) -> tuple[Path, bytes]:
    """Garbage in the June B04 COG of the eastern granule; returns (path, original bytes)."""
    import pystac

    cat = pystac.read_file(str(catalog_dir / "catalog.json"))
    item = next(
        i
        for i in cat.get_items(recursive=True)
        if i.collection_id == "sentinel2_l2a" and "964_8758" in i.id and i.datetime.month == 6
    )
    path = Path(item.assets["B04"].get_absolute_href())
    original = path.read_bytes()
    path.write_bytes(b"not a GeoTIFF" * 100)
    return path, original


def test_tiles_with_failed_chips_are_not_done_and_are_retried(
    sim_catalog, aoi_file, fake_model, tmp_path
):
    copy = tmp_path / "cat"
    shutil.copytree(sim_catalog.parent, copy)
    b04, original = _corrupt_one_b04(copy)
    out = tmp_path / "out"
    argv = _argv(copy / "catalog.json", aoi_file, out, model=fake_model)
    first = _run_plan(argv)
    dead = [json.loads(ln) for ln in (out / "deadletter.jsonl").read_text().splitlines()]
    failed_tiles = {d["tile_id"] for d in dead}
    # A corrupt asset invalidates its frame only: its chips are embedded from the other frames
    # and dead-lettered as partial, which keeps their tile from being done.
    bad = first.get("chips_failed", 0) + first.get("chips_partial", 0)
    assert bad == len(dead) > 0 and "32631_964_8758" in failed_tiles
    d = _tile_dir(out)
    for tid in TILES:  # a done marker only where every chip succeeded
        assert (d / f"{tid}.done.json").exists() == (tid not in failed_tiles), tid
        assert (d / f"{tid}.failed.json").exists() == (tid in failed_tiles), tid
    failed = json.loads((d / "32631_964_8758.failed.json").read_text())
    assert failed["chips_failed"] + failed["chips_partial"] == sum(
        1 for x in dead if x["tile_id"] == "32631_964_8758"
    )

    # --no-retry-failed: nothing is embedded again; the dead letters are kept.
    kept = _run_plan([*argv, "--no-retry-failed"])
    assert kept["tiles_skipped"] == 2 and kept.get("chips", 0) == 0
    assert len((out / "deadletter.jsonl").read_text().splitlines()) == len(dead)

    # The asset repaired, a plain rerun embeds the failed tiles again, and only those.
    b04.write_bytes(original)
    again = _run_plan(argv)
    assert again["tiles_written"] == len(failed_tiles) and again.get("chips_failed", 0) == 0
    assert again.get("tiles_skipped", 0) == 2 - len(failed_tiles)
    assert (out / "deadletter.jsonl").read_text() == ""
    assert sorted(p.name for p in d.glob("*.json") if "done" in p.name or "failed" in p.name) == [
        f"{t}.done.json" for t in TILES
    ]
    q = _codes(d / "32631_964_8758.tif")
    assert (~(q == embedding.NODATA).all(-1)).sum() > 1500
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["tiles_written"] for r in manifest["runs"]] == [2, 0, len(failed_tiles)]
    assert manifest["counts"]["chips_failed"] == 0


def test_failed_model_batches_mark_the_tile_failed_and_are_retried(
    sim_catalog, aoi_file, fake_model, tmp_path, monkeypatch
):
    """A RunInference batch that raises: its chips are dead-lettered with the model's own
    error, their tile is marked failed (not done), and a rerun re-embeds it."""
    original = inference.embed_requests

    def broken(bundle, requests, batch_size):
        try:
            raise KeyError("encoder/layer_3")
        except KeyError as e:
            raise FloatingPointError("NaN in the encoder's layer 3") from e

    out = tmp_path / "out"
    argv = _argv(sim_catalog, aoi_file, out, model=fake_model)
    monkeypatch.setattr(inference, "embed_requests", broken)
    first = _run_plan(argv)
    dead = [json.loads(ln) for ln in (out / "deadletter.jsonl").read_text().splitlines()]
    # The AOI holds 8 chips of each tile: all 16 failed.
    assert first["chips_failed"] == len(dead) == 16 and first.get("chips", 0) == 0
    reasons = {d["error"] for d in dead}
    assert reasons == {"inference failed: FloatingPointError: NaN in the encoder's layer 3"}
    d = _tile_dir(out)
    for tid in TILES:
        assert (d / f"{tid}.failed.json").exists() and not (d / f"{tid}.done.json").exists()
        assert json.loads((d / f"{tid}.failed.json").read_text())["chips_failed"] == 8

    monkeypatch.setattr(inference, "embed_requests", original)
    again = _run_plan(argv)
    assert again["tiles_written"] == 2 and again.get("chips_failed", 0) == 0
    assert (out / "deadletter.jsonl").read_text() == ""
    for tid in TILES:
        assert (d / f"{tid}.done.json").exists() and not (d / f"{tid}.failed.json").exists()
        assert (~(_codes(d / f"{tid}.tif") == embedding.NODATA).all(-1)).sum() > 1500


def test_batch_failure_text():
    try:
        raise ValueError("boom")
    except ValueError as e:
        exc = e
    import traceback

    triple = (ValueError, repr(exc), traceback.format_exception(exc))
    assert embed.batch_failure_text(triple) == "ValueError: boom"
    assert embed.batch_failure_text(exc) == "ValueError: boom"
    assert (
        embed.batch_failure_text((ValueError, "ValueError('x')", []))
        == "ValueError: ValueError('x')"
    )


def _lonlat_geojson(path: Path, box: shapely.Geometry) -> Path:
    box = box.segmentize(20.0)
    ll = shapely.transform(box, lambda c: np.column_stack(utm_to_lonlat(c[:, 0], c[:, 1], 32631)))
    path.write_text(json.dumps(shapely.geometry.mapping(ll)))
    return path


def test_wider_aoi_reembeds_the_tiles_it_changes(sim_catalog, aoi_file, fake_model, tmp_path):
    """A first run over two chip columns of the western tile, then the whole region into the
    same --out: the western tile is embedded again (more chips), not skipped as complete."""
    small = _lonlat_geojson(
        tmp_path / "small.geojson", shapely.box(616331.0, 5605141.0, 616500.0, 5605439.0)
    )
    out = tmp_path / "out"
    first = _run_plan(_argv(sim_catalog, small, out, model=fake_model))
    assert first["tiles_written"] == 1 and first["chips"] == 4
    wide = _run_plan(_argv(sim_catalog, aoi_file, out, model=fake_model))
    assert wide["tiles_written"] == 2 and wide.get("tiles_skipped", 0) == 0
    assert wide["chips"] == 16
    q = _codes(_tile_dir(out) / "32631_963_8758.tif")
    assert (~(q == embedding.NODATA).all(-1)[:, 32:]).sum() > 500  # the new chips are there
    again = _run_plan(_argv(sim_catalog, aoi_file, out, model=fake_model))
    assert again["tiles_skipped"] == 2 and again.get("chips", 0) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    commands = [r["command"] for r in manifest["runs"]]
    assert len(commands) == 3 and str(small) in commands[0] and str(aoi_file) in commands[1]
    assert manifest["run"] == manifest["runs"][-1]


# ------------------------------------------------------------------------------- case 5


def test_lock_refuses_a_live_writer_and_takes_over_a_dead_one(tmp_path, caplog):
    out = str(tmp_path / "out")
    me, stale = files.acquire_lock(out, command="first")
    assert stale is None and files.read_lock(out) == me
    with pytest.raises(files.LockedError, match=f"run {me.run_id} \\(pid {os.getpid()}"):
        files.acquire_lock(out, command="second")
    files.release_lock(out, me)
    assert not (tmp_path / "out" / files.LOCK_FILE).exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    doc = {**json.loads(json.dumps(me.__dict__)), "run_id": "deadbeef", "pid": dead.pid}
    (tmp_path / "out" / files.LOCK_FILE).write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        with files.run_lock(out) as (mine, taken):
            assert taken.run_id == "deadbeef" and files.read_lock(out).run_id == mine.run_id
    assert "no longer running" in caplog.text
    assert not (tmp_path / "out" / files.LOCK_FILE).exists()


def test_second_run_into_a_locked_out_fails_fast(sim_catalog, tmp_path, no_model, capsys):
    out = tmp_path / "out"
    me, _ = files.acquire_lock(str(out))
    try:
        line = _refused(_base(sim_catalog, out), capsys)
    finally:
        files.release_lock(str(out), me)
    assert f"is being written by run {me.run_id} (pid {os.getpid()}" in line, line


def test_run_takes_over_a_dead_runs_lock_and_sweeps_its_leftovers(
    sim_catalog, aoi_file, fake_model, tmp_path, caplog
):
    out = tmp_path / "out"
    scratch = out / LABEL / "31N" / f"{TILES[0]}.tif.tmp-0123abcd.d"
    scratch.mkdir(parents=True)
    (scratch / "level0.tif").write_bytes(b"partial")
    (out / "manifest.json.tmp-4567").write_bytes(b"{")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"run_id": "deadbeef", "pid": dead.pid, "host": socket.gethostname()}
    lock |= {"started": "2026-01-01T00:00:00+00:00", "extra": {"batch_size": 64}}
    (out / files.LOCK_FILE).write_text(json.dumps(lock))
    with caplog.at_level(logging.INFO):
        assert embed.run(_argv(sim_catalog, aoi_file, out, model=fake_model)) == 0
    assert "ended without finishing" in caplog.text and "--batch-size 64, lower" in caplog.text
    left = [p.name for p in out.rglob("*") if files.is_temporary(p.name)]
    assert left == [] and not (out / files.LOCK_FILE).exists()
    assert len(list(out.rglob("*.done.json"))) == 2


KILLED_COG_WRITER = """
import os, signal, sys
import numpy as np, rasterio.shutil
from affine import Affine
from beam_jobs.io import cog

def die(*args, **kwargs):  # the pyramid is written: the process is killed before the copy
    os.kill(os.getpid(), signal.SIGKILL)

rasterio.shutil.copy = die
data = np.ones((2, 64, 64), np.int8)
level = np.ones((2, 32, 32), np.int8)
cog.write_cog(sys.argv[1], data, Affine(10, 0, 600000, 0, -10, 5600000), "EPSG:32631",
              nodata=-128, overview_levels=[level])
"""


def test_killed_cog_writer_leaves_only_temporaries_a_rerun_deletes(tmp_path):
    dest = tmp_path / "2023" / "31N" / "32631_1_2.tif"
    proc = _python(KILLED_COG_WRITER, str(dest))
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = sorted(p.relative_to(dest.parent).as_posix() for p in dest.parent.rglob("*"))
    assert any(name.endswith("level0.tif") for name in left), left  # it was killed mid-write
    assert all(files.is_temporary(name.split("/")[0]) for name in left), left
    assert all(name.split("/")[0].startswith(dest.name) for name in left), left
    removed = files.remove_temporaries(str(dest.parent), "32631_1_2")
    assert removed and list(dest.parent.iterdir()) == []


# ------------------------------------------------------------------------------- case 7


DYING_JOB = """
import os, signal, sys
sys.modules["dying_job"] = type(sys)("dying_job")
sys.modules["dying_job"].run = lambda argv: os.kill(os.getpid(), signal.SIGKILL)
from beam_jobs import cli
cli.JOBS["die"] = cli.Command("dying_job", "x:y", "dies", "RESUME-HINT")
sys.argv = ["earthembed", "die"]
sys.exit(cli.main())
"""


def test_killed_job_says_it_was_killed_and_how_to_resume():
    proc = _python(DYING_JOB, timeout=60)
    assert proc.returncode == 137, proc.stderr
    assert "earthembed die: the job was killed by SIGKILL (exit 137)" in proc.stderr
    assert "out-of-memory killer" in proc.stderr and "RESUME-HINT" in proc.stderr
    assert "rerun the same command to resume" in cli_resume("embed")


def cli_resume(cmd: str) -> str:
    from beam_jobs import cli

    return cli.JOBS[cmd].resume


DYING_WORKER = """
import os, signal, sys
import apache_beam as beam
from beam_jobs import runner

def f(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x

opts = runner.pipeline_options(
    ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
)
p = runner.create_pipeline(opts)
_ = p | beam.Create(list(range(8))) | beam.Reshuffle() | beam.Map(f)
with runner.fail_on_dead_worker("RESUME-HINT", lambda: print("ON-DEATH", flush=True)):
    p.run().wait_until_finish()
"""


@pytest.mark.slow
def test_dead_worker_ends_the_run_with_a_message():
    """Without the watcher the FnApiRunner waits forever for the dead worker's results."""
    proc = _python(DYING_WORKER, timeout=240)
    assert proc.returncode == 137, proc.stderr[-3000:]
    assert "a Beam worker process died (killed (SIGKILL, exit 137)" in proc.stderr
    assert "RESUME-HINT" in proc.stderr and "ON-DEATH" in proc.stdout


def test_template_parameter_retry_failed_false_says_no():
    from beam_jobs import cloud

    parser = flags.embed_parser()
    assert cloud.template_argv(parser, ["--retry_failed=false"]) == ["--no-retry-failed"]
    assert cloud.template_argv(parser, ["--retry_failed=true"]) == ["--retry-failed"]
    base = ["--stac=s", "--bbox=1,2,3,4", "--year=2023", "--out=o"]
    assert parser.parse_args(base).retry_failed is True
    assert parser.parse_args([*base, "--no-retry-failed"]).retry_failed is False


def test_checking_beam_options_leaves_logging_to_the_job():
    """PipelineOptions() and view_as() call logging.basicConfig(): done before setup_logging
    (embed checks its options first), they used to silence every INFO line of a job."""
    import logging

    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    for h in saved:
        root.removeHandler(h)
    try:
        runner.parse_job_args(
            flags.embed_parser(), ["--stac=s", "--bbox=1,2,3,4", "--year=2023", "--out=o"]
        )
        runner.is_local(runner.pipeline_options(["--direct_num_workers", "2"]))
        assert root.handlers  # Beam configured the root logger (WARNING, its bare format)
        runner.setup_logging()
        assert root.level == logging.INFO and len(root.handlers) == 1
        assert "%(name)s" in root.handlers[0].formatter._fmt  # the jobs' format, not Beam's
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
