"""Cloud-optimized GeoTIFF writing and validation.

`write_cog` writes through GDAL's COG driver (tiling, overviews and the COG layout in one pass;
much faster than rio-cogeo's translate) and publishes the file atomically: it writes
`path + '.tmp-<uuid>'` and renames it, so readers never see a partial file and a rerun can
trust any file that exists. `validate_cog` wraps rio-cogeo's validator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from schemas import files

COMPRESSIONS = ("DEFLATE", "ZSTD", "LZW", "NONE")


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
) -> str:
    """Write a (C, H, W) or (H, W) array as a COG, atomically.

    Args:
        path: destination file; parent folders are created.
        array: the stored values (the dtype is written as is).
        transform: affine geotransform of the top-left corner.
        crs: 'EPSG:32631', an EPSG integer, or a rasterio CRS.
        nodata: nodata value (NaN allowed for floats), or None.
        band_names: per-band descriptions.
        tags: dataset-level metadata tags (values are stringified).
        overviews: build internal overviews (GDAL picks the levels down to one block).
        resampling: overview resampling ('average' for continuous values, 'nearest' or 'mode'
            for classes and bit masks).
        blocksize: internal tile size (256 or 512).
        compress: DEFLATE, ZSTD, LZW or NONE. Predictors are chosen by GDAL.

    Returns:
        The path written.
    """
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"write_cog needs (C, H, W) or (H, W); got shape {data.shape}")
    compress = compress.upper()
    if compress not in COMPRESSIONS:
        raise ValueError(f"compress must be one of {COMPRESSIONS}; got {compress!r}")
    if band_names is not None and len(band_names) != data.shape[0]:
        raise ValueError(f"{len(band_names)} band names for {data.shape[0]} bands")
    if isinstance(crs, int):
        crs = CRS.from_epsg(crs)
    path = os.fspath(path)
    profile = {
        "driver": "COG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "BLOCKSIZE": blocksize,
        "COMPRESS": compress,
        "OVERVIEWS": "AUTO" if overviews else "NONE",
        "OVERVIEW_RESAMPLING": resampling.upper(),
        "RESAMPLING": resampling.upper(),
        "BIGTIFF": "IF_SAFER",
    }
    if compress in ("DEFLATE", "ZSTD", "LZW"):
        profile["PREDICTOR"] = "YES"
    with files.atomic_target(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        if band_names is not None:
            for i, name in enumerate(band_names, start=1):
                dst.set_band_description(i, str(name))
        if tags:
            dst.update_tags(**{str(k): str(v) for k, v in tags.items()})
    return path


def validate_cog(path: str | os.PathLike) -> tuple[bool, list[str], list[str]]:
    """(is_valid, errors, warnings) from rio-cogeo's COG validator."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(os.fspath(path), quiet=True)
