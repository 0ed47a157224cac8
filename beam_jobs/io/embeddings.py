"""Embedding tiles on disk: the COG and quality sidecar writers, the GeoParquet writer and the
one embedding reader (our tiles and the official AEF tiles alike).

The format (band names, quantization, overview rule, quality codes, table schema, STAC
dictionaries) is the contract in schemas/embedding.py; this module only puts it in files and
reads it back. Both rasters go through the project's one GeoTIFF writer,
`beam_jobs.io.cog.write_cog`, and every file is published atomically (`files.atomic_target`).

COG (`{tile_id}.tif`): 64 int8 bands `A00`..`A63`, nodata -128, pixel-interleaved internal
tiles, ZSTD or DEFLATE with the horizontal predictor, north-up; internal overviews down to
1 x 1 whose pixels are the quantized `renormalized_overviews` (given to `write_cog` as
precomputed levels, never GDAL's average of quantized integers). Dataset tags carry the
quantization and overview rules and the software version, plus what the caller adds.

Quality sidecar (`{tile_id}_quality.tif`): the uint8 bands of `quality_layers`, nodata 255,
fractions with the GDAL scale 0.005, overviews GDAL averages.

GeoParquet 1.1 (`{tile_id}.parquet`): the table of `embedding_table`, zstd, row groups that
follow the spatial order (whole 256 x 256 px squares), so bbox filters skip row groups.

Reader: `open_embeddings` opens one COG (ours, or an official AEF tile, which is stored
bottom-up: positive y pixel size, row 0 the southernmost), a directory of COGs or a STAC
catalog of our items, crops to a bbox, mosaics tiles that share a CRS and returns a north-up
float field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from affine import Affine

from beam_jobs.io import cog, files
from schemas.embedding import (
    BAND_NAMES,
    EMBEDDING_DIM,
    NODATA,
    OVERVIEW_RULE,
    PARQUET_BLOCK,
    PARQUET_ROW_GROUP,
    QUALITY_BANDS,
    QUALITY_COUNT_MAX,
    QUALITY_FRACTION_SCALE,
    QUALITY_NODATA,
    QUANTIZATION_RULE,
    dequantize,
    overview_shapes,
    overview_step,
    quantize,
    valid_mask,
)
from schemas.grid import bbox_intersects

if TYPE_CHECKING:
    from rasterio.crs import CRS

# ---------------------------------------------------------------------------------- COGs


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("earthembed")
    except PackageNotFoundError:
        return "unknown"


def write_embedding_cog(
    path: str | os.PathLike,
    emb: np.ndarray,
    transform: Affine,
    crs: str | int | CRS,
    *,
    tags: Mapping[str, object] | None = None,
    blocksize: int = 256,
    compress: str = "ZSTD",
    overview_min_size: int = 1,
) -> str:
    """Quantize an embedding field and write it as a COG with renormalized overviews, atomically.

    The overviews are `renormalized_overviews`, quantized, handed to `cog.write_cog` as its
    precomputed levels: the overview pixels are exactly those.

    Args:
        path: destination file; parent folders are created.
        emb: float32 (H, W, 64) unit vectors, NaN rows where there is no embedding.
        transform: north-up affine geotransform of the top-left corner.
        crs: 'EPSG:32631', an EPSG integer or a rasterio CRS.
        tags: dataset tags (model version and hash, year, valid period, ...); values are
            stringified. The quantization and overview rules and the software version are
            added unless given.
        blocksize: internal tile size (256 or 512).
        compress: ZSTD, DEFLATE, LZW or NONE (the horizontal predictor is used when compressed).
        overview_min_size: overviews stop at the first level whose larger side is <= this
            (1: down to 1 x 1 like the AEF files; `blocksize`: GDAL's automatic choice).

    Returns:
        The path written.
    """
    emb = np.asarray(emb)
    if emb.ndim != 3 or emb.shape[-1] != EMBEDDING_DIM or 0 in emb.shape:
        raise ValueError(f"write_embedding_cog needs (H, W, {EMBEDDING_DIM}); got {emb.shape}")
    return write_embedding_cog_blocks(
        path,
        emb.shape[:2],
        lambda r0, r1, c0, c1: emb[r0:r1, c0:c1],
        transform,
        crs,
        tags=tags,
        blocksize=blocksize,
        compress=compress,
        overview_min_size=overview_min_size,
    )


# Side of the square blocks (a power of two) `write_embedding_cog_blocks` works in: 64 MiB of
# float32 embeddings, whatever the tile size.
WORK_BLOCK = 512


def write_embedding_cog_blocks(
    path: str | os.PathLike,
    shape: tuple[int, int],
    read: Callable[[int, int, int, int], np.ndarray],
    transform: Affine,
    crs: str | int | CRS,
    *,
    tags: Mapping[str, object] | None = None,
    blocksize: int = 256,
    compress: str = "ZSTD",
    overview_min_size: int = 1,
    work_block: int = WORK_BLOCK,
) -> str:
    """`write_embedding_cog` of an (H, W) field read a block at a time: memory bounded by
    `work_block`, not by the tile; the same file, byte for byte.

    Args:
        path, transform, crs, tags, blocksize, compress, overview_min_size: as
            `write_embedding_cog`.
        shape: (H, W) of the field.
        read: read(r0, r1, c0, c1) -> float (r1 - r0, c1 - c0, 64) unit vectors of those rows
            and columns, NaN rows where there is no embedding.
        work_block: side of the square blocks read (a power of two). Within a block, the
            overview levels up to its size are computed from it (a level-k pixel depends only
            on the 2^k x 2^k pixels it covers: `overview_step`); the sums at that level are
            kept for the whole field (1 / work_block^2 of it) and give the coarser levels.
            Blocks without a valid pixel are not written (the scratch levels are sparse).

    Returns:
        The path written.
    """
    h, w = (int(v) for v in shape)
    if h <= 0 or w <= 0:
        raise ValueError(f"write_embedding_cog needs (H, W, {EMBEDDING_DIM}); got {(h, w)}")
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise ValueError(f"embedding COGs are north-up; got geotransform {tuple(transform)[:6]}")
    if work_block < 2 or work_block & (work_block - 1):
        raise ValueError(f"work_block must be a power of two >= 2; got {work_block}")
    cog.cog_options(blocksize, compress)  # fail before anything is computed
    all_tags = {
        "quantization": QUANTIZATION_RULE,
        "overviews": OVERVIEW_RULE,
        "software_version": _software_version(),
        **cog.tag_strings(tags),
    }
    shapes = overview_shapes((h, w), overview_min_size)
    levels = len(shapes) - 1
    inner = min(levels, work_block.bit_length() - 1)  # levels computed inside one block
    coarse = None
    if levels > inner:
        ch, cw = shapes[inner]
        coarse = np.zeros((ch, cw, EMBEDDING_DIM), np.float32), np.zeros((ch, cw), np.int64)

    from rasterio.windows import Window

    def put(dst, k: int, r0: int, c0: int, unit: np.ndarray) -> None:
        bh, bw = unit.shape[:2]
        window = Window(c0 >> k, r0 >> k, bw, bh)
        dst.write(quantize(unit).transpose(2, 0, 1), window=window)

    def put_nodata(dst, k: int, r0: int, c0: int, bh: int, bw: int) -> None:
        # GDAL fills a scratch block that is written in part with 0, not nodata: only a
        # window made of whole scratch blocks may stay unwritten.
        if (work_block >> k) < cog.SCRATCH_BLOCK:
            nodata = np.full((EMBEDDING_DIM, -(-bh >> k), -(-bw >> k)), NODATA, np.int8)
            dst.write(nodata, window=Window(c0 >> k, r0 >> k, nodata.shape[2], nodata.shape[1]))

    def fill(dsts) -> None:
        for r0 in range(0, h, work_block):
            for c0 in range(0, w, work_block):
                r1, c1 = min(r0 + work_block, h), min(c0 + work_block, w)
                emb = np.asarray(read(r0, r1, c0, c1))
                valid = valid_mask(emb)
                if not valid.any():  # sums and counts stay 0, as the whole field's
                    for k in range(inner + 1):
                        put_nodata(dsts[k], k, r0, c0, r1 - r0, c1 - c0)
                    continue
                put(dsts[0], 0, r0, c0, emb)
                sums, counts = emb, valid
                for k in range(1, inner + 1):
                    sums, counts, unit, _ = overview_step(sums, counts)
                    put(dsts[k], k, r0, c0, unit)
                if coarse is not None:
                    rows = slice(r0 >> inner, (r0 >> inner) + counts.shape[0])
                    cols = slice(c0 >> inner, (c0 >> inner) + counts.shape[1])
                    coarse[0][rows, cols] = sums
                    coarse[1][rows, cols] = counts
        if coarse is not None:
            sums, counts = coarse
            for k in range(inner + 1, levels + 1):
                sums, counts, unit, _ = overview_step(sums, counts)
                put(dsts[k], k, 0, 0, unit)

    return cog.write_cog_pyramid(
        path,
        shapes,
        EMBEDDING_DIM,
        np.int8,
        fill,
        transform,
        crs,
        nodata=NODATA,
        band_names=BAND_NAMES,
        tags=all_tags,
        blocksize=blocksize,
        compress=compress,
    )


def write_quality_cog(
    path: str | os.PathLike,
    quality: np.ndarray,
    transform: Affine,
    crs: str | int | CRS,
    *,
    tags: Mapping[str, object] | None = None,
    blocksize: int = 256,
    compress: str = "ZSTD",
) -> str:
    """Write the quality sidecar `{tile_id}_quality.tif` as a COG, atomically.

    Args:
        path: destination file; parent folders are created.
        quality: uint8 (Q, H, W) from `quality_layers` (bands in `QUALITY_BANDS` order).
        transform: north-up affine geotransform of the top-left corner.
        crs: 'EPSG:32631', an EPSG integer or a rasterio CRS.
        tags: dataset tags; values are stringified.
        blocksize: internal tile size.
        compress: ZSTD, DEFLATE, LZW or NONE.

    Returns:
        The path written. Bands are described by name, fractions carry the GDAL scale 0.005,
        nodata is 255, overviews are GDAL averages of the known pixels.
    """
    quality = np.asarray(quality)
    if quality.ndim != 3 or quality.shape[0] != len(QUALITY_BANDS) or 0 in quality.shape:
        raise ValueError(f"quality must be ({len(QUALITY_BANDS)}, H, W); got {quality.shape}")
    if quality.dtype != np.uint8:
        raise ValueError(f"quality must be uint8 as built by quality_layers; got {quality.dtype}")
    all_tags = {
        "quality_encoding": (
            f"uint8, nodata {QUALITY_NODATA}; obs_*: valid observations per source in the "
            f"support period, saturating at {QUALITY_COUNT_MAX}; clear_fraction, confidence: "
            f"round(f * {QUALITY_FRACTION_SCALE}) for f in [0, 1]"
        ),
        "software_version": _software_version(),
        **cog.tag_strings(tags),
    }
    scales = [1.0 if n.startswith("obs_") else 1.0 / QUALITY_FRACTION_SCALE for n in QUALITY_BANDS]
    return cog.write_cog(
        path,
        quality,
        transform,
        crs,
        nodata=QUALITY_NODATA,
        band_names=QUALITY_BANDS,
        tags=all_tags,
        resampling="average",
        blocksize=blocksize,
        compress=compress,
        scales=scales,
        offsets=[0.0] * len(QUALITY_BANDS),
    )


# ---------------------------------------------------------------------------------- GeoParquet


def _row_groups(table: pa.Table, max_rows: int) -> list[tuple[int, int]]:
    """Row-group [start, stop) ranges that follow the spatial order.

    Rows are cut into square cells of `side` px (the largest multiple of `PARQUET_BLOCK`, by
    powers of two, with side^2 <= max_rows; contiguous in Z order) per tile; whole cells are
    packed into groups of at most `max_rows` rows, so a full tile gets one group per cell and
    a group's bbox statistics are that cell's. A cell larger than `max_rows` is split.
    """
    n = table.num_rows
    if n == 0:
        return []
    if not {"row", "col", "tile_id"} <= set(table.column_names):
        return [(a, min(a + max_rows, n)) for a in range(0, n, max_rows)]
    side = PARQUET_BLOCK
    while (2 * side) ** 2 <= max_rows:
        side *= 2
    # Sampled points outside every tile have null tile_id, row and col: a cell of their own.
    rows = table.column("row").fill_null(-1).to_numpy()
    cols = table.column("col").fill_null(-1).to_numpy()
    tiles = (
        table.column("tile_id").combine_chunks().dictionary_encode().indices.fill_null(-1)
    ).to_numpy()
    key = np.stack([tiles, rows // side, cols // side], axis=1)
    starts = [0, *(np.flatnonzero((key[1:] != key[:-1]).any(axis=1)) + 1).tolist(), n]
    groups: list[tuple[int, int]] = []
    a = 0
    for cell_start, cell_stop in zip(starts[:-1], starts[1:], strict=True):
        if cell_stop - a > max_rows and cell_start > a:
            groups.append((a, cell_start))
            a = cell_start
        while cell_stop - a > max_rows:
            groups.append((a, a + max_rows))
            a += max_rows
    groups.append((a, n))
    return groups


def write_embedding_parquet(
    path: str | os.PathLike, table: pa.Table, *, row_group_size: int = PARQUET_ROW_GROUP
) -> str:
    """Write an embedding table as GeoParquet 1.1 (zstd, spatial row groups), atomically.

    Row groups follow the spatial order: with the default 65536 rows a full tile gets one group
    per 256 x 256 px square (2.56 km a side), so a bbox filter on the `bbox` column reads only
    the squares it touches. The `geo` bbox is recomputed from the rows, so tables concatenated
    from several tiles of one zone stay correct.

    Args:
        path: destination file; parent folders are created.
        table: from `embedding_table` (or a concatenation of such tables of one CRS).
        row_group_size: the most rows in a row group.

    Returns:
        The path written.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if row_group_size < 1:
        raise ValueError(f"row_group_size must be >= 1; got {row_group_size}")
    meta = dict(table.schema.metadata or {})
    if b"geo" not in meta:
        raise ValueError("table has no GeoParquet 'geo' metadata; build it with embedding_table")
    geo = json.loads(meta[b"geo"])
    column = geo["columns"]["geometry"]
    if table.num_rows:
        bbox = table.column("bbox")
        column["bbox"] = [
            float(pc.min(pc.struct_field(bbox, "xmin")).as_py()),
            float(pc.min(pc.struct_field(bbox, "ymin")).as_py()),
            float(pc.max(pc.struct_field(bbox, "xmax")).as_py()),
            float(pc.max(pc.struct_field(bbox, "ymax")).as_py()),
        ]
    else:
        column.pop("bbox", None)
    meta[b"geo"] = json.dumps(geo).encode()
    table = table.replace_schema_metadata(meta)
    with files.atomic_target(path) as tmp:
        with pq.ParquetWriter(
            tmp, table.schema, compression="zstd", write_statistics=True
        ) as writer:
            groups = _row_groups(table, row_group_size)
            if not groups:
                writer.write_table(table)
            for a, b in groups:
                writer.write_table(table.slice(a, b - a), row_group_size=b - a)
    return os.fspath(path)


# ---------------------------------------------------------------------------------- readers


@dataclasses.dataclass(frozen=True)
class EmbeddingField:
    """A north-up embedding field read from one or more files.

    Attributes:
        values: float32 (H, W, 64), dequantized; NaN rows where there is no embedding.
        valid: bool (H, W).
        transform: north-up affine geotransform (negative y pixel size) of `values`.
        crs: rasterio CRS of the grid.
        paths: the files the field was read from.
    """

    values: np.ndarray
    valid: np.ndarray
    transform: Affine
    crs: CRS
    paths: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape[:2]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in `crs`."""
        h, w = self.shape
        t = self.transform
        return (t.c, t.f + h * t.e, t.c + w * t.a, t.f)


@dataclasses.dataclass(frozen=True)
class _Source:
    """An embedding raster's header, seen north-up."""

    path: str
    crs: CRS
    transform: Affine  # north-up
    height: int
    width: int
    bottom_up: bool

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f)


def _open_source(path: str) -> _Source:
    """Open a raster header; errors name the file."""
    import rasterio
    import rasterio.errors

    if not files.is_remote(path) and not os.path.exists(path):
        raise FileNotFoundError(f"embedding raster not found: {path}")
    try:
        with rasterio.open(path) as src:
            count, dtypes, t = src.count, set(src.dtypes), src.transform
            crs, h, w, nodata = src.crs, src.height, src.width, src.nodata
    except rasterio.errors.RasterioError as err:
        raise ValueError(f"cannot open {path} as a raster: {err}") from err
    if count != EMBEDDING_DIM or dtypes != {"int8"}:
        raise ValueError(
            f"{path} is not an embedding raster: {count} band(s) of {sorted(dtypes)}; expected "
            f"{EMBEDDING_DIM} int8 bands {BAND_NAMES[0]}..{BAND_NAMES[-1]}"
        )
    if nodata is not None and nodata != NODATA:
        raise ValueError(f"{path}: nodata is {nodata}; embedding rasters use {NODATA}")
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e == 0:
        raise ValueError(f"{path}: rotated or mirrored geotransform {tuple(t)[:6]} not supported")
    if crs is None:
        raise ValueError(f"{path} has no CRS")
    bottom_up = t.e > 0
    if bottom_up:
        t = Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + h * t.e)
    return _Source(path, crs, t, h, w, bottom_up)


def _read_source(src: _Source, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """int8 (r1 - r0, c1 - c0, 64) of north-up rows [r0, r1) and columns [c0, c1)."""
    import rasterio

    with rasterio.open(src.path) as ds:
        return _read_open(ds, src.height, src.bottom_up, r0, r1, c0, c1)


def _read_open(ds, height: int, bottom_up: bool, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """`_read_source` on an open dataset: int8 (r1 - r0, c1 - c0, 64), north-up."""
    from rasterio.windows import Window

    fr0 = height - r1 if bottom_up else r0
    data = ds.read(window=Window(c0, fr0, c1 - c0, r1 - r0)).transpose(1, 2, 0)
    if bottom_up:
        data = data[::-1]
    return np.ascontiguousarray(data)


def _embedding_files(folder: str) -> list[str]:
    """COGs under a folder, leaving out sidecars, temporaries (and their scratch folders) and
    hidden folders."""
    out = []
    for p in sorted(Path(folder).rglob("*")):
        parts = p.relative_to(folder).parts
        if not p.is_file() or any(x.startswith(".") or files.is_temporary(x) for x in parts):
            continue
        if p.suffix.lower() in (".tif", ".tiff") and not p.stem.endswith("_quality"):
            out.append(str(p))
    if not out:
        raise FileNotFoundError(f"no embedding COGs (*.tif, *.tiff) under {folder}")
    return out


def _bbox_in(bbox: Sequence[float], bbox_crs: str, crs: Any) -> tuple[float, ...]:
    """A bbox transformed into `crs` (densified edges)."""
    import pyproj

    dst = pyproj.CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    src = pyproj.CRS.from_user_input(bbox_crs)
    if src == dst:
        return tuple(float(v) for v in bbox)
    tr = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    return tuple(tr.transform_bounds(*bbox, densify_pts=21))


def _stac_files(path: str, bbox: Sequence[float] | None, bbox_crs: str) -> list[str]:
    """The `embedding` asset hrefs of a STAC catalog's, collection's or item's items."""
    import pystac

    try:
        obj = pystac.read_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"STAC file not found: {path}") from None
    except Exception as err:
        raise ValueError(f"cannot read {path} as STAC: {err}") from err
    items = [obj] if isinstance(obj, pystac.Item) else list(obj.get_items(recursive=True))
    query = _bbox_in(bbox, bbox_crs, "EPSG:4326") if bbox is not None else None
    out = []
    for item in items:
        if query is not None and item.bbox is not None and not bbox_intersects(item.bbox, query):
            continue
        asset = item.assets.get("embedding")
        if asset is None:
            raise ValueError(f"STAC item {item.id!r} in {path} has no 'embedding' asset")
        out.append(asset.get_absolute_href() or asset.href)
    if not items:
        raise ValueError(f"no STAC items in {path}")
    return out


def _target_files(target: str, bbox: Sequence[float] | None, bbox_crs: str) -> list[str]:
    """The embedding rasters a path names: a STAC JSON's items, a folder's COGs, or the file."""
    if target.lower().endswith(".json"):
        return _stac_files(target, bbox, bbox_crs)
    if not files.is_remote(target) and os.path.isdir(target):
        return _embedding_files(target)
    return [target]


def open_embeddings(
    path_or_catalog: str | os.PathLike,
    bbox: tuple[float, float, float, float] | None = None,
    *,
    bbox_crs: str = "EPSG:4326",
) -> EmbeddingField:
    """Open embeddings as a north-up float field: ours or the official AEF tiles alike.

    Args:
        path_or_catalog: a COG (ours, or an AEF tile stored bottom-up), a directory of COGs
            (searched recursively; `*_quality.tif` sidecars skipped) or a STAC catalog,
            collection or item JSON whose items carry an `embedding` asset.
        bbox: (minx, miny, maxx, maxy) to crop to (the pixels it touches), or None for all.
        bbox_crs: CRS of `bbox` (lon/lat by default).

    Returns:
        An EmbeddingField on one north-up grid; several files are mosaicked (NaN where none
        covers a pixel).

    Raises:
        FileNotFoundError: a path (or a file a catalog names) does not exist.
        ValueError: a file is not a 64-band int8 embedding raster, the files differ in CRS,
            pixel size or grid alignment, overlap, or nothing intersects `bbox`.
    """
    target = os.fspath(path_or_catalog)
    paths = _target_files(target, bbox, bbox_crs)
    sources = [_open_source(f) for f in paths]
    if bbox is not None:
        sources = [s for s in sources if bbox_intersects(s.bounds, _bbox_in(bbox, bbox_crs, s.crs))]
    if not sources:
        raise ValueError(f"no embedding raster in {target} intersects bbox {bbox} ({bbox_crs})")
    crss = {s.crs.to_epsg() or s.crs.to_wkt() for s in sources}
    if len(crss) > 1:
        listing = ", ".join(f"{s.path} ({s.crs.to_string()})" for s in sources)
        raise ValueError(f"cannot mosaic embeddings in different CRSs: {listing}")
    first = sources[0]
    px, py = first.transform.a, -first.transform.e
    for s in sources[1:]:
        if not (math.isclose(s.transform.a, px) and math.isclose(-s.transform.e, py)):
            raise ValueError(
                f"pixel sizes differ: {first.path} ({px}, {py}) and {s.path} "
                f"({s.transform.a}, {-s.transform.e})"
            )
    x0 = min(s.bounds[0] for s in sources)
    y0 = max(s.bounds[3] for s in sources)
    offsets = []
    for s in sources:
        fc, fr = (s.transform.c - x0) / px, (y0 - s.transform.f) / py
        c, r = round(fc), round(fr)
        if abs(fc - c) > 1e-6 or abs(fr - r) > 1e-6:
            raise ValueError(f"{s.path} is not aligned with the grid of {first.path}")
        offsets.append((r, c))
    height = max(r + s.height for (r, _), s in zip(offsets, sources, strict=True))
    width = max(c + s.width for (_, c), s in zip(offsets, sources, strict=True))
    r0, r1, c0, c1 = 0, height, 0, width
    if bbox is not None:
        bx0, by0, bx1, by1 = _bbox_in(bbox, bbox_crs, first.crs)
        eps = 1e-9
        c0 = max(0, math.floor((bx0 - x0) / px + eps))
        c1 = min(width, math.ceil((bx1 - x0) / px - eps))
        r0 = max(0, math.floor((y0 - by1) / py + eps))
        r1 = min(height, math.ceil((y0 - by0) / py - eps))
        if r1 <= r0 or c1 <= c0:
            raise ValueError(f"bbox {bbox} ({bbox_crs}) does not intersect {target}")
    q = np.full((r1 - r0, c1 - c0, EMBEDDING_DIM), NODATA, np.int8)
    written = np.zeros((r1 - r0, c1 - c0), np.int16)
    used = []
    for (orow, ocol), s in zip(offsets, sources, strict=True):
        # The part of this source inside the output window, in source and output coordinates.
        sr0, sr1 = max(r0 - orow, 0), min(r1 - orow, s.height)
        sc0, sc1 = max(c0 - ocol, 0), min(c1 - ocol, s.width)
        if sr1 <= sr0 or sc1 <= sc0:
            continue
        dr, dc = orow + sr0 - r0, ocol + sc0 - c0
        out = (slice(dr, dr + sr1 - sr0), slice(dc, dc + sc1 - sc0))
        if written[out].any():
            raise ValueError(
                f"{s.path} overlaps another file in {target}; open one period at a time"
            )
        q[out] = _read_source(s, sr0, sr1, sc0, sc1)
        written[out] += 1
        used.append(s.path)
    values = dequantize(q)
    transform = Affine(px, 0.0, x0 + c0 * px, 0.0, -py, y0 - r0 * py)
    return EmbeddingField(values, valid_mask(values), transform, first.crs, tuple(used))


# ---------------------------------------------------------------------------------- tiles

_PERIOD = re.compile(r"^(\d{4}|\d{8}_\d{8})$")


@dataclasses.dataclass(frozen=True)
class EmbeddingTile:
    """One embedding raster (ours or an official AEF tile) as a unit of work.

    Analysis jobs put these in a PCollection and read each one in windows, so a worker holds
    one window of one tile at a time (`tile_windows`, `read_tile`).

    Attributes:
        path: the COG.
        tile_id: the file name without its suffix.
        period: the period folder the file lies in (`2023`, `20230401_20240401`; our layout
            `{period}/{zone}/{tile_id}.tif` and AEF's `.../{year}/{zone}/{name}.tiff` alike),
            else the `year` tag, else None.
        crs_wkt: the CRS as WKT (picklable, so tiles travel through Beam).
        transform: north-up geotransform (a, b, c, d, e, f), negative e.
        height, width: pixels.
        bottom_up: the file stores rows south to north (AEF); reads flip them.
        quality_path: our `{tile_id}_quality.tif` sidecar when it exists, else None.
        tags: the dataset tags (model version, year, valid period, ...) as sorted pairs.
    """

    path: str
    tile_id: str
    period: str | None
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int
    bottom_up: bool
    quality_path: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def crs(self) -> CRS:
        from rasterio.crs import CRS

        return CRS.from_wkt(self.crs_wkt)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the tile's CRS."""
        a, _, c, _, e, f = self.transform
        return (c, f + self.height * e, c + self.width * a, f)

    @property
    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)

    def window_transform(self, r0: int, c0: int) -> Affine:
        """North-up geotransform of the window whose top-left pixel is (r0, c0)."""
        return self.affine @ Affine.translation(c0, r0)


def _tile_period(path: str, tags: Mapping[str, str]) -> str | None:
    parts = Path(path).parts
    if len(parts) >= 3 and _PERIOD.match(parts[-3]):
        return parts[-3]
    return tags.get("label") or tags.get("year")


def embedding_tile(path: str) -> EmbeddingTile:
    """Describe one embedding raster (its header only); errors name the file."""
    import rasterio

    src = _open_source(path)
    with rasterio.open(path) as ds:
        tags = {k: str(v) for k, v in ds.tags().items()}
    p = Path(path)
    stem = p.name.rsplit(".", 1)[0]
    quality = None
    if not files.is_remote(path):
        q = p.with_name(f"{stem}_quality.tif")
        quality = str(q) if q.exists() else None
    t = src.transform
    return EmbeddingTile(
        path=str(path),
        tile_id=stem,
        period=_tile_period(str(path), tags),
        crs_wkt=src.crs.to_wkt(),
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        height=src.height,
        width=src.width,
        bottom_up=src.bottom_up,
        quality_path=quality,
        tags=tuple(sorted(tags.items())),
    )


def list_embedding_tiles(
    path_or_catalog: str | os.PathLike,
    period: str | None = None,
    bbox: Sequence[float] | None = None,
    *,
    bbox_crs: str = "EPSG:4326",
) -> list[EmbeddingTile]:
    """The embedding tiles of a folder, a STAC catalog or one file, for one period.

    Args:
        path_or_catalog: as `open_embeddings` takes it.
        period: keep tiles of this period (`2023`); None keeps all.
        bbox: keep tiles that intersect this box (in `bbox_crs`); None keeps all.

    Raises:
        FileNotFoundError / ValueError: as `open_embeddings`; and when no tile is left, naming
            the periods that exist.
    """
    target = os.fspath(path_or_catalog)
    paths = _target_files(target, bbox, bbox_crs)
    tiles = [embedding_tile(p) for p in paths]
    found = sorted({str(t.period) for t in tiles})
    if period is not None:
        tiles = [t for t in tiles if t.period == str(period)]
        if not tiles:
            raise ValueError(
                f"no embedding tiles for period {period!r} in {target}; periods found: "
                f"{', '.join(found)}"
            )
    if bbox is not None:
        tiles = [t for t in tiles if bbox_intersects(t.bounds, _bbox_in(bbox, bbox_crs, t.crs))]
        if not tiles:
            raise ValueError(f"no embedding tile in {target} intersects bbox {bbox} ({bbox_crs})")
    return tiles


def tile_windows(tile: EmbeddingTile, block: int = 1024) -> list[tuple[int, int, int, int]]:
    """(r0, r1, c0, c1) windows of at most block x block px covering the tile, row-major."""
    if block <= 0:
        raise ValueError(f"block must be positive; got {block}")
    return [
        (r, min(r + block, tile.height), c, min(c + block, tile.width))
        for r in range(0, tile.height, block)
        for c in range(0, tile.width, block)
    ]


def read_tile_codes(
    tile: EmbeddingTile, window: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """int8 codes (h, w, 64) of north-up rows [r0, r1) and columns [c0, c1) (all by default)."""
    r0, r1, c0, c1 = window if window is not None else (0, tile.height, 0, tile.width)
    if not (0 <= r0 < r1 <= tile.height and 0 <= c0 < c1 <= tile.width):
        raise ValueError(
            f"window {(r0, r1, c0, c1)} outside {tile.path} ({tile.height} x {tile.width})"
        )
    src = _Source(tile.path, tile.crs, tile.affine, tile.height, tile.width, tile.bottom_up)
    return _read_source(src, r0, r1, c0, c1)


def read_tile_quality(
    tile: EmbeddingTile, window: tuple[int, int, int, int] | None = None
) -> dict[str, np.ndarray] | None:
    """The quality sidecar's layers (decoded, NaN unknown) for a window, or None without one."""
    if tile.quality_path is None:
        return None
    import rasterio
    from rasterio.windows import Window

    from schemas.embedding import decode_quality_layers

    r0, r1, c0, c1 = window if window is not None else (0, tile.height, 0, tile.width)
    with rasterio.open(tile.quality_path) as ds:
        stored = ds.read(window=Window(c0, r0, c1 - c0, r1 - r0))
    return decode_quality_layers(stored)


def read_tile(
    tile: EmbeddingTile,
    window: tuple[int, int, int, int] | None = None,
    *,
    min_confidence: float | None = None,
) -> EmbeddingField:
    """A window of one tile as a north-up float field.

    Args:
        tile: from `list_embedding_tiles` or `embedding_tile`.
        window: (r0, r1, c0, c1) in north-up pixels; None for the whole tile.
        min_confidence: mask pixels whose sidecar confidence is below this (or unknown).

    Raises:
        ValueError: `min_confidence` is given for a tile without a quality sidecar (AEF's
            tiles have none), naming the tile.
    """
    r0, _, c0, _ = window if window is not None else (0, tile.height, 0, tile.width)
    values = dequantize(read_tile_codes(tile, window))
    valid = valid_mask(values)
    if min_confidence is not None:
        quality = read_tile_quality(tile, window)
        if quality is None:
            raise ValueError(
                f"--min-confidence needs a quality sidecar; {tile.path} has none "
                f"({tile.tile_id}_quality.tif)"
            )
        conf = quality["confidence"]
        drop = ~(conf >= min_confidence)  # NaN (unknown) is dropped too
        valid = valid & ~drop
        values[drop] = np.nan
    return EmbeddingField(values, valid, tile.window_transform(r0, c0), tile.crs, (tile.path,))


def read_tile_pixels(
    tile: EmbeddingTile, rows: np.ndarray, cols: np.ndarray, *, block: int = 256
) -> np.ndarray:
    """int8 codes (N, 64) of the north-up pixels (rows[i], cols[i]), the file opened once.

    The points are grouped into block x block cells of the tile; for each cell that holds any,
    only the window spanning its points' rows and columns is read (windowed reads of the
    internal tiles they touch, never the whole file).

    Raises:
        ValueError: a pixel outside the tile, naming it.
    """
    import rasterio

    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    out = np.full((rows.size, EMBEDDING_DIM), NODATA, np.int8)
    if rows.size == 0:
        return out
    bad = (rows < 0) | (rows >= tile.height) | (cols < 0) | (cols >= tile.width)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"pixel ({rows[i]}, {cols[i]}) outside {tile.path} ({tile.height} x {tile.width})"
        )
    cell = (rows // block) * (tile.width // block + 1) + cols // block
    order = np.argsort(cell, kind="stable")
    bounds = np.flatnonzero(np.diff(cell[order])) + 1
    with rasterio.open(tile.path) as ds:
        for idx in np.split(order, bounds):
            r0, r1 = int(rows[idx].min()), int(rows[idx].max()) + 1
            c0, c1 = int(cols[idx].min()), int(cols[idx].max()) + 1
            data = _read_open(ds, tile.height, tile.bottom_up, r0, r1, c0, c1)
            out[idx] = data[rows[idx] - r0, cols[idx] - c0]
    return out
