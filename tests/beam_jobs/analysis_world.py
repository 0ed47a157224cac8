"""The labelled embedding world of the analysis-job tests (the `world` fixture of conftest.py).

A 1.28 x 1.28 km region of the simulated temperate world (EPSG:32631, x 616320..617600,
y 5603200..5604480) is simulated for 2023 and 2024 (Sentinel-2, Sentinel-1 and the DEM, one
granule) and embedded for both years with the shipped tiny model (model/weights/tiny) as four
64 px tiles per year in our layout, `ours/{year}/31N/{tile_id}.tif` with quality sidecars.
The same int8 codes are copied AEF's way, `aef/{year}/31N/x{i}.tiff`: stored bottom-up
(positive y pixel size), nodata -128, AEF band names, no sidecar, other file names.

Truth beside it, on the embedded 128 x 128 px grid: the simulator's land cover per year
(labels/landcover_{year}.tif cropped), its labelled points (labels/points_2023.parquet,
restricted to the embedded area) and a continuous quantity, the mean leaf area index of
2023 (monthly `simulation.world.surface_state`), for regression.

Cost (measured on 2 shared cores): ~28 s CPU to simulate, ~30 s CPU to embed each year,
~2 GB peak. `EARTHEMBED_ANALYSIS_WORLD=DIR` reuses a world `build_world(DIR)` made before
(for working on the tests; unset in CI, where the world is built in a temporary folder).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

EPSG = 32631
X0, Y1 = 616320.0, 5604480.0
SIDE = 128  # px
TILE = 64
YEARS = (2023, 2024)
SOURCES = "sentinel2_l2a,sentinel1,cop_dem"


@dataclasses.dataclass(frozen=True)
class World:
    root: Path
    ours: Path  # {year}/31N/{tile_id}.tif (+ _quality.tif)
    aef: Path  # {year}/31N/x{i}.tiff, bottom-up
    sim: Path  # the simulation (catalog.json, labels/)
    landcover: dict  # year -> (SIDE, SIDE) uint8 on the embedded grid
    lai: np.ndarray  # (SIDE, SIDE) mean LAI of 2023
    points: object  # GeoDataFrame: labels/points_2023.parquet inside the grid, + row, col, lai
    transform: tuple  # north-up geotransform of the embedded grid

    def codes(self, year: int) -> np.ndarray:
        """int8 (SIDE, SIDE, 64) of a year, assembled from our tiles."""
        from beam_jobs.io.embeddings import list_embedding_tiles, read_tile_codes

        out = np.zeros((SIDE, SIDE, 64), np.int8)
        for t in list_embedding_tiles(self.ours, str(year)):
            r = round((Y1 - t.transform[5]) / 10)
            c = round((t.transform[2] - X0) / 10)
            out[r : r + t.height, c : c + t.width] = read_tile_codes(t)
        return out


def _lonlat_box(x0: float, y0: float, x1: float, y1: float):
    import shapely

    from schemas.grid import utm_to_lonlat

    box = shapely.box(x0, y0, x1, y1).segmentize(20.0)
    return shapely.transform(box, lambda c: np.column_stack(utm_to_lonlat(c[:, 0], c[:, 1], EPSG)))


def _write_aef_copy(ours: Path, aef: Path) -> None:
    """Our tiles' codes, written as official AEF tiles (bottom-up GTiff, AEF band names)."""
    import rasterio
    from affine import Affine

    from beam_jobs.io.embeddings import list_embedding_tiles, read_tile_codes
    from schemas.embedding import BAND_NAMES, NODATA

    for year in YEARS:
        for i, t in enumerate(list_embedding_tiles(ours, str(year))):
            path = aef / str(year) / "31N" / f"x{i}.tiff"
            path.parent.mkdir(parents=True, exist_ok=True)
            a, _, c, _, e, f = t.transform
            with rasterio.open(
                path,
                "w",
                driver="GTiff",
                width=t.width,
                height=t.height,
                count=64,
                dtype="int8",
                nodata=NODATA,
                crs=f"EPSG:{EPSG}",
                transform=Affine(a, 0.0, c, 0.0, -e, f + t.height * e),
                tiled=True,
                blockxsize=16,
                blockysize=16,
            ) as dst:
                dst.write(read_tile_codes(t)[::-1].transpose(2, 0, 1))
                dst.descriptions = BAND_NAMES
                dst.update_tags(model_version=t.tag_dict.get("model_version", ""))


def build_world(root: Path) -> None:
    """Simulate, embed both years with the shipped model, copy AEF's way (module doc)."""
    from beam_jobs import embed, inference, simulate

    root.mkdir(parents=True, exist_ok=True)
    x1, y0 = X0 + SIDE * 10, Y1 - SIDE * 10
    inner = _lonlat_box(X0 + 1, y0 + 1, x1 - 1, Y1 - 1)
    sim = root / "sim"
    simulate.run(
        [
            "--out",
            str(sim),
            "--bbox",
            ",".join(f"{v:.6f}" for v in inner.bounds),
            "--years",
            ",".join(map(str, YEARS)),
            "--seed",
            "0",
            "--tile-size",
            "2048",
            "--sources",
            SOURCES,
        ]
    )
    import shapely

    aoi = root / "aoi.geojson"
    aoi.write_text(json.dumps(shapely.geometry.mapping(inner)))
    inference.clear_bundle_cache()
    for year in YEARS:
        out = root / f"embed_{year}"
        embed.run(
            [
                "--stac",
                str(sim / "catalog.json"),
                "--aoi",
                str(aoi),
                "--year",
                str(year),
                "--out",
                str(out),
                "--tile-size",
                str(TILE),
                "--chip-size",
                str(TILE),
                "--halo",
                "16",
                "--batch-size",
                "2",
            ]
        )
        shutil.copytree(out / str(year), root / "ours" / str(year))
    inference.clear_bundle_cache()
    _write_aef_copy(root / "ours", root / "aef")
    (root / "world.done").write_text("ok\n")


def mean_lai(sim: Path, year: int) -> np.ndarray:
    """Mean LAI over the 15th of each month of `year` on the embedded grid."""
    import datetime as dt

    import simulation as S
    from schemas.grid import GridWindow
    from simulation import world as W

    region = W.SimRegion.from_params(json.loads((sim / S.PARAMS_FILE).read_text())["region"])
    window = GridWindow(EPSG, X0, Y1, SIDE, SIDE)
    fields = W.window_fields(region, window)
    world = W.get_world(region, EPSG)
    total = np.zeros(SIDE * SIDE)
    for m in range(1, 13):
        t = int(dt.datetime(year, m, 15, tzinfo=dt.UTC).timestamp() * 1000)
        total += W.surface_state(region, world, fields, None, t).lai
    return (total / 12).reshape(SIDE, SIDE)


def crop_label(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        lc, t = src.read(1), src.transform
    r0, c0 = round((t.f - Y1) / 10), round((X0 - t.c) / 10)
    return lc[r0 : r0 + SIDE, c0 : c0 + SIDE]


def mosaic_maps(folder: Path, suffix: str, band: int = 1) -> np.ndarray:
    """The `{tile}_{suffix}.tif` maps of a job's output folder on the embedded grid; each
    passes rio-cogeo's validator. Tiles are placed by their geotransform, whatever their name."""
    import rasterio

    from beam_jobs.io.cog import validate_cog

    paths = sorted(folder.glob(f"*_{suffix}.tif"))
    assert len(paths) == 4, paths
    out = None
    for path in paths:
        ok, errors, warnings = validate_cog(path)
        assert ok and not errors and not warnings, (path, errors, warnings)
        with rasterio.open(path) as src:
            data, t = src.read(band), src.transform
            if out is None:
                fill = np.nan if data.dtype.kind == "f" else 0
                out = np.full((SIDE, SIDE), fill, data.dtype)
        r, c = round((Y1 - t.f) / 10), round((t.c - X0) / 10)
        out[r : r + data.shape[0], c : c + data.shape[1]] = data
    return out


def lonlat_of(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of the embedded grid as lon, lat."""
    from schemas.grid import utm_to_lonlat

    x = X0 + (np.asarray(cols) + 0.5) * 10
    y = Y1 - (np.asarray(rows) + 0.5) * 10
    lon, lat = utm_to_lonlat(x, y, EPSG)
    return np.asarray(lon), np.asarray(lat)


def provenance(path: Path) -> dict:
    """The tags an analysis output carries, read by readers nobody here wrote: a COG's tags
    (rasterio), a Parquet file's `earthembed` schema metadata (pyarrow), a JSON report's keys,
    a PNG's `earthembed` text chunk (Pillow)."""
    path = Path(path)
    if path.suffix == ".tif":
        import rasterio

        with rasterio.open(path) as src:
            return src.tags()
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return json.loads(pq.read_schema(path).metadata[b"earthembed"])
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            return json.loads(im.text["earthembed"])
    raise ValueError(f"no provenance reader for {path}")


def shipped_model() -> tuple[str, str]:
    """(version, sha256) of the shipped bundle the world is embedded with (its bundle.json)."""
    root = Path(__file__).resolve().parents[2]
    doc = json.loads((root / "model" / "weights" / "tiny" / "bundle.json").read_text())
    return doc["version"], doc["sha256"]


def assert_provenance(paths, period: str, *, aef: bool = False) -> None:
    """Every output names the inputs' model version and hash and their period: the shipped
    bundle's for our tiles; for AEF's copy the version only (`_write_aef_copy` keeps just that
    tag), the hash unknown."""
    paths = list(paths)
    assert paths, "no outputs to check"
    version, sha = shipped_model()
    model = (version, "unknown") if aef else (version, sha)
    for path in paths:
        tags = provenance(path)
        got = (tags["source_model_version"], tags["source_model_sha256"], tags["source_period"])
        assert got == (*model, period), (path, got)
