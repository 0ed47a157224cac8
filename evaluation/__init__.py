"""Few-shot quality benchmark: frozen features, kNN, logistic and ridge probes, designed
baselines, paired statistics.

Runbook (each writes DIR/results.json, DIR/results.md and DIR/results.png):

    earthembed evaluate --dataset sim:101:tropical --embedder baselines --out /tmp/eval_sim
    earthembed evaluate --dataset eolearn --out /tmp/eval_eo
    earthembed evaluate --dataset points:obs.parquet:labels.parquet --out /tmp/eval_pts
    earthembed evaluate --dataset eolearn --embedder path/to/bundle --out /tmp/eval_model
    earthembed evaluate --dataset eolearn --embedder mypkg.mymodule:embed --out /tmp/eval_toy
    earthembed evaluate --dataset eolearn:s2dem --embedder model/weights/tiny --out /tmp/e_s2dem
    earthembed evaluate --dataset fuel_moisture --embedder model/weights/tiny --out /tmp/e_fm
    earthembed evaluate --dataset fuel_moisture:val --embedder B --out /tmp/e_fm_val
    earthembed evaluate --dataset eolearn:s2:val --embedder B --out /tmp/e_eo_val
    earthembed evaluate --dataset simfine:303:tropical:crops --embedder B --out /tmp/e_fine
    earthembed evaluate --dataset simlai:404:temperate --embedder B --out /tmp/e_lai
    earthembed evaluate --dataset simchange:303:tropical --embedder B --out /tmp/e_change

Data sets (`--dataset`):
  * `sim:SEED:BIOME`: a held-out simulated region (`earthembed simulate`, one year, a few km;
    cached under `--cache-dir`), its land-cover map as labels, its whole window read once.
  * `eolearn`: the real Slovenia patch in shared/realdata (101 x 100 px, land cover from the
    reference polygons: forest, grassland, shrubland, artificial surface have >= 50 px). The
    embedder sees its five reference S2 scenes (TOA, July-September 2015) and the DEM; the
    `designed` baseline also gets the NDVI series (68 dates, 2015-07 .. 2017-12, cloud-masked)
    as a pseudo-band, its monthly medians pooling the same month across the years. Not like
    for like; the variants are: `eolearn:s2` (embedder and baselines both see the five
    scenes' bands only: no DEM, no NDVI series) and `eolearn:s2dem` (both see the five scenes
    and the DEM). A bundle may still drop a source it is given (the shipped tiny bundle's
    `model.embed_without` drops the DEM), which the report's `embed_without` does not show.
    The shipped bundle pretrained on 1,500 unlabelled pixels of this patch (scripts/
    pretrain.sh): its eolearn figures are not on pixels it never saw.
    `eolearn[:s2|:s2dem]:val` is the place to choose settings on this patch: the train
    pool's pixels alone, split again by 10 px blocks with another seed (a 1 px buffer
    between the sides; at seed 0 forest 544 / 410, grassland 394 / 516, shrubland 57 / 47,
    artificial surface 16 / 13 px), the test pixels not read.
  * `fuel_moisture`: presto's live fuel moisture set (shared/realdata/presto_fuel_moisture,
    2313 samples at 153 sites in the western US; target: live fuel moisture in %), a
    REGRESSION task on the set's own split by site (1578 train / 735 test). Each sample is a
    point with three consecutive 30-day composites (beam_jobs.io.realdata.read_fuel_moisture:
    Sentinel-1 dB, Sentinel-2 reflectance / 10000 without B09, ERA5 K and m/day, DEM static;
    the file's NDVI left out), written as a point observation table under the cache and read
    back through it (the table `earthembed embed-points` takes). The file has calendar months
    but no year: the steps are placed in 2021, 30 days apart, at the middle of the start days
    that fit the months; a step past December is folded into January of 2021, so every sample
    lies in one calendar year (the bundle's default period). Pretraining never saw it.
    `fuel_moisture:val` is the place to choose settings: the TRAINING sites alone, about 30%
    of them held out by a seeded hash of the site name (`--seed`), the test sites not read.
  * Held-out simulated tasks, on labels pretraining never used (its label term read the
    simulator's land cover of 2023 on the demo footprint, seeds 11 and 12; `sim:` above uses
    seeds 101 and 202 on that footprint and year). These simulate SIM_EVAL_YEARS (2021,
    2022) on a footprint SIM_EVAL_OFFSET_M (40 km) east of the biome's demo centre, with the
    seed given (use SIM_EVAL_SEEDS: 303 tropical, 404 temperate), `--sim-size-km` square:
    - `simfine:SEED:BIOME[:crops|forests]`: few-shot classification among the fine classes of
      one coarse group (crops: crop_a, crop_b, double_crop; forests: evergreen, deciduous) in
      2021, the same protocol as `sim:` within the group's pixels.
    - `simlai:SEED:BIOME`: regression of each pixel's peak LAI of 2021
      (`simulation.peak_lai`), random train and test pixels on either side of the block split
      (train pool `--max-per-class`, test `--max-test`).
    - `simchange:SEED:BIOME`: change detection 2021 -> 2022, no training: up to
      CHANGE_MAX_PER_SIDE pixels whose land cover changes (`simulation.event_codes`) and as
      many that do not; score = 1 - dot(emb_2021, emb_2022) (rows L2-normalized) against the
      standardized Euclidean difference of the baselines' features (median composite,
      designed); ROC AUC, overall and per event type.
  * `points:OBS.parquet:LABELS.parquet`: a point observation table (see ARCHITECTURE.md) plus
    a `point_id,label[,is_test]` table; without `is_test`, points are split by hashed square
    UTM cells of `--block` x 10 m (no buffer: points further apart than a cell are assumed
    independent).

The embedder contract (`--embedder`): a callable `embed(observations) -> array` where
`observations` is a `schemas.observations.Observations` over a grid window (H x W pixels) or
a point set (N points, H = N, W = 1), exactly as the readers return it (registry units, NaN
and valid masks as read, all sources the data set has). It returns a float array of shape
(H * W, D): one row per pixel in row-major order (row 0 left to right, then row 1, ...), or
for a point set N rows in point order. Rows may be NaN where a pixel cannot be embedded.
`--embedder` is `baselines` (no embedder), a model bundle path (`model.load_bundle(path)`,
whose `.embed` follows the contract) or `module:function` naming any such callable.

Protocol (after AlphaEarth Foundations' evaluation):
  * Labelled pixels come from classes with at least `min_class_pixels` (50) labelled pixels.
    Rasters are split into train and test by square blocks (`--block` px) assigned by a
    seeded hash of the block position, and train pixels within `buffer` (1) px of a test
    pixel are dropped, so no pixel has an 8-neighbour on the other side. Random pixel splits
    are never used: neighbouring pixels are nearly copies of each other.
  * The train pool keeps at most `max_per_class` (1000) pixels per class and the test set at
    most `max_test` (4000) pixels split evenly over classes (random, seeded, fixed for the
    whole run), which bounds the run time on two cores; balanced accuracy does not depend on
    how many test pixels each class has, only on how well each is estimated.
  * A budget b draws min(b, n_c) training pixels per class c from the train pool (class-
    balanced), `repeats` times with different seeds; the same draws serve every feature set,
    so comparisons are paired. `max` takes the whole train pool: it is the same every repeat,
    so it runs once and its std is 0. The pool keeps the classes' natural imbalance (up to the
    cap), which the logistic probe offsets with balanced class weights and kNN does not.
  * Probes on frozen features: kNN with k=1 and k=min(3, n_train) (Euclidean, uniform votes,
    a tie going to the tied class with the nearest neighbour, so at 1 per class k=3 acts as
    k=1 instead of picking the smallest label) and multinomial logistic regression (lbfgs, C=1, balanced class weights). Features are
    standardized with the training draw's mean and std (std 0 -> 1); NaN features are then
    imputed with the training mean, i.e. 0. Score: balanced accuracy on the test pixels.
  * A feature set's score at a budget is its best probe's mean. `best_baseline` is the best
    baseline at each budget; `error_reduction` = 1 - (1 - acc_embedding) / (1 - acc_best).
    The probe and the best baseline are picked by their mean on the test pixels, the same
    for every feature set (the embedding gets no more choice than a baseline).
  * Paired statistics (`paired`, evaluation/paired.py), at every budget: per draw,
    d = metric(embedding, its best probe) - metric(best baseline, its probe) on the same
    training draw; reported: mean, sample sd (ddof 1), a 95% t interval of the mean (draw-
    to-draw variation only: the test set is fixed; `max` is one draw, sd 0), the per-draw
    error reduction's mean and sd, and the share of draws the embedding wins.
  * Regression (fuel_moisture, simlai): a budget b draws min(b, pool) training samples in
    all (random, `repeats` times; default budgets 10, 100, max). Probes: kNN regression with
    k = min(5, n_train) (Euclidean, mean target) and ridge with its alpha chosen among
    RIDGE_ALPHAS by leave-one-out error inside the training draw (the test split never
    chooses anything), after the same standardization. Scores: MAE and R^2 (1 - SSE / SST
    about the test mean) on the test split; the best baseline has the lowest mean MAE;
    `error_reduction` = 1 - MAE_embedding / MAE_best; paired statistics for MAE and R^2.
  * Change: bootstrap resamples (CHANGE_BOOTSTRAP, changed and unchanged pixels resampled
    separately) stand in for draws in the paired statistics of the AUC.

Baselines, computed from the same pixels' raw observations:
  * `median_composite`: the per-band median of the valid Sentinel-2 frames (10 features).
  * `designed`: for every band of every time-varying source, the 10th/50th/90th percentiles
    and the 12 calendar-monthly medians of its valid values; static sources (DEM) as they are.
  * `pca64`: `designed` standardized over all data-set pixels (no labels), PCA to 64 dims.
  * `xy`: longitude and latitude only, a control for how much location alone explains.
  * `raw_series` (fuel_moisture): the raw series as the embedder gets it, flattened in step
    order (3 steps x 14 time-varying bands, then elevation and slope: 44 features; the
    file's B09 and NDVI are left out on both sides).
"""

# The protocol's numbers (pure Python, so `earthembed evaluate --help` imports nothing heavy).
PROBES: tuple[str, ...] = ("knn1", "knn3", "logreg")
BASELINES: tuple[str, ...] = ("median_composite", "designed", "pca64", "xy")
PERCENTILES: tuple[float, ...] = (10.0, 50.0, 90.0)
MAX_BUDGET = "max"
MIN_CLASS_PIXELS = 50
MAX_PER_CLASS = 1000
MAX_TEST = 4000
# Fewer than this many train or test pixels of a class and its balanced accuracy is noise.
MIN_SPLIT_PIXELS = 10
PCA_DIMS = 64
DEFAULT_BLOCK = {
    "sim": 16,
    "simfine": 16,
    "simlai": 16,
    "simchange": 16,
    "eolearn": 10,
    "points": 16,
    "fuel_moisture": 16,  # unused: the set comes with its own split by site
}
SIM_SIZE_KM = 2.56
SIM_YEAR = 2023
# Regression probes and the ridge penalties that leave-one-out picks from (inside training).
REGRESSION_PROBES: tuple[str, ...] = ("knn5", "ridge")
RIDGE_ALPHAS: tuple[float, ...] = tuple(10.0**k for k in range(-3, 6))
DEFAULT_BUDGETS = {"classification": "1,10,max", "regression": "10,100,max"}
# Held-out simulated tasks (simfine, simlai, simchange): years and footprint pretraining never
# used (it used 2023 and the demo footprint, seeds 11 and 12; the landcover benchmarks 101,
# 202). The footprint is the biome's demo centre moved SIM_EVAL_OFFSET_M east.
SIM_EVAL_YEARS: tuple[int, int] = (2021, 2022)
SIM_EVAL_OFFSET_M = 40_000.0
SIM_EVAL_SEEDS = {"tropical": 303, "temperate": 404}
# Change task: at most this many changed and as many unchanged pixels; bootstrap resamples.
CHANGE_MAX_PER_SIDE = 2000
CHANGE_BOOTSTRAP = 30
