"""embed: pure helpers, then DirectRunner runs on a tiny simulated region.

The region (simulated once per test run, beam_jobs/conftest.py; Sentinel-2 and DEM only,
two 64 x 30 px granules side by side) lies in the lower half of two 64 px tiles. Runs read three summer months
(--period 2023-05-01/2023-08-01) of Sentinel-2 to stay fast, embed with a fake bundle whose
receptive field is 2 px (inside every halo used here), and compare:
- the same tiles embedded as 16 px chips and as one 64 px chip (seamless halo);
- a run that dies writing its second tile, then rerun, against an uninterrupted run;
- a run over a catalog with one corrupt COG (its chips dead-lettered, tiles still written).
One more run uses the real tiny bundle model/weights/tiny (the shipped_bundle fixture).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from fake_bundles import SpatialMeanS2Bundle

from beam_jobs import embed, inference, runner
from beam_jobs.io import embeddings
from beam_jobs.io.cog import validate_cog
from schemas import embedding, sensors
from schemas.grid import GridWindow, Tile, parse_tile_id, utm_to_lonlat
from schemas.observations import Observations, SourceFrames

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parents[2]
# The simulated region in EPSG:32631: x 616320..617580, y 5605140..5605440 (126 x 30 px).
REGION = (616320.0, 5605140.0, 617580.0, 5605440.0)
SIM_BBOX = "4.643759,50.586682,4.660491,50.588896"
PERIOD = "2023-05-01/2023-08-01"
LABEL = "20230501_20230801"
TILES = ("32631_963_8758", "32631_964_8758")


class SpatialFakeBundle(SpatialMeanS2Bundle):
    """Per pixel: the 5 x 5 neighbourhood mean of the S2 10 m band means (receptive field 2 px)."""

    version = "fake-spatial-1"
    sha256 = "5" * 64
    proj_seed = 1


# ------------------------------------------------------------------------------- pure


def test_period_label_and_formats():
    a, b = runner.year_bounds_ms(2023)
    assert embed.period_label(a, b) == "2023"
    assert embed.period_label(*runner.parse_period("2023-04-01/2024-04-01")) == "20230401_20240401"
    assert embed.parse_formats("stac, COG") == ("cog", "stac")
    with pytest.raises(ValueError, match="--formats"):
        embed.parse_formats("cog,zarr")
    with pytest.raises(ValueError, match="stac needs cog"):
        embed.parse_formats("parquet,stac")


def _spec(tmp_path, **kw) -> embed.EmbedSpec:
    a, b = runner.parse_period(PERIOD)
    base = dict(
        out=str(tmp_path),
        stac="x",
        model="m",
        model_version="v",
        model_sha256="s",
        t_start_ms=a,
        t_end_ms=b,
        tile_size=64,
        chip_size=16,
        halo=8,
        formats=("cog", "parquet", "stac"),
    )
    base.update(kw)
    return embed.EmbedSpec(**base)


def test_chips_in_aoi_keeps_chips_whose_core_overlaps(tmp_path):
    tile = Tile(32631, 963, 8758, 64)  # x 616320..616960, y 5605120..5605760
    aoi_box = shapely.box(616330.0, 5605130.0, 616500.0, 5605430.0)  # tile rows 33..63, cols 1..17
    spec = _spec(tmp_path, aoi_wkb={32631: shapely.to_wkb(aoi_box)})
    chips = embed.chips_in_aoi(tile, spec)
    assert sorted((c.i, c.j) for c in chips) == [(i, j) for i in (2, 3) for j in (0, 1)]
    assert len(embed.chips_in_aoi(tile, _spec(tmp_path))) == 16  # no AOI: all chips


def test_tile_codes_windows_and_parquet_match_the_whole_tile():
    """TileCodes gives any window of the assembled tile (codes and quality) without the whole
    arrays, and the GeoParquet table built from the embedded chips' window (origin) is the
    table of the whole tile."""
    tile = Tile(32631, 963, 8758, 20)
    rng = np.random.default_rng(0)
    results = []
    for i, j in [(0, 1), (1, 1), (1, 2), (3, 0)]:  # 6 px chips; the last row/col are clipped
        h, w = min(6, 20 - 6 * i), min(6, 20 - 6 * j)
        q = rng.integers(-127, 128, size=(h, w, 64)).astype(np.int8)
        q[0, 0] = embedding.NODATA
        quality = rng.integers(0, 255, size=(len(embedding.QUALITY_BANDS), h, w)).astype(np.uint8)
        results.append(embed.ChipResult(tile.id, f"c{i}{j}", i, j, q=q, quality=quality))
    results.append(embed.ChipResult(tile.id, "bad", 2, 2, error="boom"))
    whole_q, whole_quality = embed.assemble_tile(tile, 6, results)
    codes = embed.TileCodes(tile, 6, results)
    for r0, r1, c0, c1 in [(0, 20, 0, 20), (5, 13, 7, 19), (18, 20, 0, 3), (0, 1, 19, 20)]:
        np.testing.assert_array_equal(codes.codes(r0, r1, c0, c1), whole_q[r0:r1, c0:c1])
        np.testing.assert_array_equal(codes.quality(r0, r1, c0, c1), whole_quality[:, r0:r1, c0:c1])
    np.testing.assert_array_equal(whole_q[19, 5], results[3].q[1, 5])  # chip (3, 0): rows 18..
    assert codes.bounds() == (0, 20, 0, 18)
    assert codes.valid_pixels == int((~(whole_q == embedding.NODATA).all(-1)).sum())
    r0, r1, c0, c1 = codes.bounds()
    kw = {"transform": tile.transform, "epsg": tile.epsg, "tile_id": tile.id, "year": 2023}
    part = embedding.embedding_table(
        codes.codes(r0, r1, c0, c1), origin=(r0, c0), shape=(20, 20), **kw
    )
    assert part.equals(embedding.embedding_table(whole_q, **kw), check_metadata=True)


def test_assemble_tile_and_quality_hand_values():
    tile = Tile(32631, 963, 8758, 4)
    q = np.full((2, 2, 64), 3, np.int8)
    q[0, 0] = embedding.NODATA
    quality = np.zeros((len(embedding.QUALITY_BANDS), 2, 2), np.uint8)
    res = embed.ChipResult(tile.id, "c", 1, 0, q=q, quality=quality)
    failed = embed.ChipResult(tile.id, "d", 0, 1, error="boom")
    codes, qual = embed.assemble_tile(tile, 2, [res, failed])
    assert res.valid_pixels == 3 and failed.valid_pixels == 0
    assert (codes[2:4, 0:2] == q).all()
    assert (codes[0:2] == embedding.NODATA).all() and (codes[:, 2:] == embedding.NODATA).all()
    assert (qual[:, 2:4, 0:2] == 0).all() and (qual[:, :2] == embedding.QUALITY_NODATA).all()

    # Quality over a 2 x 2 core of a 4 x 4 chip: S2 3 frames, 2 of them clear at (0, 0).
    window = GridWindow(32631, 616320.0, 5605440.0, 4, 4)
    v = np.full((3, 4, 4, 10), 0.1, np.float32)
    valid = np.zeros((3, 4, 4), bool)
    valid[:2, 1, 1] = True  # core pixel (0, 0): 2 clear of 3 observed
    v[:, 2, 2] = np.nan  # core pixel (1, 1): never observed
    a, b = runner.parse_period(PERIOD)
    times = np.array([a + 1, a + 2, a + 3])
    obs = Observations({"sentinel2_l2a": SourceFrames("sentinel2_l2a", v, valid, times)}, window)
    embedded = np.array([[True, False], [False, False]])
    stored = embed.chip_quality(
        obs, slice(1, 3), slice(1, 3), t_start_ms=a, t_end_ms=b, embedded=embedded
    )
    dec = embedding.decode_quality_layers(stored)
    np.testing.assert_array_equal(dec["obs_sentinel2_l2a"], [[2, 0], [0, 0]])
    np.testing.assert_allclose(dec["clear_fraction"][0], [2 / 3, 0.0], atol=0.005)
    assert np.isnan(dec["clear_fraction"][1, 1])
    np.testing.assert_allclose(dec["confidence"], [[1 - np.exp(-2 / 12), 0], [0, 0]], atol=0.005)
    np.testing.assert_array_equal(dec["obs_sentinel1"], 0)


def test_halo_makes_chips_seamless_and_no_halo_does_not():
    """The fake on synthetic observations: a 32 px tile as one chip vs 8 px chips."""
    rng = np.random.default_rng(0)
    tile = Tile(32631, 963, 8758, 32)
    pad = 4
    big = tile.window.subwindow(-pad, -pad, 32 + 2 * pad, 32 + 2 * pad)
    v = rng.uniform(0.01, 0.4, (3, big.height, big.width, 10)).astype(np.float32)
    valid = rng.random((3, big.height, big.width)) < 0.8
    a, b = runner.parse_period(PERIOD)
    sf = SourceFrames("sentinel2_l2a", v, valid, np.array([a + 1, a + 2, a + 3]))
    bundle = SpatialFakeBundle()

    def embed_tile(core: int, halo: int) -> np.ndarray:
        out = np.full((32, 32, 64), np.nan, np.float32)
        for chip in tile.chips(core, halo):
            r0 = int(round((big.y0 - chip.window.y0) / 10))
            c0 = int(round((chip.window.x0 - big.x0) / 10))
            crop = sf.crop(slice(r0, r0 + chip.size), slice(c0, c0 + chip.size))
            obs = Observations({"sentinel2_l2a": crop}, chip.window)
            req = inference.EmbedRequest(obs, a, b)
            emb = inference.embed_requests(bundle, [req], 4)[0]
            (ts, cs) = chip.core_slices()
            out[ts] = emb[cs]
        return out

    whole = embed_tile(32, pad)
    np.testing.assert_array_equal(embed_tile(8, 2), whole)  # halo = receptive field
    np.testing.assert_array_equal(embed_tile(8, 4), whole)
    seams = np.abs(embed_tile(8, 0) - whole)
    assert np.nanmax(seams) > 1e-3  # without a halo the chip edges differ


# ------------------------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def sim_catalog(embed_sim_catalog) -> Path:
    return embed_sim_catalog  # conftest.py: simulated once for every embed test file


@pytest.fixture(scope="module")
def aoi_file(tmp_path_factory) -> Path:
    """The simulated region less 1 m, as a lon/lat GeoJSON polygon."""
    x0, y0, x1, y1 = REGION
    box = shapely.box(x0 + 1, y0 + 1, x1 - 1, y1 - 1).segmentize(20.0)
    ll = shapely.transform(box, lambda c: np.column_stack(utm_to_lonlat(c[:, 0], c[:, 1], 32631)))
    path = tmp_path_factory.mktemp("aoi") / "aoi.geojson"
    path.write_text(json.dumps(shapely.geometry.mapping(ll)))
    return path


@pytest.fixture(scope="module")
def fake_model():
    """Route model loading to SpatialFakeBundle for the module (the runner is in-process)."""
    with pytest.MonkeyPatch.context() as mp:
        inference.clear_bundle_cache()
        mp.setattr(
            inference, "load_bundle", lambda path, compute_dtype="float32": SpatialFakeBundle()
        )
        yield "fake://spatial"
    inference.clear_bundle_cache()


def _argv(catalog: Path, aoi: Path, out: Path, *extra: str, chip: int = 16, model: str) -> list:
    return [
        "--stac",
        str(catalog),
        "--aoi",
        str(aoi),
        "--period",
        PERIOD,
        "--model",
        model,
        "--out",
        str(out),
        "--tile-size",
        "64",
        "--chip-size",
        str(chip),
        "--halo",
        "8",
        "--batch-size",
        "4",
        "--sources",
        "sentinel2_l2a",
        *extra,
    ]


def _run_plan(argv: list, writer=None) -> dict:
    """Plan and run like `embed.run`, returning the job's counters."""
    plan = embed.plan_run(argv)
    p = embed.build_pipeline(
        runner.create_pipeline(runner.pipeline_options(plan.beam_args)),
        plan.tiles,
        plan.spec,
        plan.handler,
        run_info=plan.run_info,
        writer=writer,
    )
    result = p.run()
    result.wait_until_finish()
    return embed.counters(result)


def _tile_dir(out: Path) -> Path:
    return out / LABEL / "31N"


def _codes(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read().transpose(1, 2, 0)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean_run(sim_catalog, aoi_file, fake_model, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("emb") / "clean"
    counts = _run_plan(_argv(sim_catalog, aoi_file, out, model=fake_model))
    return out, counts


def test_read_blocks_group_chips_and_cover_their_windows():
    tile = Tile(32631, 963, 8758, 64)
    chips = [c for c in tile.chips(16, 8) if c.i >= 2]
    blocks = embed.read_blocks(chips, 3)
    assert [[(c.i, c.j) for c in b.chips] for b in blocks] == [
        [(2, 0), (2, 1), (2, 2)],
        [(2, 3)],
        [(3, 0), (3, 1), (3, 2)],
        [(3, 3)],
    ]
    w = blocks[0].window
    assert (w.width, w.height) == (3 * 16 + 16, 32)
    assert (w.x0, w.y0) == (616320.0 - 80, 5605760.0 - 320 + 80)
    assert blocks[0].offset(chips[2]) == (0, 32)
    assert len(embed.read_blocks(chips, 1)) == 8


def test_block_read_cut_into_chips_equals_chip_reads(sim_catalog):
    """One read of a 3-chip block, cut, equals three chip reads array for array."""
    from beam_jobs.io import stac

    cat = stac.StacCatalog.open(str(sim_catalog))
    a, b = runner.parse_period(PERIOD)
    tile = Tile(32631, 963, 8758, 64)
    block = embed.read_blocks([c for c in tile.chips(16, 8) if c.i == 2], 3)[0]
    obs = stac.read_observations(cat, block.window, a, b)
    for chip in block.chips:
        got = embed.crop_observations(obs, chip.window, *block.offset(chip))
        want = stac.read_observations(cat, chip.window, a, b)
        assert got.window == want.window and sorted(got.sources) == sorted(want.sources)
        for name, w in want.sources.items():
            g = got[name]
            assert g.num_frames == w.num_frames > 0
            np.testing.assert_array_equal(g.times_ms, w.times_ms)
            np.testing.assert_array_equal(g.valid, w.valid)
            np.testing.assert_array_equal(g.values, w.values)  # NaNs in the same places
            for k in w.geometry:
                np.testing.assert_array_equal(g.geometry[k], w.geometry[k])


def test_clean_run_outputs(clean_run):
    """COG, sidecar, GeoParquet, STAC, manifest, counters of an uninterrupted run."""
    import geopandas
    import pystac

    out, counts = clean_run
    # 2 tiles x 16 chips of 16 px; the region fills rows 32..61, so 8 chips per tile.
    assert counts["tiles_written"] == 2 and counts.get("tiles_skipped", 0) == 0
    assert counts["chips"] == 16 and counts["chips_outside_aoi"] == 16
    assert counts.get("chips_failed", 0) == 0
    d = _tile_dir(out)
    total_valid = 0
    for tid in TILES:
        tif = d / f"{tid}.tif"
        ok, errors, _ = validate_cog(tif)
        assert ok, errors
        assert validate_cog(d / f"{tid}_quality.tif")[0]
        with rasterio.open(tif) as ds:
            assert ds.count == 64 and set(ds.dtypes) == {"int8"} and ds.nodata == -128
            assert ds.descriptions == embedding.BAND_NAMES
            assert ds.overviews(1)  # renormalized overviews are there
            tags = ds.tags()
            assert tags["model_version"] == "fake-spatial-1" and tags["year"] == "2023"
            assert ds.crs.to_epsg() == 32631 and ds.transform.a == 10.0
        q = _codes(tif)
        emb = embedding.dequantize(q)
        valid = embedding.valid_mask(emb)
        norms = np.linalg.norm(emb[valid], axis=-1)
        assert valid.sum() > 1500 and np.abs(norms - 1).max() < 0.02
        # Only the region's rows (32..61) can hold embeddings; chip rows 0..31 are nodata.
        assert not valid[:32].any() and not valid[62:].any()
        total_valid += int(valid.sum())
        with rasterio.open(d / f"{tid}_quality.tif") as ds:
            qual = ds.read()
        assert qual.shape == (len(embedding.QUALITY_BANDS), 64, 64)
        assert (qual[:, :32] == embedding.QUALITY_NODATA).all()  # outside the AOI: unknown
        s2 = embedding.decode_quality_layers(qual)["obs_sentinel2_l2a"]
        assert (s2[valid] >= 1).all()
        table = pq.read_table(d / f"{tid}.parquet")
        assert table.num_rows == valid.sum()
        geo = json.loads(table.schema.metadata[b"geo"])
        assert geo["primary_column"] == "geometry" and geo["version"] == "1.1.0"
        gdf = geopandas.read_parquet(d / f"{tid}.parquet")
        assert gdf.crs.to_epsg() == 32631 and len(gdf) == valid.sum()
        rows = table.column("row").to_numpy()
        cols = table.column("col").to_numpy()
        codes = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
        np.testing.assert_array_equal(codes, q[rows, cols])
    coll = pystac.read_file(str(out / "collection.json"))
    items = sorted(coll.get_items(recursive=True), key=lambda i: i.id)
    assert [i.id for i in items] == [f"{t}_{LABEL}" for t in TILES]
    for item in items:
        href = item.assets["embedding"].get_absolute_href()
        assert Path(href).exists() and Path(item.assets["quality"].get_absolute_href()).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["pixels_valid"] == total_valid == counts["pixels"]
    assert manifest["counts"]["chips_embedded"] == 16 and manifest["counts"]["tiles"] == 2
    assert manifest["model"]["version"] == "fake-spatial-1"
    assert manifest["period"]["start"].startswith("2023-05-01")
    assert (out / "deadletter.jsonl").read_text() == ""
    field = embeddings.open_embeddings(str(out / "collection.json"))
    assert field.valid.sum() == total_valid


def test_one_chip_and_many_chips_agree(clean_run, sim_catalog, aoi_file, fake_model, tmp_path):
    """16 px chips with an 8 px halo == one 64 px chip per tile, code for code."""
    out_many, _ = clean_run
    out_one = tmp_path / "one"
    counts = _run_plan(_argv(sim_catalog, aoi_file, out_one, chip=64, model=fake_model))
    assert counts["chips"] == 2 and counts.get("chips_outside_aoi", 0) == 0
    compared = 0
    for tid in TILES:
        many = _codes(_tile_dir(out_many) / f"{tid}.tif")
        one = _codes(_tile_dir(out_one) / f"{tid}.tif")
        valid = ~(many == embedding.NODATA).all(-1)
        # The one-chip run also covers chip rows outside the AOI; they hold no data here.
        np.testing.assert_array_equal(valid, ~(one == embedding.NODATA).all(-1))
        np.testing.assert_array_equal(many[valid], one[valid])
        compared += int(valid.sum())
    assert compared > 3000


def test_reading_ahead_and_in_line_write_the_same_tiles(
    clean_run, sim_catalog, aoi_file, fake_model, tmp_path
):
    """The reader thread (--prefetch, default --batch-size, blocks of 2 x 2 chips) and reading in line
    (--prefetch 0: the handler prepares) or one chip at a time write the same files byte for
    byte (the manifest's `run` aside) and count the same."""
    out_ahead, counts_ahead = clean_run
    plan = embed.plan_run(_argv(sim_catalog, aoi_file, tmp_path / "plan", model=fake_model))
    assert plan.spec.prefetch == 4  # --batch-size 4: a batch ahead
    clean = _files(out_ahead)
    for extra in (("--prefetch", "0"), ("--prefetch", "1", "--read-block", "1")):
        out = tmp_path / "_".join(extra).replace("-", "")
        counts = _run_plan(_argv(sim_catalog, aoi_file, out, *extra, model=fake_model))
        for k in ("chips", "pixels", "chips_outside_aoi", "tiles_written"):
            assert counts[k] == counts_ahead[k], (extra, k)
        other = _files(out)
        assert sorted(other) == sorted(clean)
        for name in clean:
            if name == "manifest.json":
                a, b = json.loads(clean[name]), json.loads(other[name])
                a.pop("run"), b.pop("run"), a.pop("runs"), b.pop("runs")
                assert a == b
            else:
                assert clean[name] == other[name], (extra, name)


def test_a_chip_the_reader_cannot_prepare_is_dead_lettered(
    sim_catalog, aoi_file, fake_model, tmp_path, monkeypatch
):
    """A chip whose inputs raise in the reader thread's preparation: its dead letter names
    the error, the other chips and both tiles are written."""
    prepare = inference.prepare_items
    bad = []

    def failing(bundle, request):
        if request.items is None and not bad:  # the reader's first preparation
            bad.append(request.obs.window)
            raise ValueError("injected: cannot prepare")
        return prepare(bundle, request)

    monkeypatch.setattr(inference, "prepare_items", failing)
    out = tmp_path / "prep"
    counts = _run_plan(_argv(sim_catalog, aoi_file, out, model=fake_model))
    assert len(bad) == 1
    assert counts["chips_failed"] == 1 and counts["chips"] == 15 and counts["tiles_written"] == 2
    letters = [json.loads(x) for x in (out / "deadletter.jsonl").read_text().splitlines()]
    assert len(letters) == 1
    assert letters[0]["error"] == "prepare failed: ValueError: injected: cannot prepare"


def _no_tmp_files(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if ".tmp-" in p.name or p.name.startswith(".")]


def test_failure_then_rerun_equals_clean_run(
    clean_run, sim_catalog, aoi_file, fake_model, tmp_path
):
    """The writer dies on the second tile after its sidecar; a rerun completes it and the
    outputs equal an uninterrupted run's byte for byte (the manifest's `run` aside)."""
    out_clean, _ = clean_run
    out = tmp_path / "resumed"
    calls = tmp_path / "calls"
    calls.mkdir()

    def dying_writer(spec, tile, results, planned):
        n = len(list(calls.iterdir()))
        (calls / str(n)).touch()
        if n == 1:  # the second tile: leave a partial tile behind, then die
            q, quality = embed.assemble_tile(tile, spec.chip_size, results)
            embeddings.write_quality_cog(
                spec.tile_path(tile, "_quality.tif"), quality, tile.transform, "EPSG:32631"
            )
            raise RuntimeError("injected failure while writing a tile")
        return embed.write_tile(spec, tile, results, planned)

    argv = _argv(sim_catalog, aoi_file, out, model=fake_model)
    with pytest.raises(Exception, match="injected failure"):
        _run_plan(argv, writer=dying_writer)
    markers = sorted(_tile_dir(out).glob("*.done.json"))
    assert len(markers) == 1 and not (out / "manifest.json").exists()
    assert not _no_tmp_files(out)
    # What a killed (not failed) writer would leave: a temporary beside the unfinished tile.
    unfinished = next(t for t in TILES if not (_tile_dir(out) / f"{t}.done.json").exists())
    (_tile_dir(out) / f"{unfinished}.tif.tmp-0123abcd").write_bytes(b"partial")
    counts = _run_plan(argv)
    assert counts["tiles_skipped"] == 1 and counts["tiles_written"] == 1
    assert counts["chips"] == 8  # only the unfinished tile was read and embedded again
    assert not _no_tmp_files(out)
    clean, resumed = _files(out_clean), _files(out)
    assert sorted(clean) == sorted(resumed)
    for name in clean:
        if name == "manifest.json":
            a, b = json.loads(clean[name]), json.loads(resumed[name])
            ra, rb = a.pop("run"), b.pop("run")
            assert (a.pop("runs"), b.pop("runs")) == ([ra], [rb])  # the dead run never finished
            assert a == b and (ra["tiles_written"], rb["tiles_written"]) == (2, 1)
            assert rb["tiles_skipped"] == 1
        else:
            assert clean[name] == resumed[name], name
    # A third run has nothing left to do.
    again = _run_plan(argv)
    assert again["tiles_skipped"] == 2 and again.get("tiles_written", 0) == 0
    assert again.get("chips", 0) == 0


def test_corrupt_asset_invalidates_its_frame_only(
    clean_run, sim_catalog, aoi_file, fake_model, tmp_path
):
    """One B04 COG of the eastern granule truncated (issue 27, case 1/2): the chips that read
    it are embedded from the other frames, dead-lettered as `embedded` with GDAL's own
    message, and the tile gets no done marker; chips that never read it equal the clean run."""
    import pystac

    copy = tmp_path / "cat"
    shutil.copytree(sim_catalog.parent, copy)
    cat = pystac.read_file(str(copy / "catalog.json"))
    items = [
        i
        for i in cat.get_items(recursive=True)
        if i.collection_id == "sentinel2_l2a" and "964_8758" in i.id and i.datetime.month == 6
    ]
    item = items[0]
    tif = Path(item.assets["B04"].get_absolute_href())
    tif.write_bytes(tif.read_bytes()[: tif.stat().st_size * 2 // 3])
    out = tmp_path / "out"
    counts = _run_plan(_argv(copy / "catalog.json", aoi_file, out, model=fake_model))
    dead = [json.loads(line) for line in (out / "deadletter.jsonl").read_text().splitlines()]
    assert dead and all(d["embedded"] for d in dead)
    assert counts.get("chips_failed", 0) == 0 and counts["chips_partial"] == len(dead)
    assert counts["chips"] == 16 and counts["tiles_written"] == 2
    for d in dead:
        assert item.id in d["error"] and "B04" in d["error"], d
        assert "previous exception" not in d["error"] and "TIFF" in d["error"], d
    # The western granule's far chips (x < 616960 - 8 px halo - 16 px core) never read it.
    failed = {d["chip_id"] for d in dead}
    assert "32631_963_8758_2_0" not in failed and "32631_964_8758_2_3" in failed
    clean_out, _ = clean_run
    for tid in TILES:
        q = _codes(_tile_dir(out) / f"{tid}.tif")
        want = _codes(_tile_dir(clean_out) / f"{tid}.tif")
        for i, j in ((i, j) for i in (2, 3) for j in range(4)):
            block = (slice(i * 16, (i + 1) * 16), slice(j * 16, (j + 1) * 16))
            valid = ~(q[block] == embedding.NODATA).all(-1)
            assert valid.sum() > 100  # embedded from the other frames
            if f"{tid}_{i}_{j}" not in failed:
                np.testing.assert_array_equal(q[block], want[block])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["chips_failed"] == 0
    assert manifest["counts"]["pixels_valid"] == counts["pixels"] > 3000


def test_option_errors_name_the_option(sim_catalog, aoi_file, fake_model, tmp_path, capsys):
    base = _argv(sim_catalog, aoi_file, tmp_path / "o", model=fake_model)

    def fails(argv, pattern):
        with pytest.raises(SystemExit) as e:
            embed.plan_run(argv)
        msg = str(e.value) + capsys.readouterr().err
        assert pattern in msg, msg

    def swap(opt, value, argv=base):
        i = argv.index(opt)
        return [*argv[:i], opt, value, *argv[i + 2 :]]

    fails(swap("--period", "2023-05-01/2023-01-01"), "--period")
    fails(swap("--period", "May"), "--period")
    fails(swap("--formats", "cog,zarr", [*base, "--formats", "cog"]), "--formats")
    fails(swap("--stac", str(tmp_path / "nope.json")), "--stac")
    fails(swap("--sources", "sentinel3"), "--sources")
    fails(swap("--chip-size", "100"), "--chip-size")
    no_aoi = [a for a in base if a not in ("--aoi", str(aoi_file))]
    fails([*no_aoi, "--bbox", "4.7,50.5,4.6,50.6"], "bbox")
    fails([*no_aoi, "--bbox", "4.6,50.5,4.7"], "--bbox")
    inference.clear_bundle_cache()
    with pytest.MonkeyPatch.context() as mp:

        def missing(path, compute_dtype="float32"):
            raise FileNotFoundError(f"no bundle at {path}")

        mp.setattr(inference, "load_bundle", missing)
        fails(swap("--model", str(tmp_path / "nobundle")), "--model")
    inference.clear_bundle_cache()


def test_parser_lists_the_issue_options():
    dests = {a.dest for a in embed.build_parser()._actions}
    assert {
        "stac",
        "aoi",
        "bbox",
        "year",
        "period",
        "model",
        "out",
        "tile_size",
        "chip_size",
        "halo",
        "formats",
        "batch_size",
        "bf16",
        "verbose",
    } <= dests
    assert embed.build_parser().get_default("model") == str(REPO / "model" / "weights" / "tiny")


def test_real_tiny_bundle_end_to_end(sim_catalog, aoi_file, tmp_path, shipped_bundle):
    """The shipped tiny model: valid unit vectors; 16 px chips vs one 64 px chip agree to
    within the model's context effect (it attends over the whole chip)."""
    inference.clear_bundle_cache()
    tiny = str(shipped_bundle)
    outs = {}
    for chip, batch in ((16, "4"), (64, "2")):  # 16 or 2 chips: batches without padding
        out = tmp_path / f"real{chip}"
        argv = _argv(sim_catalog, aoi_file, out, chip=chip, model=tiny)[:-2]
        argv[argv.index("--batch-size") + 1] = batch
        assert embed.run(argv) == 0
        outs[chip] = out
    inference.clear_bundle_cache()
    cos = []
    for tid in TILES:
        a = embedding.dequantize(_codes(_tile_dir(outs[16]) / f"{tid}.tif"))
        b = embedding.dequantize(_codes(_tile_dir(outs[64]) / f"{tid}.tif"))
        valid = embedding.valid_mask(a) & embedding.valid_mask(b)
        assert valid.sum() > 1500
        assert np.abs(np.linalg.norm(a[valid], axis=-1) - 1).max() < 0.02
        cos.append((a[valid] * b[valid]).sum(-1))
        assert validate_cog(_tile_dir(outs[16]) / f"{tid}.tif")[0]
    cos = np.concatenate(cos)
    # Stated tolerance: median cosine > 0.95 and 5th percentile > 0.8 (a random-init tiny
    # model measured 0.9998 / 0.995; the context of a 32 px and an 80 px window differs).
    p5, p50 = np.percentile(cos, [5, 50])
    assert p50 > 0.95 and p5 > 0.8, (p5, p50)


# ------------------------------------------------------------------------------- reliability


def _frames(source: str, n: int, valid: bool, a: int, shape=(4, 4)) -> SourceFrames:
    sensor = sensors.get_sensor(source)
    v = np.full((n, *shape, len(sensor.bands)), 0.1, np.float32)
    return SourceFrames(
        source, v, np.full((n, *shape), valid), np.arange(n, dtype=np.int64) * 86_400_000 + a + 1
    )


def test_confidence_counts_surface_observations_only():
    """Issue 27, case 6, hand values (n0 = 12): climate and DEM only -> 0 (was 0.63); every
    S2 scene cloudy -> 0 (was 0.63 from ERA5's 12 months); 30 clear S2 + 10 S1 -> 0.964."""
    a, b = runner.parse_period(PERIOD)
    window = GridWindow(32631, 616320.0, 5605440.0, 4, 4)
    era5 = _frames("era5_land", 12, True, a)
    dem = SourceFrames(
        "cop_dem", np.full((1, 4, 4, 2), 100.0, np.float32), np.ones((1, 4, 4), bool), [0]
    )
    embedded = np.ones((2, 2), bool)

    def conf(**sources):
        obs = Observations({"era5_land": era5, "cop_dem": dem, **sources}, window)
        stored = embed.chip_quality(
            obs, slice(1, 3), slice(1, 3), t_start_ms=a, t_end_ms=b, embedded=embedded
        )
        return embedding.decode_quality_layers(stored)["confidence"]

    np.testing.assert_array_equal(conf(), 0.0)
    cloudy = conf(sentinel2_l2a=_frames("sentinel2_l2a", 20, False, a))
    np.testing.assert_array_equal(cloudy, 0.0)
    few = conf(sentinel2_l2a=_frames("sentinel2_l2a", 3, True, a))
    np.testing.assert_allclose(few, 1 - np.exp(-3 / 12), atol=0.005)  # 0.221: low
    many = conf(
        sentinel2_l2a=_frames("sentinel2_l2a", 30, True, a),
        sentinel1=_frames("sentinel1", 10, True, a),
    )
    np.testing.assert_allclose(many, 1 - np.exp(-40 / 12), atol=0.005)  # 0.964
    assert embedding.CONFIDENCE_N0 == 12.0 and "clear optical" in embedding.CONFIDENCE_RULE


def test_non_finite_embedding_fails_the_chip_with_its_id(tmp_path):
    """An inf (or partly NaN) row is a model failure: the chip is dead-lettered, not written
    as nodata; all-NaN rows are pixels without observations and stay nodata."""
    tile = Tile(32631, 963, 8758, 64)
    chip = tile.chips(16, 8)[5]
    spec = _spec(tmp_path)
    emb = np.full((32, 32, 64), 0.125, np.float32)
    emb[8, 8] = np.nan  # unobserved core pixel (0, 0): fine
    obs = Observations({}, chip.window)
    ok = embed.chip_result(chip, emb, obs, spec)
    assert ok.error is None and ok.valid_pixels == 255
    emb[10, 12] = np.inf
    bad = embed.chip_result(chip, emb, obs, spec)
    assert bad.q is None and bad.chip_id == "32631_963_8758_1_1"
    assert bad.error == (
        "non-finite embedding (NaN/inf) at 1 of 256 core pixels, first at core row 2, col 4"
    )
    emb[10, 12] = 0.125
    emb[12, 12, :3] = np.nan
    assert embed.chip_result(chip, emb, obs, spec).q is None
    summary = embed.chip_obs_summary(chip, obs, spec)
    assert embed.chip_result(chip, emb, summary, spec).q is None
    assert bad.deadletter() == {
        "chip_id": "32631_963_8758_1_1",
        "tile_id": tile.id,
        "error": bad.error,
    }


class InfFakeBundle(SpatialFakeBundle):
    """The spatial fake, but the model 'fails' (inf) on chips whose window contains x 616700."""

    def embed_batch(self, batch):
        out = super().embed_batch(batch)
        for k, s in enumerate(batch["sum"]):
            if s[0, 0, 0] == INF_MARK:
                out[k] = np.where(np.isnan(out[k]), np.nan, np.inf)
        return out


INF_MARK = -7.0


def test_non_finite_embeddings_are_dead_lettered_in_a_run(
    sim_catalog, aoi_file, tmp_path, monkeypatch
):
    """A run whose model returns inf for one chip: that chip is dead-lettered with its id and
    the reason, counted in chips_failed; the others are written (issue 27, case 2)."""
    target = "32631_964_8758_2_1"
    real_prepare = SpatialFakeBundle.prepare

    def prepare(self, obs, *, t_start_ms, t_end_ms, seed=0):
        item = real_prepare(self, obs, t_start_ms=t_start_ms, t_end_ms=t_end_ms, seed=seed)
        tile = Tile(32631, 964, 8758, 64)
        if obs.window == next(c for c in tile.chips(16, 8) if c.id == target).window:
            item["sum"][0, 0, 0] = INF_MARK
        return item

    monkeypatch.setattr(SpatialFakeBundle, "prepare", prepare)
    inference.clear_bundle_cache()
    monkeypatch.setattr(
        inference, "load_bundle", lambda path, compute_dtype="float32": InfFakeBundle()
    )
    out = tmp_path / "out"
    counts = _run_plan(_argv(sim_catalog, aoi_file, out, model="fake://inf"))
    inference.clear_bundle_cache()
    dead = [json.loads(line) for line in (out / "deadletter.jsonl").read_text().splitlines()]
    assert [d["chip_id"] for d in dead] == [target]
    assert dead[0]["error"].startswith("non-finite embedding (NaN/inf) at ")
    assert counts["chips_failed"] == 1 and counts["chips"] == 15
    q = _codes(_tile_dir(out) / "32631_964_8758.tif")
    assert (q[32:48, 16:32] == embedding.NODATA).all()
    assert (~(q[32:48, 32:48] == embedding.NODATA).all(-1)).sum() > 100


def test_chaos_first_read_fails_for_a_tenth_of_chips(
    clean_run, sim_catalog, aoi_file, fake_model, tmp_path, monkeypatch
):
    """Chaos (issue 27): the read DoFn fails on its first attempt for ~10% of the chips (a
    transient OSError); it is retried and the outputs equal a clean run's byte for byte."""
    from beam_jobs.io import stac

    real = stac.read_observations
    attempts: dict[tuple, int] = {}
    # 2 of the 16 chips in the AOI (10% rounded up), one per tile.
    flaky_ids = {"32631_963_8758_2_1", "32631_964_8758_3_2"}
    chips = [c for t in TILES for c in parse_tile_id(t, 64).chips(16, 8)]
    flaky_windows = {(c.window.x0, c.window.y0) for c in chips if c.id in flaky_ids}

    def flaky(catalog, window, *args, **kw):
        key = (window.x0, window.y0)
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] == 1 and key in flaky_windows:
            raise OSError("injected transient failure (HTTP 503)")
        return real(catalog, window, *args, **kw)

    monkeypatch.setattr(stac, "read_observations", flaky)
    monkeypatch.setattr(embed, "READ_RETRY_WAIT_S", 0.0)
    out = tmp_path / "chaos"
    # One read per chip (the clean run reads blocks of chips: the same outputs).
    counts = _run_plan(_argv(sim_catalog, aoi_file, out, "--read-block", "1", model=fake_model))
    failed_first = sum(1 for k, n in attempts.items() if n == 2)
    assert failed_first == 2 and len(attempts) == 16  # 2 of 16 chips: ~10%
    assert counts["read_retries"] == failed_first and counts.get("chips_failed", 0) == 0
    clean, chaos = _files(clean_run[0]), _files(out)
    assert sorted(clean) == sorted(chaos)
    for name in clean:
        if name == "manifest.json":
            a, b = json.loads(clean[name]), json.loads(chaos[name])
            for doc in (a, b):  # this run's command, times and history differ by nature
                doc.pop("run"), doc.pop("runs", None)
            assert a == b
        else:
            assert clean[name] == chaos[name], name


def test_chip_result_from_the_read_time_summary_equals_the_observations(tmp_path):
    """ReadChipsFn takes each chip's ChipObsSummary when it reads the chip (the handler then
    frees the observations); the chip's codes, quality bands and partial error are those
    chip_result makes from the observations themselves."""
    a, b = runner.parse_period(PERIOD)
    tile = Tile(32631, 963, 8758, 64)
    chip = tile.chips(16, 8)[5]
    spec = _spec(tmp_path)
    s2 = _frames("sentinel2_l2a", 7, True, a, shape=(32, 32))
    s2.valid[:3, 4:20, 6:9] = False
    s2.values[:2, 4:20, 6:9] = np.nan
    obs = Observations(
        {"sentinel2_l2a": s2, "sentinel1": _frames("sentinel1", 4, True, a, shape=(32, 32))},
        chip.window,
        errors=["s1.tif: timeout"],
    )
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(32, 32, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    emb[:12, :10] = np.nan
    want = embed.chip_result(chip, emb, obs, spec)
    got = embed.chip_result(chip, emb, embed.chip_obs_summary(chip, obs, spec), spec)
    np.testing.assert_array_equal(got.q, want.q)
    np.testing.assert_array_equal(got.quality, want.quality)
    assert got.error == want.error and "s1.tif: timeout" in got.error
    assert len(np.unique(want.quality[0])) > 1  # the clear counts vary across the core
