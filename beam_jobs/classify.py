"""Labelled points -> a class map (or a value map) per tile, a confidence map, a report, a PNG.

Runbook
-------
Locally (Python FnApiRunner)::

    earthembed classify --embeddings demo_out/embeddings --period 2023 \\
        --labels demo_out/sim/labels/points_2023.parquet --label-column class_name \\
        --method knn --out /tmp/cls
    earthembed classify --embeddings /data/aef --period 2023 --labels plots.csv \\
        --target biomass --method forest --cv-block 2000 --out /tmp/biomass

On Dataflow::

    earthembed classify --embeddings gs://bucket/emb --period 2023 --labels \\
        gs://bucket/pts.parquet --label-column crop --out gs://bucket/cls \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \\
        --setup_file ./setup.py

Few-label mapping (Earth Engine's tutorials: kNN from ~10 points per class; random-forest
regression of a quantity). The labelled points are sampled like `sample` (points off the tiles
or on nodata are dropped and counted), a scikit-learn model is fitted on all of them:
`knn` (k = 3, or fewer with fewer labels), `logistic` (logistic regression; ridge regression
for --target), `forest` (200 trees, `--seed`). Its skill is estimated by spatial
cross-validation: points are grouped into square blocks of `--cv-block` m on the tile grid,
and whole blocks are held out (GroupKFold, `--folds` or the number of blocks if fewer), so a
test point never has a training point in its block.

Outputs under --out (atomically). Classification: `{tile_id}_class.tif` (uint8 1..C in the
order of the sorted label values (numbers as numbers), nodata 0, colour table), `{tile_id}_confidence.tif`
(float32: the predicted class's probability; for knn the share of the k neighbours that
agree), `report.json` (classes, label counts, cross-validated balanced accuracy, overall
accuracy and confusion matrix, rows true, columns predicted), `classify.png`.
Regression (--target): `{tile_id}_value.tif` (float32, NaN nodata), `report.json` (MAE, R^2,
cross-validated), `classify.png`. Beam counters (namespace `classify`): tiles, labels_used,
labels_dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import analysis, runner
from beam_jobs.flags import classify_parser as build_parser
from beam_jobs.io.embeddings import EmbeddingTile
from beam_jobs.sample import SampleEmbeddings
from schemas import embedding

log = logging.getLogger(__name__)

NAMESPACE = "classify"
KNN_K = 3


# ------------------------------------------------------------------------------- pure functions


def make_model(method: str, *, regression: bool, n_train: int, seed: int = 0):
    """An unfitted scikit-learn estimator for `method` (module doc)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    if method == "knn":
        k = max(1, min(KNN_K, n_train))
        return KNeighborsRegressor(k) if regression else KNeighborsClassifier(k)
    if method == "logistic":
        return Ridge(alpha=1.0) if regression else LogisticRegression(C=10.0, max_iter=2000)
    if method == "forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        return cls(n_estimators=200, random_state=seed, n_jobs=1)
    raise ValueError(f"--method must be one of knn, logistic, forest; got {method!r}")


def spatial_blocks(x: np.ndarray, y: np.ndarray, block_m: float) -> np.ndarray:
    """Block id of each point: its cell of a block_m square grid (projected metres)."""
    bx = np.floor(np.asarray(x) / block_m).astype(np.int64)
    by = np.floor(np.asarray(y) / block_m).astype(np.int64)
    _, ids = np.unique(np.stack([bx, by], axis=1), axis=0, return_inverse=True)
    return ids.ravel()


def cross_validate(
    features: np.ndarray,
    target: np.ndarray,
    groups: np.ndarray,
    method: str,
    *,
    regression: bool,
    folds: int,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """Out-of-block predictions for every point (GroupKFold over spatial blocks).

    Returns:
        (predictions, folds used); folds used is 0 (predictions NaN / -1) with one block.
    """
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    k = min(folds, n_groups)
    pred = np.full(
        len(target), np.nan if regression else -1, np.float64 if regression else np.int64
    )
    if k < 2:
        return pred, 0
    for train, test in GroupKFold(n_splits=k).split(features, target, groups):
        if not regression and len(np.unique(target[train])) < 2:
            pred[test] = target[train][0]
            continue
        model = make_model(method, regression=regression, n_train=len(train), seed=seed)
        pred[test] = model.fit(features[train], target[train]).predict(features[test])
    return pred, k


def classification_report(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> dict:
    """Balanced and overall accuracy, confusion matrix (classes 0..n-1; rows true)."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    ok = pred >= 0
    if not ok.any():
        return {"balanced_accuracy": None, "accuracy": None, "confusion_matrix": None}
    cm = confusion_matrix(truth[ok], pred[ok], labels=list(range(n_classes)))
    return {
        "balanced_accuracy": float(balanced_accuracy_score(truth[ok], pred[ok])),
        "accuracy": float((truth[ok] == pred[ok]).mean()),
        "confusion_matrix": cm.tolist(),
    }


def regression_report(truth: np.ndarray, pred: np.ndarray) -> dict:
    """MAE and R^2 of the finite predictions."""
    from sklearn.metrics import mean_absolute_error, r2_score

    ok = np.isfinite(pred)
    if ok.sum() < 2:
        return {"mae": None, "r2": None}
    return {"mae": float(mean_absolute_error(truth[ok], pred[ok])),
            "r2": float(r2_score(truth[ok], pred[ok]))}  # fmt: skip


def predict_map(model, values: np.ndarray, *, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 64) -> (prediction, confidence): uint8 class 1..C (0 nodata) and float32 max
    probability, or float32 value (NaN nodata) and an empty confidence."""
    h, w, c = values.shape
    flat = values.reshape(-1, c)
    valid = np.isfinite(flat).all(axis=1)
    if regression:
        out = np.full(h * w, np.nan, np.float32)
        if valid.any():
            out[valid] = model.predict(flat[valid])
        return out.reshape(h, w), np.zeros((0, 0), np.float32)
    cls = np.zeros(h * w, np.uint8)
    conf = np.full(h * w, np.nan, np.float32)
    if valid.any():
        proba = model.predict_proba(flat[valid])
        best = np.argmax(proba, axis=1)
        cls[valid] = model.classes_[best].astype(np.uint8) + 1
        conf[valid] = proba[np.arange(len(best)), best]
    return cls.reshape(h, w), conf.reshape(h, w)


# ------------------------------------------------------------------------------- DoFns


class PredictTileFn(beam.DoFn):
    """tile + fitted model -> writes its map(s); yields its preview."""

    def __init__(self, out, tags, regression, n_classes, step, block, min_confidence):
        self._out, self._tags, self._reg, self._n = out, tags, regression, n_classes
        self._step, self._block, self._conf = step, block, min_confidence
        self._tiles = Metrics.counter(NAMESPACE, "tiles")

    def process(self, tile: EmbeddingTile, fitted: dict) -> Iterator:
        model = fitted["model"]
        shape = (tile.height, tile.width)
        if self._reg:
            pred = np.full(shape, np.nan, np.float32)
        else:
            pred = np.zeros(shape, np.uint8)
            conf = np.full(shape, np.nan, np.float32)
        for (r0, r1, c0, c1), field in analysis.iter_windows(tile, self._block, self._conf):
            p, c = predict_map(model, field.values, regression=self._reg)
            pred[r0:r1, c0:c1] = p
            if not self._reg:
                conf[r0:r1, c0:c1] = c
        if self._reg:
            analysis.write_map(
                analysis.map_path(self._out, tile, "value"), pred, tile, nodata=np.nan,
                tags=self._tags, band_names=["value"],
            )  # fmt: skip
        else:
            analysis.write_map(
                analysis.map_path(self._out, tile, "class"), pred, tile,
                nodata=analysis.CLASS_NODATA, tags=self._tags, band_names=["class"],
                resampling="nearest", colormap=analysis.class_colormap(self._n),
            )  # fmt: skip
            analysis.write_map(
                analysis.map_path(self._out, tile, "confidence"), conf, tile, nodata=np.nan,
                tags=self._tags, band_names=["confidence"],
            )  # fmt: skip
        self._tiles.inc()
        yield analysis.preview(tile, pred, self._step)


# ------------------------------------------------------------------------------- pipeline


def fit(
    samples: list[tuple],
    tiles_by_id: dict,
    target: np.ndarray,
    *,
    method: str,
    regression: bool,
    cv_block: float,
    folds: int,
    seed: int,
) -> dict:
    """Sampled label points -> {'model', 'report'}: fitted on all, spatially cross-validated."""
    feats, ys, xs, yy = [], [], [], []
    for _, idx, codes, tile_id, rows, cols in samples:
        values = embedding.dequantize(codes)
        ok = np.isfinite(values).all(axis=1)
        x, y = analysis.pixel_xy(tiles_by_id[tile_id], rows[ok], cols[ok])
        feats.append(values[ok])
        ys.append(target[idx[ok]])
        xs.append(x)
        yy.append(y)
    if not feats or sum(len(f) for f in feats) < 2:
        raise ValueError("fewer than two labelled points have an embedding")
    features, ys = np.concatenate(feats), np.concatenate(ys)
    groups = spatial_blocks(np.concatenate(xs), np.concatenate(yy), cv_block)
    pred, used = cross_validate(
        features, ys, groups, method, regression=regression, folds=folds, seed=seed
    )
    report = {"method": method, "labels_used": int(len(ys)), "cv_folds": used,
              "cv_blocks": int(len(np.unique(groups))), "cv_block_m": cv_block}  # fmt: skip
    if regression:
        report.update(regression_report(ys, pred))
    else:
        report["label_counts"] = np.bincount(ys.astype(np.int64)).tolist()
        report.update(classification_report(ys, pred.astype(np.int64), int(ys.max()) + 1))
    model = make_model(method, regression=regression, n_train=len(ys), seed=seed)
    model.fit(features, ys)
    return {"model": model, "report": report}


def build_pipeline(
    pipeline: beam.Pipeline,
    tiles: Sequence[EmbeddingTile],
    labels,
    out: str,
    *,
    label_column: str | None = None,
    target: str | None = None,
    method: str = "knn",
    cv_block: float = 1000.0,
    folds: int = 5,
    seed: int = 0,
    block: int = analysis.DEFAULT_BLOCK,
    min_confidence: float | None = None,
) -> beam.Pipeline:
    """Add the job: label points -> model (+ spatial CV) -> map(s) per tile, report, PNG."""
    regression = target is not None
    column = target if regression else label_column
    if column not in labels.columns:
        raise ValueError(f"column {column!r} not in the labels; columns: {list(labels.columns)}")
    if regression:
        y = labels[column].to_numpy(np.float64)
        if not np.isfinite(y).all():
            raise ValueError(f"--target {column}: missing or non-numeric values")
        names: list[str] = []
    else:
        values = labels[column].to_numpy()
        if values.dtype.kind not in "iuf":  # numbers sort as numbers, anything else as text
            values = values.astype(str)
        names_arr, y = np.unique(values, return_inverse=True)
        names = [str(n) for n in names_arr]
        if len(names) < 2 or len(names) > 254:
            raise ValueError(f"--label-column {column}: need 2..254 classes; got {len(names)}")
    tags = analysis.output_tags(tiles, analysis="classify", method=method, column=column,
                                task="regression" if regression else "classification")  # fmt: skip
    tiles_by_id = {t.tile_id: t for t in tiles}
    step = analysis.preview_step(tiles)
    fitted = (
        pipeline
        | "SampleLabels"
        >> SampleEmbeddings(tiles, labels["lon"].to_numpy(), labels["lat"].to_numpy(), min_confidence)
        | "Gather" >> beam.combiners.ToList()
        | "Fit"
        >> beam.Map(
            fit, tiles_by_id, y, method=method, regression=regression, cv_block=cv_block,
            folds=folds, seed=seed,
        )
    )  # fmt: skip

    def write_report(f):
        doc = {**f["report"], **tags, "labels_given": int(len(labels))}
        if not regression:
            doc["classes"] = {str(i + 1): n for i, n in enumerate(names)}
        analysis.write_json(analysis.out_path(out, "report.json"), doc)

    def write_png(previews, f):
        r = f["report"]
        arr, extent, _ = analysis.mosaic_previews(previews, fill=np.nan if regression else 0)
        path = analysis.out_path(out, "classify.png")
        if regression:
            analysis.render_png(
                path, arr, extent, label=column, cmap="YlGn", tags=tags,
                title=f"{column} ({method}); spatial CV R^2 {r.get('r2') or float('nan'):.2f}, "
                f"MAE {r.get('mae') or float('nan'):.3g}",
            )  # fmt: skip
        else:
            analysis.render_png(
                path, arr.astype(np.float32), extent, kind="classes", tags=tags,
                class_names={i + 1: n for i, n in enumerate(names)},
                title=f"{column} ({method}, {r['labels_used']} labels); spatial CV balanced "
                f"accuracy {r.get('balanced_accuracy') or float('nan'):.2f}",
            )  # fmt: skip

    _ = fitted | "WriteReport" >> beam.Map(write_report)
    _ = (
        pipeline
        | "Tiles" >> analysis.TilesOfPeriod(tiles)
        | "Predict"
        >> beam.ParDo(
            PredictTileFn(out, tags, regression, len(names), step, block, min_confidence),
            beam.pvalue.AsSingleton(fitted),
        )
        | "GatherPreviews" >> beam.combiners.ToList()
        | "WritePNG" >> beam.Map(write_png, beam.pvalue.AsSingleton(fitted))
    )
    return pipeline


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed classify`."""
    from beam_jobs.io.points import read_point_locations

    p = build_parser()
    args, beam_args = runner.parse_job_args(p, argv)
    runner.setup_logging(args.verbose)
    try:
        if args.cv_block <= 0 or args.folds < 2:
            raise ValueError("--cv-block must be > 0 and --folds >= 2")
        tiles = analysis.tiles_from_args(args)
        labels = read_point_locations(args.labels)
        analysis.run_pipeline(
            beam_args, build_pipeline, tiles, labels, args.out, label_column=args.label_column,
            target=args.target, method=args.method, cv_block=args.cv_block, folds=args.folds,
            seed=args.seed, block=args.block, min_confidence=args.min_confidence,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    return 0
