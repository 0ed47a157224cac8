"""What the analysis jobs share: tiles of a period as a PCollection, windowed reads with the
confidence mask, output tags, pixel <-> lon/lat, deterministic pixel sampling, map COGs,
GeoParquet/JSON outputs and PNG previews.

The analysis jobs (`sample`, `similarity`, `change`, `cluster`, `classify`, `quicklook`) all
read embedding tiles through the one reader, beam_jobs/io/embeddings.py, so they run on our
tiles and on the official AEF tiles (int8, nodata -128, stored bottom-up) alike. A job lists
the tiles of a period in the driver (headers only), puts them in a PCollection
(`TilesOfPeriod`) and works tile by tile: a DoFn reads one tile in windows of `--block` px
(`iter_windows`), so a worker holds one window of 64 float bands at a time plus the tile's
one-band result. Where the tiles have our quality sidecar, `--min-confidence C` masks pixels
whose confidence is below C (AEF tiles have none: the option is then an error naming the tile).

Every map a job writes is a COG through `beam_jobs.io.cog.write_cog` (`write_map`), one per
input tile, named after it, on its grid, tagged with `output_tags` (the inputs' model
version(s) and hash, their period, and the job's parameters). Tables are GeoParquet
(geopandas; EPSG:4326 points or polygons), reports JSON, all written atomically. Every output
carries the same tags: COG tags, the `earthembed` schema metadata (JSON) of a GeoParquet file,
the keys of a JSON report, the `earthembed` text chunk (JSON) of a PNG.

Previews: a DoFn also returns its tile's result decimated by one stride for the whole run
(`preview_step`), and the driver-side gather puts them on one grid (`mosaic_previews`, the
first CRS; tiles of other zones are left out of the PNG) and renders it with matplotlib
(`render_png`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from affine import Affine

from beam_jobs.io import cog, files
from beam_jobs.io.embeddings import (
    EmbeddingField,
    EmbeddingTile,
    list_embedding_tiles,
    read_tile,
    tile_windows,
)

DEFAULT_BLOCK = 512
PNG_MAX_SIDE = 1200
# Nodata of the class maps (uint8): classes are 1..K.
CLASS_NODATA = 0

_PERIOD_LABEL = re.compile(r"^(\d{4}|\d{8}_\d{8})$")


# ---------------------------------------------------------------------------------- options


def parse_period(text: str) -> str:
    """A period as its folder label: '2023' or '20230401_20240401' as given; ISO dates
    'START/END' (as `embed --period` takes them) converted to the label embed wrote."""
    text = str(text).strip()
    if _PERIOD_LABEL.match(text):
        return text
    if "/" in text:
        from beam_jobs.embed import period_label
        from beam_jobs.runner import parse_period as parse_iso

        return period_label(*parse_iso(text))
    raise ValueError(
        f"--period must be a year (2023), a label (20230401_20240401) or START/END ISO dates; "
        f"got {text!r}"
    )


def parse_lonlat(text: str) -> tuple[float, float]:
    """'LON,LAT' -> (lon, lat); ValueError naming the value."""
    try:
        lon, lat = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"a query point must be LON,LAT (e.g. 4.63,50.59); got {text!r}") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"query point {text!r} is not a lon,lat in degrees")
    return lon, lat


def list_tiles(
    embeddings: str, period: str | None, bbox: Sequence[float] | None = None
) -> list[EmbeddingTile]:
    """The tiles of a period; errors name `--embeddings` (and the periods that exist)."""
    try:
        return list_embedding_tiles(embeddings, period, bbox)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"--embeddings {embeddings}: {e}") from None


def parse_bbox(text: str | None) -> list[float] | None:
    """'minx,miny,maxx,maxy' (lon/lat) -> four floats, or None."""
    if not text:
        return None
    try:
        bbox = [float(v) for v in str(text).split(",")]
    except ValueError:
        bbox = []
    if len(bbox) != 4 or bbox[0] >= bbox[2] or bbox[1] >= bbox[3]:
        raise ValueError(f"--bbox must be minx,miny,maxx,maxy in degrees; got {text!r}")
    return bbox


def tiles_from_args(args, period: str | None = ...) -> list[EmbeddingTile]:
    """The tiles a job's `--embeddings`, `--period` (or `period`), `--bbox` name, checked
    against `--min-confidence`."""
    if period is ...:
        period = parse_period(args.period) if args.period else None
    tiles = list_tiles(args.embeddings, period, parse_bbox(args.bbox))
    check_confidence(tiles, args.min_confidence)
    return tiles


def run_pipeline(beam_args: Sequence[str], build, *args, **kwargs) -> None:
    """Build a job's pipeline on local or requested runner options, run it, wait."""
    from beam_jobs import runner

    pipeline = build(runner.create_pipeline(runner.pipeline_options(beam_args)), *args, **kwargs)
    pipeline.run().wait_until_finish()


def check_confidence(tiles: Sequence[EmbeddingTile], min_confidence: float | None) -> None:
    """Fail before any work when `--min-confidence` is given and a tile has no sidecar."""
    if min_confidence is None:
        return
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be in [0, 1]; got {min_confidence}")
    for t in tiles:
        if t.quality_path is None:
            raise ValueError(
                f"--min-confidence needs a quality sidecar; {t.path} has none "
                f"({t.tile_id}_quality.tif; AEF tiles carry none)"
            )


def output_tags(tiles: Sequence[EmbeddingTile], **params: object) -> dict[str, str]:
    """Tags of an analysis output: the inputs' model version(s) and hash(es), period(s), and
    the job's parameters. Values from several tiles are joined with ',' in sorted order."""

    def joined(key: str) -> str:
        vals = sorted({t.tag_dict.get(key, "") for t in tiles} - {""})
        return ",".join(vals) if vals else "unknown"

    tags = {
        "source_model_version": joined("model_version"),
        "source_model_sha256": joined("model_sha256"),
        "source_period": ",".join(sorted({str(t.period) for t in tiles})),
    }
    tags.update({k: str(v) for k, v in params.items() if v is not None})
    return tags


# ---------------------------------------------------------------------------------- tiles


def grid_key(tile: EmbeddingTile) -> tuple:
    """What identifies a tile's grid (CRS, geotransform, size): the same place in another
    period, or in another copy of the same tiles, whatever the file is called."""
    from rasterio.crs import CRS

    crs = CRS.from_wkt(tile.crs_wkt)
    return (
        crs.to_epsg() or tile.crs_wkt,
        tuple(round(v, 6) for v in tile.transform),
        tile.height,
        tile.width,
    )


def iter_windows(
    tile: EmbeddingTile, block: int = DEFAULT_BLOCK, min_confidence: float | None = None
) -> Iterator[tuple[tuple[int, int, int, int], EmbeddingField]]:
    """(window, field) for the windows of a tile, row-major, each read when needed."""
    for window in tile_windows(tile, block):
        yield window, read_tile(tile, window, min_confidence=min_confidence)


def pixel_xy(
    tile: EmbeddingTile, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of north-up (row, col) in the tile's CRS."""
    a, _, c, _, e, f = tile.transform
    return c + (np.asarray(cols) + 0.5) * a, f + (np.asarray(rows) + 0.5) * e


def pixel_lonlat(
    tile: EmbeddingTile, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of north-up (row, col) as lon, lat."""
    import pyproj

    x, y = pixel_xy(tile, rows, cols)
    tr = pyproj.Transformer.from_crs(tile.crs_wkt, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(x, y)
    return np.asarray(lon, np.float64), np.asarray(lat, np.float64)


def lonlat_to_pixel(
    tile: EmbeddingTile, lon: np.ndarray, lat: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, inside) of lon/lat points on a tile's north-up grid."""
    import pyproj

    tr = pyproj.Transformer.from_crs("EPSG:4326", tile.crs_wkt, always_xy=True)
    x, y = tr.transform(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    a, _, c, _, e, f = tile.transform
    cols = np.floor((np.asarray(x) - c) / a).astype(np.int64)
    rows = np.floor((np.asarray(y) - f) / e).astype(np.int64)
    inside = (rows >= 0) & (rows < tile.height) & (cols >= 0) & (cols < tile.width)
    return rows, cols, inside


def pixel_priority(
    tile: EmbeddingTile, rows: np.ndarray, cols: np.ndarray, seed: int
) -> np.ndarray:
    """A uint64 pseudo-random key per pixel, a function of its place on the 10 m grid (CRS
    and pixel centre) and the seed only: the pixels with the smallest keys over all tiles are
    a uniform sample without replacement, the same whatever the tiling, file names or order
    of work (a bottom-k sample, gathered with `beam.combiners.Top`)."""
    x, y = pixel_xy(tile, rows, cols)
    key = grid_key(tile)[0]
    zone = int(key) if isinstance(key, int) else 0
    h = np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64) ^ np.uint64(zone * 0xBF58476D1CE4E5B9 % 2**64)
    h = h ^ np.round(np.asarray(x) * 2).astype(np.int64).astype(np.uint64) * np.uint64(
        0x94D049BB133111EB
    )
    h = h ^ np.round(np.asarray(y) * 2).astype(np.int64).astype(np.uint64) * np.uint64(
        0xD6E8FEB86659FD93
    )
    # splitmix64 finalizer
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


class SampleTilePixels(beam.DoFn):
    """tile -> (priority, vector) for its `n` lowest-priority valid pixels (`pixel_priority`);
    `beam.combiners.Top.Smallest(n)` over all tiles then keeps the run's sample."""

    def __init__(self, n: int, seed: int, block: int, min_confidence: float | None):
        self._n, self._seed, self._block, self._conf = n, seed, block, min_confidence

    def process(self, tile: EmbeddingTile) -> Iterator[tuple[int, np.ndarray]]:
        keys, vecs = [], []
        for (r0, _, c0, _), field in iter_windows(tile, self._block, self._conf):
            rr, cc = np.nonzero(field.valid)
            if rr.size == 0:
                continue
            pri = pixel_priority(tile, rr + r0, cc + c0, self._seed)
            keep = np.argsort(pri, kind="stable")[: self._n]
            keys.append(pri[keep])
            vecs.append(field.values[rr[keep], cc[keep]])
        if not keys:
            return
        pri = np.concatenate(keys)
        vec = np.concatenate(vecs)
        for i in np.argsort(pri, kind="stable")[: self._n]:
            yield int(pri[i]), vec[i]


def sample_vectors(pairs: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """The vectors of a gathered bottom-k sample, in priority order, as (n, 64) float32."""
    pairs = sorted(pairs, key=lambda p: p[0])
    if not pairs:
        raise ValueError("no valid embedding pixel in the tiles (all nodata or masked)")
    return np.stack([p[1] for p in pairs]).astype(np.float32)


class TilesOfPeriod(beam.PTransform):
    """The listed tiles as a PCollection, spread over workers."""

    def __init__(self, tiles: Sequence[EmbeddingTile]):
        super().__init__()
        self._tiles = list(tiles)

    def expand(self, pbegin):
        return pbegin | "Tiles" >> beam.Create(self._tiles) | "Spread" >> beam.Reshuffle()


# ---------------------------------------------------------------------------------- outputs


def out_path(out: str, *parts: str) -> str:
    """A path under an output folder (local or an object store)."""
    if files.is_remote(out):
        return "/".join([out.rstrip("/"), *parts])
    return os.path.join(out, *parts)


def map_path(out: str, tile: EmbeddingTile, suffix: str) -> str:
    """`{out}/{tile_id}_{suffix}.tif` (tile ids are unique within a period)."""
    return out_path(out, f"{tile.tile_id}_{suffix}.tif")


def class_colormap(k: int) -> dict[int, tuple[int, int, int, int]]:
    """A GDAL colour table for classes 1..k (tab10/tab20 colours; 0 = nodata, transparent)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    table = {CLASS_NODATA: (0, 0, 0, 0)}
    for c in range(1, k + 1):
        r, g, b, _ = cmap((c - 1) % cmap.N)
        table[c] = (round(r * 255), round(g * 255), round(b * 255), 255)
    return table


def write_map(
    path: str,
    array: np.ndarray,
    tile: EmbeddingTile,
    *,
    nodata: float | int | None,
    tags: Mapping[str, object],
    band_names: Sequence[str] | None = None,
    resampling: str = "average",
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    scales: Sequence[float] | None = None,
) -> str:
    """A (C, H, W) or (H, W) result on a tile's grid as a COG (`cog.write_cog`), atomically."""
    from beam_jobs.embed import local_target

    with local_target(path) as local:
        cog.write_cog(
            local,
            array,
            tile.affine,
            tile.crs_wkt,
            nodata=nodata,
            band_names=band_names,
            tags=tags,
            resampling=resampling,
            compress="DEFLATE",
            colormap=colormap,
            scales=scales,
        )
    return path


def write_geoparquet(gdf, path: str, *, tags: Mapping[str, object]) -> str:
    """A GeoDataFrame as GeoParquet (zstd), atomically, with `tags` (`output_tags`) as JSON
    under the `earthembed` schema metadata key (as `sample` and `embed` write theirs)."""
    import io

    import pyarrow.parquet as pq

    from beam_jobs.embed import local_target

    buf = io.BytesIO()  # geopandas writes the `geo` metadata; the tags are added to it
    gdf.to_parquet(buf, index=False)
    table = pq.read_table(buf)
    meta = {**table.schema.metadata, b"earthembed": _tags_json(tags).encode()}
    with local_target(path) as local, files.atomic_target(local) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
    return path


def _tags_json(tags: Mapping[str, object]) -> str:
    return json.dumps({k: str(v) for k, v in tags.items()}, sort_keys=True)


def write_json(path: str, doc: Any) -> str:
    """A JSON document (indented, sorted keys), atomically."""
    from beam_jobs.runner import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return path


# ---------------------------------------------------------------------------------- previews


@dataclasses.dataclass(frozen=True)
class Preview:
    """A tile's result decimated by `step` (every step-th pixel), for the run's PNG."""

    crs_wkt: str
    transform: tuple[float, ...]  # of the decimated array
    array: np.ndarray  # (C, h, w) or (h, w)


def preview_step(tiles: Sequence[EmbeddingTile], max_side: int = PNG_MAX_SIDE) -> int:
    """The decimation stride that keeps the mosaic of all tiles under `max_side` px a side."""
    if not tiles:
        return 1
    b = np.array([t.bounds for t in tiles])
    px = tiles[0].transform[0]
    side = max(b[:, 2].max() - b[:, 0].min(), b[:, 3].max() - b[:, 1].min()) / px
    return max(1, math.ceil(side / max_side))


def preview(tile: EmbeddingTile, array: np.ndarray, step: int) -> Preview:
    """Every `step`-th pixel of a tile's (C, H, W) or (H, W) result."""
    t = tile.affine @ Affine.scale(step)
    return Preview(tile.crs_wkt, tuple(t)[:6], np.asarray(array)[..., ::step, ::step])


def mosaic_previews(
    previews: Sequence[Preview], fill: float = np.nan
) -> tuple[np.ndarray, tuple[float, float, float, float], str]:
    """Previews of one CRS (the first one's; others left out) on one grid.

    Returns:
        (array (C, H, W) or (H, W), extent (minx, maxx, miny, maxy) for imshow, crs_wkt).
    """
    if not previews:
        raise ValueError("nothing to preview")
    crs = previews[0].crs_wkt
    same = [p for p in previews if p.crs_wkt == crs]
    a, e = same[0].transform[0], same[0].transform[4]
    x0 = min(p.transform[2] for p in same)
    y0 = max(p.transform[5] for p in same)
    x1 = max(p.transform[2] + p.array.shape[-1] * a for p in same)
    y1 = min(p.transform[5] + p.array.shape[-2] * e for p in same)
    w, h = round((x1 - x0) / a), round((y1 - y0) / e)
    lead = same[0].array.shape[:-2]
    dtype = np.result_type(same[0].array.dtype, np.asarray(fill).dtype)
    out = np.full((*lead, h, w), fill, dtype)
    for p in same:
        r, c = round((p.transform[5] - y0) / e), round((p.transform[2] - x0) / a)
        ph, pw = p.array.shape[-2:]
        out[..., r : r + ph, c : c + pw] = p.array
    return out, (x0, x1, y1, y0), crs


def render_png(
    path: str,
    array: np.ndarray,
    extent: tuple[float, float, float, float],
    *,
    title: str,
    tags: Mapping[str, object],
    kind: str = "continuous",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    label: str = "",
    class_names: Mapping[int, str] | None = None,
    points: tuple[np.ndarray, np.ndarray] | None = None,
    outlines: Sequence[Any] = (),
) -> str:
    """A map PNG: a continuous field with a colour bar, a class map with a legend (colours of
    `class_colormap`), or an RGB image ((3, H, W) floats in [0, 1]). `points` (x, y in the
    map's CRS) are drawn as crosses, `outlines` (shapely polygons in the map's CRS) as lines.
    `tags` (`output_tags`) go in the PNG's `earthembed` text chunk as JSON, the title in its
    `Title`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    h, w = array.shape[-2:]
    fig_w = 7.0
    fig, ax = plt.subplots(figsize=(fig_w, max(2.5, fig_w * h / w * 0.9)), dpi=120)
    if kind == "rgb":
        rgb = np.nan_to_num(np.moveaxis(np.asarray(array, np.float32), 0, -1), nan=0.0)
        ax.imshow(np.clip(rgb, 0, 1), extent=extent, interpolation="nearest")
    elif kind == "classes":
        names = dict(class_names or {})
        k = max([int(np.nanmax(array)) if np.isfinite(array).any() else 0, *names, 1])
        colors = class_colormap(k)
        lut = ListedColormap([tuple(v / 255 for v in colors[i]) for i in range(k + 1)])
        ax.imshow(array, extent=extent, cmap=lut, vmin=-0.5, vmax=k + 0.5, interpolation="nearest")
        present = sorted(int(v) for v in np.unique(array) if v != CLASS_NODATA and np.isfinite(v))
        handles = [
            Patch(color=tuple(v / 255 for v in colors[c]), label=names.get(c, f"class {c}"))
            for c in present
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        im = ax.imshow(
            array, extent=extent, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    for geom in outlines:
        for poly in getattr(geom, "geoms", [geom]):
            xs, ys = poly.exterior.xy
            ax.plot(xs, ys, color="red", linewidth=0.8)
    if points is not None:
        ax.plot(points[0], points[1], "x", color="red", markersize=8, markeredgewidth=2)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    from beam_jobs.embed import local_target

    with local_target(path) as local, files.atomic_target(local) as tmp:
        fig.savefig(
            tmp, format="png", bbox_inches="tight",
            metadata={"Title": title, "earthembed": _tags_json(tags)},
        )  # fmt: skip
    plt.close(fig)
    return path
