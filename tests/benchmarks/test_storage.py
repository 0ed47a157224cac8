"""The storage harness: bytes per pixel of GeoTIFFs and Parquet tables."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine

from benchmarks import storage


def _write_tif(path, h=16, w=32, bands=64):
    data = np.random.default_rng(0).integers(-127, 128, (bands, h, w), dtype=np.int8)
    profile = dict(
        driver="GTiff", height=h, width=w, count=bands, dtype="int8", crs="EPSG:32633",
        transform=Affine(10.0, 0.0, 465180.0, 0.0, -10.0, 5080260.0), compress="deflate",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_bytes_per_pixel_of_tif_and_parquet(tmp_path):
    tif = tmp_path / "tiles" / "a.tif"
    tif.parent.mkdir()
    _write_tif(tif)
    fig = storage.bytes_per_pixel(tif)
    assert fig.pixels == 16 * 32  # bands are what a pixel costs, not more pixels
    assert fig.bytes == tif.stat().st_size
    assert fig.bytes_per_pixel == pytest.approx(tif.stat().st_size / 512)
    # 64 random int8 bands barely compress: about 64 B/px plus the header.
    assert 60 < fig.bytes_per_pixel < 80
    table = tmp_path / "tiles" / "b.parquet"
    pq.write_table(pa.table({"x": np.arange(250, dtype=np.int64)}), table)
    assert storage.bytes_per_pixel(table).pixels == 250
    assert storage.bytes_per_pixel(tmp_path / "tiles", pixels=1000).bytes == (
        tif.stat().st_size + table.stat().st_size
    )
    figures = storage.measure([tmp_path])
    assert [f.path for f in figures] == [str(tif), str(table)]
    md = storage.figures_markdown(figures)
    assert "| all GeoTIFF |" in md and "| all Parquet |" in md


def test_unknown_file_type_needs_a_pixel_count(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"0" * 100)
    with pytest.raises(ValueError, match="GeoTIFF or Parquet"):
        storage.bytes_per_pixel(f)
    assert storage.bytes_per_pixel(f, pixels=25).bytes_per_pixel == 4.0
