"""The helper steps of `make demo`: the demo region's AOI, a look at its embeddings, the query
points of the similarity search, and the page that gathers the analyses' results.

    python scripts/demo.py aoi demo_out/sim demo_out/aoi.geojson
    python scripts/demo.py show demo_out/emb/2023 demo_out/sim 2023 demo_out/demo.png
    python scripts/demo.py query demo_out/sim 2023 water demo_out/query.csv
    python scripts/demo.py report demo_out

`aoi` writes the simulated region as a lon/lat GeoJSON (1 m inside its UTM windows, so the
embed job's grid snaps onto exactly the simulated tiles). `show` reads the embedding
tiles through the one embedding-tile reader (`beam_jobs.io.embeddings.open_embeddings`, which
also opens AEF's public tiles), prints what was embedded, and writes a PNG: the first three
principal components of the 64-d vectors as RGB next to the simulated land-cover map, and a
1-nearest-neighbour map from 10 labelled pixels per class. The simulated classes are the ones
the shipped model was pretrained on, so that map shows the pipeline working, not the model's
quality on real pixels (benchmarks/RESULTS.md has the yardsticks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

PER_CLASS = 10


def write_aoi(sim_dir: str, out: str) -> None:
    """Write the simulated region of `sim_dir` as a lon/lat GeoJSON geometry, 1 m inside."""
    import simulation

    geometry = simulation.region_aoi(simulation.load_region(sim_dir), inset_m=1.0)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(geometry))
    print(f"demo: AOI of the simulated region -> {out}")


def _pca_rgb(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W, 64) -> (H, W, 4) RGBA in [0, 1]: the first three principal components, 2-98% stretch."""
    x = values[valid].astype(np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    pcs = x @ vt[:3].T
    lo, hi = np.percentile(pcs, 2, axis=0), np.percentile(pcs, 98, axis=0)
    rgba = np.zeros(valid.shape + (4,))
    rgba[valid, :3] = np.clip((pcs - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
    rgba[valid, 3] = 1.0  # transparent where there is no embedding
    return rgba


def show(emb_dir: str, sim_dir: str, year: str, out_png: str) -> None:
    """Print a summary of the embedding tiles under `emb_dir` and write the demo PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from rasterio.warp import Resampling, reproject

    from beam_jobs.io.embeddings import open_embeddings

    field = open_embeddings(emb_dir)
    valid = field.valid
    norms = np.linalg.norm(field.values[valid], axis=1)
    tiles = sorted(p for p in Path(emb_dir).rglob("*.tif") if not p.name.endswith("_quality.tif"))
    print(
        f"demo: {len(tiles)} tiles, {field.shape[1]} x {field.shape[0]} px, "
        f"{int(valid.sum())} valid px; vector norms {norms.min():.3f}-{norms.max():.3f}"
    )

    labels = np.zeros(field.shape, np.uint8)
    with rasterio.open(Path(sim_dir) / "labels" / f"landcover_{year}.tif") as src:
        reproject(
            src.read(1),
            labels,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=field.transform,
            dst_crs=field.crs,
            resampling=Resampling.nearest,
        )
    names = json.loads((Path(sim_dir) / "sim_params.json").read_text())["classes"]

    rng = np.random.default_rng(0)
    known = valid & (labels > 0)
    train = []
    for c in np.unique(labels[known]):
        idx = np.flatnonzero((labels == c) & known)
        train.extend(rng.choice(idx, size=min(PER_CLASS, idx.size), replace=False))
    train = np.asarray(train)
    flat = field.values.reshape(-1, field.values.shape[-1])
    sims = np.nan_to_num(flat) @ flat[train].T
    predicted = labels.reshape(-1)[train][np.argmax(sims, axis=1)].reshape(labels.shape)
    test = known.copy()
    test.reshape(-1)[train] = False
    accuracy = float((predicted[test] == labels[test]).mean())
    print(
        f"demo: 1-NN from {PER_CLASS} labelled px per class ({len(train)} in all): "
        f"{accuracy:.3f} of the other {int(test.sum())} labelled px agree with the simulated map"
    )

    cmap = plt.get_cmap("tab20", 20)
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), constrained_layout=True)
    axes[0].imshow(_pca_rgb(field.values, valid))
    axes[0].set_title(f"embeddings {year}: first three principal components as RGB")
    for ax, img, title in (
        (axes[1], labels, "simulated land cover"),
        (axes[2], np.where(valid, predicted, 0), f"1-NN map from {PER_CLASS} px per class"),
    ):
        ax.imshow(np.ma.masked_equal(img, 0), cmap=cmap, vmin=0, vmax=19, interpolation="nearest")
        ax.set_title(title)
    present = sorted(int(c) for c in np.unique(labels[labels > 0]))
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(c)) for c in present]
    axes[1].legend(
        handles,
        [names[str(c)] for c in present],
        fontsize=6,
        ncol=4,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
    )
    for ax in axes:
        ax.set_axis_off()
    fig.savefig(out_png, dpi=110)
    print(f"demo: picture -> {out_png}")


def write_query(sim_dir: str, year: str, class_name: str, out: str, n: int = 5) -> None:
    """The first `n` labelled points of one simulated class as a lon/lat CSV (similarity's
    --query-file); errors name the classes there are."""
    import geopandas as gpd

    points = gpd.read_parquet(Path(sim_dir) / "labels" / f"points_{year}.parquet").to_crs(4326)
    chosen = points[points["class_name"] == class_name].head(n)
    if chosen.empty:
        raise SystemExit(
            f"demo: no {class_name!r} points; classes: {sorted(set(points.class_name))}"
        )
    Path(out).write_text("lon,lat\n" + "".join(f"{g.x:.7f},{g.y:.7f}\n" for g in chosen.geometry))
    print(f"demo: {len(chosen)} {class_name} points as the similarity query -> {out}")


# The analyses `make demo` runs, in order: (title, the PNG, a JSON whose facts go in the table).
REPORT = (
    ("Embeddings 2023 (PCA) and a 1-NN map", "demo.png", None),
    ("Quick look (PCA of the 64 bands)", "quicklook.png", None),
    ("Similarity to 5 water pixels", "similarity/similarity.png", "similarity/query.json"),
    ("Change 2023 -> 2024", "change/change.png", "change/threshold.json"),
    ("k-means clusters", "cluster/cluster.png", "cluster/clusters.json"),
    ("Classification from the labelled points", "classify/classify.png", "classify/report.json"),
)


def _facts(doc: dict) -> str:
    keep = []
    for k, v in doc.items():
        if isinstance(v, (int, float, str)) and len(str(v)) < 60:
            keep.append(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}")
    return "; ".join(keep[:6])


def write_report(demo_out: str) -> None:
    """demo_out/README.md: a table of what the demo wrote and every PNG, in one page."""
    root = Path(demo_out)
    rows, pictures = [], []
    for title, png, facts in REPORT:
        path = root / png
        if not path.exists():
            raise SystemExit(f"demo: {path} is missing: did the step before `report` fail?")
        doc = json.loads((root / facts).read_text()) if facts else {}
        rows.append(f"| {title} | `{png}` | {_facts(doc)} |")
        pictures.append(f"## {title}\n\n![{title}]({png})\n")
    cogs = sorted(
        str(p.relative_to(root))
        for p in root.glob("*/**/*.tif")
        if p.relative_to(root).parts[0] != "sim"
    )
    page = [
        "# make demo: results",
        "",
        "| step | picture | facts |",
        "|---|---|---|",
        *rows,
        "",
        f"{len(cogs)} GeoTIFFs written by the embed and analysis jobs (embedding tiles, quality "
        f"sidecars, maps), beside the simulated catalog in {demo_out}/sim.",
        "",
        *pictures,
    ]
    (root / "README.md").write_text("\n".join(page))
    print(f"demo: results page -> {root / 'README.md'}")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "aoi":
        write_aoi(argv[1], argv[2])
        return 0
    if len(argv) == 5 and argv[0] == "show":
        show(*argv[1:])
        return 0
    if len(argv) == 5 and argv[0] == "query":
        write_query(*argv[1:])
        return 0
    if len(argv) == 2 and argv[0] == "report":
        write_report(argv[1])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
