"""A real region end to end: the WorldCereal Belgium 2021 cube as a provider-style STAC catalog,
`embed` over it, and a quick-look PNG of the place.

    python scripts/real_region.py catalog ../shared/realdata/worldcereal_belgium_2021/inputs.nc \\
        /tmp/belgium/catalog
    earthembed embed --stac /tmp/belgium/catalog/catalog.json \\
        --aoi /tmp/belgium/catalog/aoi.geojson --period 2020-11-01/2021-11-01 \\
        --tile-size 320 --chip-size 32 --halo 8 --out /tmp/belgium/emb
    python scripts/real_region.py show /tmp/belgium/emb \\
        ../shared/realdata/worldcereal_belgium_2021/inputs.nc /tmp/belgium/belgium.png

`catalog` writes the cube's COGs and STAC (beam_jobs/io/worldcereal_stac.py says how each
layer is expressed: Earth Search v1 Sentinel-2 and DEM, Planetary Computer Sentinel-1 RTC).
`show` reads the embedding tile through the one embedding-tile reader, crops it to the cube's
window, prints what was embedded, and writes a PNG: a true-colour composite of a summer month
(B04/B03/B02 of the cube itself) beside the first three principal components of the 64-d
vectors as RGB. --tile-size 320 puts the cube's 1 km window in one tile (a 128 or 256 px tile
grid cuts it at y = 5611520); --chip-size 32 --halo 8 keeps the tiny model's peak memory near
2 GB (96 px chips with a 16 px halo, the defaults, took 9.6 GB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/demo.py beside this file
from demo import _pca_rgb  # noqa: E402

SUMMER_MONTH = "2021-07"


def write_catalog(nc_path: str, out_dir: str) -> Path:
    from beam_jobs.io.worldcereal_stac import write_worldcereal_catalog

    path = write_worldcereal_catalog(nc_path, out_dir)
    print(f"real region: catalog -> {path} (AOI {Path(out_dir) / 'aoi.geojson'})")
    return path


def true_colour(nc_path: str, month: str = SUMMER_MONTH) -> np.ndarray:
    """(H, W, 3) in [0, 1]: B04/B03/B02 reflectance of `month` (YYYY-MM), 2-98% stretch."""
    from beam_jobs.io.realdata import read_worldcereal

    s2 = read_worldcereal(nc_path)["sentinel2_l2a"]
    months = s2.times_ms.astype("datetime64[ms]").astype("datetime64[M]").astype(str)
    if month not in months:
        raise ValueError(f"no composite for {month}; the cube has {', '.join(months)}")
    t = list(months).index(month)
    rgb = np.stack([s2.band(b)[t] for b in ("B04", "B03", "B02")], axis=-1)
    lo, hi = np.nanpercentile(rgb, 2), np.nanpercentile(rgb, 98)
    return np.clip(np.nan_to_num((rgb - lo) / (hi - lo)), 0, 1)


def window_embeddings(emb_dir: str):
    """The embedding field cropped to the cube's 100 x 100 px window."""
    from beam_jobs.io.embeddings import open_embeddings
    from beam_jobs.io.realdata import WORLDCEREAL_WINDOW

    minx, miny, maxx, maxy = WORLDCEREAL_WINDOW.bounds
    bbox = (minx + 1, miny + 1, maxx - 1, maxy - 1)  # the pixels it touches: the window's
    field = open_embeddings(emb_dir, bbox, bbox_crs=f"EPSG:{WORLDCEREAL_WINDOW.epsg}")
    if field.shape != WORLDCEREAL_WINDOW.shape:
        raise ValueError(f"{emb_dir}: cropped field {field.shape}, not the cube's 100 x 100 px")
    return field


def show(emb_dir: str, nc_path: str, out_png: str, month: str = SUMMER_MONTH) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    field = window_embeddings(emb_dir)
    valid = field.valid
    norms = np.linalg.norm(field.values[valid], axis=1)
    print(
        f"real region: {int(valid.sum())} of {valid.size} px embedded; vector norms "
        f"{norms.min():.3f}-{norms.max():.3f}"
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.3), constrained_layout=True)
    axes[0].imshow(true_colour(nc_path, month), interpolation="nearest")
    axes[0].set_title(f"Sentinel-2 true colour, {month} composite")
    axes[1].imshow(_pca_rgb(field.values, valid), interpolation="nearest")
    axes[1].set_title("embeddings 2020-11..2021-10: first 3 PCs as RGB")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle("WorldCereal Belgium 2021, 1 km x 1 km at 10 m (EPSG:32631, 664000 E 5612120 N)")
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    print(f"real region: picture -> {out_png}")


COMMANDS = {"catalog": (write_catalog, (2,)), "show": (show, (3, 4))}


def main(argv: list[str]) -> int:
    fn, counts = COMMANDS.get(argv[0] if argv else "", (None, ()))
    if fn is None or len(argv) - 1 not in counts:
        print(__doc__, file=sys.stderr)
        return 2
    fn(*argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
