"""Storage benchmarks: bytes per pixel of output files.

Runbook:

    python -m benchmarks.storage OUT_DIR            # every .tif and .parquet under OUT_DIR
    python -m benchmarks.storage a.tif b.parquet

A GeoTIFF's pixels are width x height (bands are what a pixel costs, not more pixels); a
Parquet file's pixels are its rows (one row per pixel, as the embedding GeoParquet has).
For reference, an embedding costs 64 B/px raw as int8 and 256 B/px as float32; the public
AEF COGs are int8 with compression, so a well-compressed tile sits near or below 64.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable
from pathlib import Path

RASTER_SUFFIXES = (".tif", ".tiff")
TABLE_SUFFIXES = (".parquet", ".geoparquet")


@dataclasses.dataclass(frozen=True)
class StorageFigure:
    """One file's size per pixel."""

    path: str
    bytes: int
    pixels: int

    @property
    def bytes_per_pixel(self) -> float:
        return self.bytes / self.pixels if self.pixels else float("nan")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "bytes_per_pixel": self.bytes_per_pixel}


def file_pixels(path: str | Path) -> int:
    """Pixels a file holds: width x height of a GeoTIFF, rows of a Parquet table."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in RASTER_SUFFIXES:
        import rasterio

        with rasterio.open(p) as src:
            return src.width * src.height
    if suffix in TABLE_SUFFIXES:
        import pyarrow.parquet as pq

        return pq.ParquetFile(p).metadata.num_rows
    raise ValueError(f"{p}: not a GeoTIFF or Parquet file (suffix {suffix!r})")


def bytes_per_pixel(path: str | Path, pixels: int | None = None) -> StorageFigure:
    """Size on disk of `path` divided by its pixels (counted from the file unless given).

    Args:
        path: a GeoTIFF or Parquet file (any file when `pixels` is given).
        pixels: the pixel count, when the file cannot tell (e.g. a directory of shards).

    Returns:
        The StorageFigure.
    """
    p = Path(path)
    size = (
        sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        if p.is_dir()
        else p.stat().st_size
    )
    return StorageFigure(str(p), int(size), int(file_pixels(p) if pixels is None else pixels))


def find_outputs(root: str | Path) -> list[Path]:
    """GeoTIFFs and Parquet files under root, sorted."""
    suffixes = RASTER_SUFFIXES + TABLE_SUFFIXES
    return sorted(f for f in Path(root).rglob("*") if f.is_file() and f.suffix.lower() in suffixes)


def measure(paths: Iterable[str | Path]) -> list[StorageFigure]:
    """StorageFigure per file; a directory contributes the outputs found under it."""
    out = []
    for path in paths:
        p = Path(path)
        for f in find_outputs(p) if p.is_dir() else [p]:
            out.append(bytes_per_pixel(f))
    return out


def figures_markdown(figures: list[StorageFigure]) -> str:
    """A markdown table, one row per file, plus the total over rasters and tables apiece."""
    lines = ["| file | bytes | pixels | bytes/pixel |", "|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f.path} | {f.bytes:,} | {f.pixels:,} | {f.bytes_per_pixel:.2f} |")
    for label, suffixes in (("GeoTIFF", RASTER_SUFFIXES), ("Parquet", TABLE_SUFFIXES)):
        sel = [f for f in figures if Path(f.path).suffix.lower() in suffixes]
        if sel:
            b, n = sum(f.bytes for f in sel), sum(f.pixels for f in sel)
            lines.append(f"| all {label} | {b:,} | {n:,} | {b / n if n else float('nan'):.2f} |")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.storage PATH ...`: print bytes per pixel."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.storage")
    p.add_argument("paths", nargs="+", help="files or directories of outputs")
    args = p.parse_args(argv)
    print(figures_markdown(measure(args.paths)))
    return 0


if __name__ == "__main__":
    sys.exit(run())
