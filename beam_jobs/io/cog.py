"""Cloud-optimized GeoTIFF writing and validation: the one GeoTIFF writer of the project.

`write_cog` writes through GDAL's COG driver (tiling, overviews and the COG layout in one pass;
much faster than rio-cogeo's translate) and publishes the file atomically
(`files.atomic_target`): it writes `path + '.tmp-<uuid>'` and renames it, so readers never see
a partial file and a rerun can trust any file that exists. Every raster output goes through it:
simulate's observation and label COGs, and the embedding COG and quality sidecar
(beam_jobs/io/embeddings.py).

Overviews are either GDAL's (`resampling` over the stored values) or given by the caller
(`overview_levels`, e.g. the embeddings' renormalized means): then the pyramid is written level
by level into plain GTiffs in a scratch folder named after the temporary
(`files.scratch_dir`: `{path}.tmp-<uuid>.d/`, so a rerun deletes it with the temporary after a
kill), tied together by a VRT whose bands
list them as overviews, and copied by the COG driver with OVERVIEWS=FORCE_USE_EXISTING, so the
overview pixels are exactly the given ones. `validate_cog` wraps rio-cogeo's validator.
"""

from __future__ import annotations

import contextlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.dtypes
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from beam_jobs.io import files

COMPRESSIONS = ("ZSTD", "DEFLATE", "LZW", "NONE")

# Rows per write of a scratch pyramid level.
_STRIP = 256


def cog_options(blocksize: int, compress: str) -> dict[str, str]:
    """The COG driver's creation options for a tile size and a compression; checks both.

    The horizontal predictor is used whenever the data are compressed.
    """
    compress = compress.upper()
    if compress not in COMPRESSIONS:
        raise ValueError(f"compress must be one of {COMPRESSIONS}; got {compress!r}")
    if blocksize % 16 or blocksize <= 0:
        raise ValueError(f"blocksize must be a positive multiple of 16; got {blocksize}")
    opts = {"BLOCKSIZE": str(blocksize), "COMPRESS": compress, "BIGTIFF": "IF_SAFER"}
    if compress != "NONE":
        opts["PREDICTOR"] = "YES"
    return opts


def tag_strings(tags: Mapping[str, object] | None) -> dict[str, str]:
    """Tags as GDAL metadata strings; GDAL splits a key at ':' or '=', so those are refused."""
    out = {}
    for k, v in (tags or {}).items():
        key = str(k)
        if not key or ":" in key or "=" in key:
            raise ValueError(f"tag key {key!r} must be non-empty without ':' or '='")
        out[key] = str(v)
    return out


def _as_crs(crs: str | int | CRS) -> CRS:
    return CRS.from_epsg(crs) if isinstance(crs, int) else CRS.from_user_input(crs)


def write_cog(
    path: str | os.PathLike,
    array: np.ndarray,
    transform: Affine,
    crs: str | int | CRS,
    *,
    nodata: float | int | None,
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, object] | None = None,
    overviews: bool = True,
    resampling: str = "average",
    blocksize: int = 256,
    compress: str = "DEFLATE",
    overview_levels: Sequence[np.ndarray] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    colormap: Mapping[int, Sequence[int]] | None = None,
) -> str:
    """Write a (C, H, W) or (H, W) array as a COG, atomically.

    Args:
        path: destination file; parent folders are created.
        array: the stored values (the dtype is written as is).
        transform: affine geotransform of the top-left corner.
        crs: 'EPSG:32631', an EPSG integer, or a rasterio CRS.
        nodata: nodata value (NaN allowed for floats), or None.
        band_names: per-band descriptions.
        tags: dataset-level metadata tags (values are stringified; keys without ':' or '=').
        overviews: build internal overviews (GDAL picks the levels down to one block).
        resampling: overview resampling ('average' for continuous values, 'nearest' or 'mode'
            for classes and bit masks).
        blocksize: internal tile size (a multiple of 16: 256 or 512).
        compress: ZSTD, DEFLATE, LZW or NONE (the horizontal predictor when compressed).
        overview_levels: the overviews themselves instead of GDAL's: level k (k = 1, 2, ...)
            is the 2^k reduction, (C, h_k, w_k) of the array's dtype; [] for none. Then
            `overviews`, `resampling`, `scales` and `offsets` are not used, and the bands are
            pixel-interleaved.
        scales: per-band GDAL scale (physical = stored * scale + offset).
        offsets: per-band GDAL offset.
        colormap: a colour table for band 1 of a uint8 class map, {value: (r, g, b, a)}.

    Returns:
        The path written.
    """
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"write_cog needs (C, H, W) or (H, W); got shape {data.shape}")
    options = cog_options(blocksize, compress)
    if band_names is not None and len(band_names) != data.shape[0]:
        raise ValueError(f"{len(band_names)} band names for {data.shape[0]} bands")
    if colormap is not None and (data.dtype != np.uint8 or overview_levels is not None):
        raise ValueError(
            f"a colour table needs a uint8 array written with GDAL's overviews; got {data.dtype}"
        )
    tags = tag_strings(tags)
    crs = _as_crs(crs)
    path = os.fspath(path)
    if overview_levels is not None:
        _write_with_levels(
            path, data, overview_levels, transform, crs, nodata, band_names, tags, options
        )
        return path
    profile = {
        "driver": "COG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "OVERVIEWS": "AUTO" if overviews else "NONE",
        "OVERVIEW_RESAMPLING": resampling.upper(),
        "RESAMPLING": resampling.upper(),
        **options,
    }
    with files.atomic_target(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        if band_names is not None:
            for i, name in enumerate(band_names, start=1):
                dst.set_band_description(i, str(name))
        if scales is not None:
            dst.scales = list(scales)
        if offsets is not None:
            dst.offsets = list(offsets)
        if colormap is not None:
            dst.write_colormap(1, {int(k): tuple(int(c) for c in v) for k, v in colormap.items()})
        if tags:
            dst.update_tags(**tags)
    return path


def _write_with_levels(
    path: str,
    data: np.ndarray,
    levels: Sequence[np.ndarray],
    transform: Affine,
    crs: CRS,
    nodata: float | int | None,
    band_names: Sequence[str] | None,
    tags: Mapping[str, str],
    options: Mapping[str, str],
) -> None:
    """A COG whose overviews are `levels`, through a scratch pyramid and a VRT (module doc)."""
    for k, level in enumerate(levels, start=1):
        level = np.asarray(level)
        if level.ndim != 3 or level.shape[0] != data.shape[0] or level.dtype != data.dtype:
            raise ValueError(
                f"overview level {k} must be ({data.shape[0]}, h, w) {data.dtype}; "
                f"got {level.dtype} {level.shape}"
            )
    arrays = [data, *(np.asarray(level) for level in levels)]

    def fill(dsts: Sequence) -> None:
        for dst, level in zip(dsts, arrays, strict=True):
            h, w = level.shape[1:]
            for r0 in range(0, h, _STRIP):
                r1 = min(r0 + _STRIP, h)
                dst.write(level[:, r0:r1], window=Window(0, r0, w, r1 - r0))

    shapes = [a.shape[1:] for a in arrays]
    _write_pyramid(
        path, shapes, data.shape[0], data.dtype, fill, transform, crs, nodata, band_names, tags,
        options,
    )  # fmt: skip


def write_cog_pyramid(
    path: str | os.PathLike,
    shapes: Sequence[tuple[int, int]],
    count: int,
    dtype: np.dtype | str,
    fill: Callable[[Sequence[Any]], None],
    transform: Affine,
    crs: str | int | CRS,
    *,
    nodata: float | int,
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, object] | None = None,
    blocksize: int = 256,
    compress: str = "DEFLATE",
) -> str:
    """Write a COG whose levels (full resolution, then overviews) are filled window by window,
    atomically, in bounded memory: what `write_cog` does with `overview_levels`, without the
    arrays.

    Args:
        path: destination file; parent folders are created.
        shapes: (h, w) of level 0 (the full resolution), 1, 2, ... (level k: the 2^k reduction).
        count, dtype: bands and data type of every level.
        fill: called once with one open rasterio dataset per level (pixel-interleaved, tiled
            256 px, sparse); it writes (count, h, w) windows with `dst.write(a, window=...)`.
            A scratch block never written reads as `nodata` and costs nothing; one written
            in part reads 0 where it was not written (GDAL), so write whole blocks or all.
        transform, crs, nodata, band_names, tags, blocksize, compress: as `write_cog`.

    Returns:
        The path written. The file is byte-identical to `write_cog(..., overview_levels=...)`
        with the same pixels.
    """
    options = cog_options(blocksize, compress)
    if band_names is not None and len(band_names) != count:
        raise ValueError(f"{len(band_names)} band names for {count} bands")
    path = os.fspath(path)
    _write_pyramid(
        path, [tuple(s) for s in shapes], count, np.dtype(dtype), fill, transform,
        _as_crs(crs), nodata, band_names, tag_strings(tags), options,
    )  # fmt: skip
    return path


# Tile side of the scratch pyramid's GTiffs (`write_cog_pyramid`).
SCRATCH_BLOCK = 256
# GDAL's block cache while a pyramid is written and copied (MB): the default (5% of the RAM)
# would hold gigabytes of a large tile's blocks in each worker process.
_CACHE_MB = 128


def _write_pyramid(
    path: str,
    shapes: Sequence[tuple[int, int]],
    count: int,
    dtype: np.dtype,
    fill: Callable[[Sequence[Any]], None],
    transform: Affine,
    crs: CRS,
    nodata: float | int | None,
    band_names: Sequence[str] | None,
    tags: Mapping[str, str],
    options: Mapping[str, str],
) -> None:
    """The scratch pyramid (one plain GTiff per level, filled by `fill`), its VRT, the COG."""
    wkt = crs.to_wkt()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with (
        rasterio.Env(GDAL_CACHEMAX=_CACHE_MB),
        files.atomic_target(path) as tmp,
        files.scratch_dir(tmp) as work,
    ):
        paths = [os.path.join(work, f"level{k}.tif") for k in range(len(shapes))]
        with contextlib.ExitStack() as stack:
            dsts = [
                stack.enter_context(
                    _open_level(p, shape, count, dtype, transform @ Affine.scale(2**k), wkt, nodata)
                )
                for k, (p, shape) in enumerate(zip(paths, shapes, strict=True))
            ]
            fill(dsts)
        vrt = os.path.join(work, "pyramid.vrt")
        Path(vrt).write_text(
            _overview_vrt(
                paths, (count, *shapes[0]), dtype, transform, wkt, nodata, band_names, tags
            )
        )
        rasterio.shutil.copy(
            vrt, tmp, driver="COG",
            OVERVIEWS="FORCE_USE_EXISTING" if len(shapes) > 1 else "NONE", **options,
        )  # fmt: skip


def _open_level(
    path: str,
    shape: tuple[int, int],
    count: int,
    dtype: np.dtype,
    transform: Affine,
    wkt: str,
    nodata: float | int | None,
):
    """A plain, uncompressed, pixel-interleaved, tiled and sparse GTiff of one pyramid level,
    open for writing (blocks never written read as nodata and take no disk)."""
    h, w = shape
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": count,
        "dtype": dtype.name,
        "nodata": nodata,
        "crs": wkt,
        "transform": transform,
        "interleave": "pixel",
        "tiled": True,
        "blockxsize": SCRATCH_BLOCK,
        "blockysize": SCRATCH_BLOCK,
        "SPARSE_OK": "TRUE",
        "BIGTIFF": "IF_SAFER",
    }
    return rasterio.open(path, "w", **profile)


def _overview_vrt(
    level_paths: Sequence[str],
    shape: tuple[int, int, int],
    dtype: np.dtype,
    transform: Affine,
    wkt: str,
    nodata: float | int | None,
    band_names: Sequence[str] | None,
    tags: Mapping[str, str],
) -> str:
    """VRT XML of the full-resolution level whose bands list the other levels as overviews."""
    c, h, w = shape
    root = ET.Element("VRTDataset", rasterXSize=str(w), rasterYSize=str(h))
    ET.SubElement(root, "SRS").text = wkt
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in transform.to_gdal()
    )
    md = ET.SubElement(root, "Metadata")
    for k, v in tags.items():
        ET.SubElement(md, "MDI", key=k).text = v
    data_type = rasterio.dtypes._gdal_typename(np.dtype(dtype).name)
    for b in range(1, c + 1):
        band = ET.SubElement(root, "VRTRasterBand", dataType=data_type, band=str(b))
        if band_names is not None:
            ET.SubElement(band, "Description").text = str(band_names[b - 1])
        if nodata is not None:
            ET.SubElement(band, "NoDataValue").text = str(nodata)
        src = ET.SubElement(band, "SimpleSource")
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = level_paths[0]
        ET.SubElement(src, "SourceBand").text = str(b)
        for p in level_paths[1:]:
            ov = ET.SubElement(band, "Overview")
            ET.SubElement(ov, "SourceFilename", relativeToVRT="0").text = p
            ET.SubElement(ov, "SourceBand").text = str(b)
    return ET.tostring(root, encoding="unicode")


def validate_cog(path: str | os.PathLike) -> tuple[bool, list[str], list[str]]:
    """(is_valid, errors, warnings) from rio-cogeo's COG validator."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(os.fspath(path), quiet=True)
