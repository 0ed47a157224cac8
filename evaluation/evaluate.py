"""`earthembed evaluate`: probe designed baselines (and an embedder) on a data set, write the report.

Runbook (each writes DIR/results.json, DIR/results.md and DIR/results.png):

    earthembed evaluate --dataset sim:101:tropical --embedder baselines --out /tmp/eval_sim
    earthembed evaluate --dataset eolearn --out /tmp/eval_eo
    earthembed evaluate --dataset eolearn --embedder path/to/bundle --out /tmp/eval_model
    earthembed evaluate --dataset eolearn:s2 --embedder model/weights/tiny --out /tmp/eval_s2
    earthembed evaluate --dataset fuel_moisture --embedder model/weights/tiny --out /tmp/eval_fm
    earthembed evaluate --dataset simchange:303:tropical --embedder baselines --out /tmp/eval_ch

The protocol, the data sets and the embedder contract: the evaluation package docstring
(evaluation/__init__.py). This module imports only the standard library at load time (numpy,
the readers, sklearn and the model are imported by the functions that use them), so
`earthembed evaluate --help` starts fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation import (
    CHANGE_BOOTSTRAP,
    DEFAULT_BLOCK,
    DEFAULT_BUDGETS,
    MAX_PER_CLASS,
    MAX_TEST,
    PROBES,
    REGRESSION_PROBES,
    SIM_SIZE_KM,
    SIM_YEAR,
)

if TYPE_CHECKING:
    import numpy as np

    from evaluation.datasets import ChangePixels, LabelledPixels
    from schemas.observations import Observations

log = logging.getLogger(__name__)

Embedder = Callable[["Observations"], "np.ndarray"]


def embed_pixels(
    embedder: Embedder, dataset: LabelledPixels, without: Sequence[str] = ()
) -> np.ndarray:
    """Run an embedder on the data set's observations (less the sources `without`); rows of
    its labelled pixels."""
    return embed_observations(embedder, dataset.observations, dataset.pixel_index, without)


def embed_observations(
    embedder: Embedder, obs: Observations, index: np.ndarray, without: Sequence[str] = ()
) -> np.ndarray:
    """Run an embedder on a window or point set (less the sources `without`); rows `index`."""
    import numpy as np

    if without:
        if missing := sorted(set(without) - set(obs.sources)):
            raise ValueError(
                f"--embed-without: {missing} not in the data set's sources {sorted(obs.sources)}"
            )
        obs = obs.without(without)
    h, w = obs.spatial_shape
    emb = np.asarray(embedder(obs), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != h * w:
        raise ValueError(
            f"embedder returned shape {emb.shape}; the contract is (H * W, D) = ({h * w}, D) "
            "rows in row-major pixel order (see evaluation/__init__.py)"
        )
    return emb[index]


def evaluate(
    dataset: LabelledPixels,
    embedder: Embedder | None = None,
    budgets: Sequence[int | None] = (1, 10, None),
    repeats: int = 30,
    seed: int = 0,
    probes: Sequence[str] = PROBES,
    embed_without: Sequence[str] = (),
) -> dict:
    """Probe the baselines (and an embedder) on a data set.

    Args:
        dataset: labelled pixels and their observations.
        embedder: a callable following the embedder contract (evaluation/__init__.py),
            or None.
        budgets: samples per class; None = the whole train pool (`max`).
        repeats: draws per numeric budget.
        seed: draw seed.
        probes: which probes.
        embed_without: sources the embedder does not see (the baselines see every source).

    Returns:
        A dict with `dataset`, `features`, `best_baseline` and, with an embedder,
        `embedding` and `error_reduction`, plus `class_recall` ({feature set: {budget:
        {probe: {class id: mean recall}}}}), `classes`, counts, settings and timings.
    """
    import numpy as np

    from evaluation.paired import accuracy_error
    from evaluation.probes import best_probe, budget_key, error_reduction, probe_feature_sets

    t0 = time.perf_counter()
    feature_sets = _baseline_sets(dataset, seed)
    timings = {"baseline_features_s": time.perf_counter() - t0}
    if embedder is not None:
        t1 = time.perf_counter()
        feature_sets["embedding"] = embed_pixels(embedder, dataset, embed_without)
        timings["embed_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    recall: dict = {}
    draws: dict = {}
    scores = probe_feature_sets(
        feature_sets, dataset.labels, dataset.is_test, budgets, repeats, seed, probes, recall, draws
    )
    timings["probes_s"] = time.perf_counter() - t2
    baselines = {k: v for k, v in scores.items() if k != "embedding"}
    best = {}
    for b in budgets:
        bk = budget_key(b)
        ranked = [(best_probe(entry[bk]), name) for name, entry in baselines.items()]
        (probe, acc), name = max(ranked, key=lambda t: t[0][1])
        best[bk] = {"name": name, "probe": probe, "balanced_accuracy": acc}
    train = ~dataset.is_test
    results = {
        "dataset": dataset.name,
        "features": baselines,
        "best_baseline": best,
        "classes": {str(c): n for c, n in sorted(dataset.class_names.items())},
        "n_train_pool": {
            str(c): int(np.sum(train & (dataset.labels == c))) for c in dataset.class_names
        },
        "n_test": {
            str(c): int(np.sum(dataset.is_test & (dataset.labels == c)))
            for c in dataset.class_names
        },
        "feature_dims": {k: int(v.shape[1]) for k, v in feature_sets.items()},
        "budgets": [budget_key(b) for b in budgets],
        "repeats": repeats,
        "seed": seed,
        "probes": list(probes),
        "info": dataset.info,
        "class_recall": {
            name: {
                bk: {p: {str(c): r for c, r in pc.items()} for p, pc in e.items()}
                for bk, e in v.items()
            }
            for name, v in recall.items()
        },
    }
    if embedder is not None:
        results["embed_without"] = list(embed_without)
        results["embedding"] = scores["embedding"]
        results["error_reduction"] = {
            bk: error_reduction(
                best_probe(scores["embedding"][bk])[1], best[bk]["balanced_accuracy"]
            )
            for bk in best
        }
        results["paired"] = {
            bk: paired_against_best(
                {k: v[bk] for k, v in draws.items()},
                error=accuracy_error,
                baseline=(best[bk]["name"], best[bk]["probe"]),
            )
            for bk in best
        }
    timings["total_s"] = time.perf_counter() - t0
    results["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return results


def _baseline_sets(dataset: LabelledPixels, seed: int) -> dict[str, np.ndarray]:
    """The baselines of a data set's labelled pixels, empty ones left out, plus the loader's."""
    from evaluation.baselines import baseline_features

    sets = baseline_features(
        dataset.observations, dataset.pixel_index, dataset.extra_series, seed=seed
    )
    sets.update(dataset.extra_features)
    return {k: v for k, v in sets.items() if v.shape[1] > 0}


def paired_against_best(
    per_draw: dict, *, error, metric: str | None = None, baseline: tuple[str, str] | None = None
) -> dict:
    """Paired statistics of the embedding against the best baseline at one budget.

    Args:
        per_draw: {feature set: {probe: per-draw values}} (regression: {probe: {metric:
            per-draw values}}), with an `embedding` entry.
        error: the selection metric -> an error (lower is better).
        metric: for regression, the selection metric's key (MAE); the others get paired
            statistics too, on the same pair (error of R^2 = 1 - R^2).
        baseline: (feature set, probe) to compare with; default the lowest mean error.

    Returns:
        {"baseline", "baseline_probe", "embedding_probe", then the paired_stats of the
        selection metric}; regression: {..., "mae": stats, "r2": stats}.
    """
    from evaluation.paired import accuracy_error, best_entry, paired_stats

    def pick(entry):
        return entry if metric is None else {p: v[metric] for p, v in entry.items()}

    base = {k: pick(v) for k, v in per_draw.items() if k != "embedding"}
    name, probe = baseline or best_entry(base, error=error)[:2]
    _, e_probe, _ = best_entry({"embedding": pick(per_draw["embedding"])}, error=error)
    out = {"baseline": name, "baseline_probe": probe, "embedding_probe": e_probe}
    if metric is None:
        emb, ref = per_draw["embedding"][e_probe], per_draw[name][probe]
        return {**out, **paired_stats(emb, ref, error=error)}
    for m in per_draw["embedding"][e_probe]:
        err = error if m == metric else accuracy_error
        emb, ref = per_draw["embedding"][e_probe][m], per_draw[name][probe][m]
        out[m] = paired_stats(emb, ref, error=err)
    return out


def evaluate_regression(
    dataset: LabelledPixels,
    embedder: Embedder | None = None,
    budgets: Sequence[int | None] = (10, 100, None),
    repeats: int = 30,
    seed: int = 0,
    probes: Sequence[str] = REGRESSION_PROBES,
    embed_without: Sequence[str] = (),
) -> dict:
    """Regression probes (kNN k=5, ridge) on the baselines (and an embedder).

    Budgets are training samples in all (random draws of the train pool; None = all of it,
    once). The best baseline at a budget is the (feature set, probe) of lowest mean MAE;
    `error_reduction` = 1 - MAE_embedding / MAE_best; `paired` holds the per-draw statistics.

    Returns:
        A dict with `task` "regression", `features` ({name: {budget: {probe: {"mae": [mean,
        std], "r2": [mean, std]}}}}), `best_baseline`, and with an embedder `embedding`,
        `error_reduction`, `paired`; counts, settings and timings.
    """
    import numpy as np

    from evaluation.paired import identity_error
    from evaluation.probes import budget_key
    from evaluation.regression import probe_regression_sets

    t0 = time.perf_counter()
    feature_sets = _baseline_sets(dataset, seed)
    timings = {"baseline_features_s": time.perf_counter() - t0}
    if embedder is not None:
        t1 = time.perf_counter()
        feature_sets["embedding"] = embed_pixels(embedder, dataset, embed_without)
        timings["embed_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    draws = probe_regression_sets(
        feature_sets, dataset.targets, dataset.is_test, budgets, repeats, seed, probes
    )
    timings["probes_s"] = time.perf_counter() - t2

    def summary(entry):
        return {
            bk: {
                p: {m: [float(np.mean(v)), float(np.std(v))] for m, v in pm.items()}
                for p, pm in e.items()
            }
            for bk, e in entry.items()
        }

    feats = {k: summary(v) for k, v in draws.items()}
    best = {}
    for b in budgets:
        bk = budget_key(b)
        ranked = [
            (e[bk][p]["mae"][0], name, p)
            for name, e in feats.items()
            if name != "embedding"
            for p in e[bk]
        ]
        mae, name, p = min(ranked)
        best[bk] = {"name": name, "probe": p, "mae": mae, "r2": feats[name][bk][p]["r2"][0]}
    y = dataset.targets
    results = {
        "dataset": dataset.name,
        "task": "regression",
        "features": {k: v for k, v in feats.items() if k != "embedding"},
        "best_baseline": best,
        "n_train_pool": int((~dataset.is_test).sum()),
        "n_test": int(dataset.is_test.sum()),
        "target": {
            "train_mean": float(y[~dataset.is_test].mean()),
            "test_mean": float(y[dataset.is_test].mean()),
            "test_sd": float(y[dataset.is_test].std()),
        },
        "feature_dims": {k: int(v.shape[1]) for k, v in feature_sets.items()},
        "budgets": [budget_key(b) for b in budgets],
        "repeats": repeats,
        "seed": seed,
        "probes": list(probes),
        "info": dataset.info,
    }
    if embedder is not None:
        results["embed_without"] = list(embed_without)
        results["embedding"] = feats["embedding"]
        results["error_reduction"] = {}
        results["paired"] = {}
        for bk in best:
            e_mae = min(v["mae"][0] for v in feats["embedding"][bk].values())
            results["error_reduction"][bk] = 1.0 - e_mae / best[bk]["mae"]
            results["paired"][bk] = paired_against_best(
                {k: v[bk] for k, v in draws.items()},
                error=identity_error,
                metric="mae",
                baseline=(best[bk]["name"], best[bk]["probe"]),
            )
    timings["total_s"] = time.perf_counter() - t0
    results["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return results


def change_scores(before: np.ndarray, after: np.ndarray, *, cosine: bool) -> np.ndarray:
    """Per-pixel change scores from two years' features (rows = pixels).

    cosine: 1 - dot of the L2-normalized rows (an embedding; NaN rows score 0). Otherwise
    the Euclidean distance of the rows after standardizing every column over both years'
    rows together (designed features; NaN -> the mean, 0).
    """
    import numpy as np

    from evaluation.probes import standardize

    if cosine:
        a = before / np.linalg.norm(before, axis=1, keepdims=True)
        b = after / np.linalg.norm(after, axis=1, keepdims=True)
        return np.nan_to_num(1.0 - np.sum(a * b, axis=1), nan=0.0)
    both = np.concatenate([before, after])
    z = standardize(both, both)
    n = len(before)
    return np.linalg.norm(z[:n] - z[n:], axis=1)


def evaluate_change(
    dataset: ChangePixels,
    embedder: Embedder | None = None,
    seed: int = 0,
    bootstrap: int = CHANGE_BOOTSTRAP,
    embed_without: Sequence[str] = (),
) -> dict:
    """Change detection between two years: ROC AUC of per-pixel scores, no training.

    Scores: the embedding's 1 - dot(emb_before, emb_after); the baselines' (median
    composite, designed) standardized Euclidean differences (`change_scores`). Paired
    statistics over `bootstrap` resamples of the pixels (changed and unchanged resampled
    separately, with replacement), the same resamples for every score.

    Returns:
        A dict with `task` "change", `features` ({name: {"auc": full-sample AUC}}),
        `best_baseline`, `per_event` AUCs, and with an embedder `embedding`,
        `error_reduction` (1 - (1 - AUC_e) / (1 - AUC_b)) and `paired`.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from evaluation.baselines import designed_features, median_composite, select_pixels
    from evaluation.paired import accuracy_error, paired_stats

    t0 = time.perf_counter()
    idx = dataset.pixel_index
    before, after = select_pixels(dataset.before, idx), select_pixels(dataset.after, idx)
    scores = {
        name: change_scores(fn(before), fn(after), cosine=False)
        for name, fn in (("median_composite", median_composite), ("designed", designed_features))
    }
    timings = {"baseline_features_s": time.perf_counter() - t0}
    if embedder is not None:
        t1 = time.perf_counter()
        e0 = embed_observations(embedder, dataset.before, idx, embed_without)
        e1 = embed_observations(embedder, dataset.after, idx, embed_without)
        scores["embedding"] = change_scores(e0, e1, cosine=True)
        timings["embed_s"] = time.perf_counter() - t1
    y = dataset.changed
    auc = {k: float(roc_auc_score(y, v)) for k, v in scores.items()}
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    rng = np.random.default_rng([seed, 17])
    boot = {k: [] for k in scores}
    for _ in range(bootstrap):
        sel = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for k, v in scores.items():
            boot[k].append(float(roc_auc_score(y[sel], v[sel])))
    base = {k: a for k, a in auc.items() if k != "embedding"}
    best_name = max(base, key=base.get)
    event_types = dataset.info.get("event_types", [])
    per_event = {}
    for code in sorted(set(dataset.event_codes[y].tolist())):
        sel = np.concatenate([np.flatnonzero(dataset.event_codes == code), neg])
        label = event_types[code - 1] if 0 < code <= len(event_types) else str(code)
        per_event[label] = {
            "n": int(np.sum(dataset.event_codes == code)),
            **{k: float(roc_auc_score(y[sel], v[sel])) for k, v in scores.items()},
        }
    results = {
        "dataset": dataset.name,
        "task": "change",
        "features": {
            k: {"auc": a, "auc_bootstrap": [float(np.mean(boot[k])), float(np.std(boot[k]))]}
            for k, a in base.items()
        },
        "best_baseline": {"name": best_name, "auc": base[best_name]},
        "n_changed": int(len(pos)),
        "n_unchanged": int(len(neg)),
        "per_event": per_event,
        "bootstrap": bootstrap,
        "seed": seed,
        "info": dataset.info,
    }
    if embedder is not None:
        results["embed_without"] = list(embed_without)
        results["embedding"] = {
            "auc": auc["embedding"],
            "auc_bootstrap": [float(np.mean(boot["embedding"])), float(np.std(boot["embedding"]))],
        }
        results["error_reduction"] = 1.0 - (1.0 - auc["embedding"]) / max(
            1.0 - base[best_name], 1e-12
        )
        results["paired"] = {
            "baseline": best_name,
            **paired_stats(boot["embedding"], boot[best_name], error=accuracy_error),
        }
    timings["total_s"] = time.perf_counter() - t0
    results["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return results


def load_embedder(spec: str | None) -> Embedder | None:
    """`baselines` -> None; a bundle path -> its `.embed`; `module:function` -> that callable."""
    if spec in (None, "", "baselines"):
        return None
    if os.path.exists(spec):
        try:
            from model import load_bundle
        except ImportError as e:
            raise ValueError(
                f"--embedder {spec}: loading a model bundle needs model.load_bundle, which this "
                f"build does not have yet ({e}); pass module:function for a Python callable"
            ) from None
        from beam_jobs.inference import trim_heap

        # the heap the preparation of a chip freed goes back to the OS before its encoder runs
        return functools.partial(load_bundle(spec).embed, release=trim_heap)
    m = re.fullmatch(r"([A-Za-z_][\w.]*):([A-Za-z_]\w*)", spec)
    if not m:
        raise ValueError(
            f"--embedder must be 'baselines', an existing model bundle path or module:function; "
            f"got {spec!r}"
        )
    fn = getattr(importlib.import_module(m.group(1)), m.group(2), None)
    if not callable(fn):
        raise ValueError(f"--embedder {spec}: {m.group(2)} is not a callable in {m.group(1)}")
    return fn


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="earthembed evaluate",
        description="Few-shot probes (kNN k=1,3; logistic) on embeddings vs designed baselines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="sim:SEED:BIOME | simfine:SEED:BIOME[:crops|forests] | simlai:SEED:BIOME | "
        "simchange:SEED:BIOME | eolearn[:s2|:s2dem][:val] | points:OBS:LABELS | fuel_moisture[:val]",
    )
    p.add_argument("--embedder", default="baselines", help="baselines | BUNDLE_PATH | module:fn")
    p.add_argument(
        "--budgets",
        default="auto",
        help=f"samples per class (regression: in all), e.g. 1,10,max; auto: {DEFAULT_BUDGETS}",
    )
    p.add_argument("--repeats", type=int, default=30, help="draws per numeric budget")
    p.add_argument("--seed", type=int, default=0, help="split, sampling and draw seed")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--block",
        type=int,
        default=None,
        help=f"split block side in px (None: per data set, {DEFAULT_BLOCK})",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="simulated regions and fuel moisture point table cache (None: OUT/cache)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="eolearn / fuel_moisture data dir (None: shared/realdata/eolearn_slovenia or "
        "presto_fuel_moisture)",
    )
    p.add_argument("--max-per-class", type=int, default=MAX_PER_CLASS, help="train pool cap")
    p.add_argument("--max-test", type=int, default=MAX_TEST, help="test set cap")
    p.add_argument("--sim-size-km", type=float, default=SIM_SIZE_KM, help="sim region side")
    p.add_argument("--sim-year", type=int, default=SIM_YEAR, help="sim year")
    p.add_argument(
        "--probes",
        default="auto",
        help=f"classification: subset of {','.join(PROBES)}; regression: of "
        f"{','.join(REGRESSION_PROBES)}; auto: all of the task's",
    )
    p.add_argument(
        "--sim-sources",
        default="",
        help="sources to simulate for simfine/simlai/simchange, comma-separated (empty: all)",
    )
    p.add_argument(
        "--embed-without",
        default="",
        help="comma-separated sources the embedder does not see, e.g. cop_dem",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return p


def run(argv: list[str] | None = None) -> int:
    """`earthembed evaluate`: load the data set, probe, write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from evaluation.datasets import ChangePixels, load_dataset
    from evaluation.probes import parse_budgets
    from evaluation.report import machine_description, results_markdown, write_report

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    t0 = time.perf_counter()
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.budgets != "auto":
        parse_budgets(args.budgets)  # a bad value fails before the data set loads
    if args.probes != "auto":
        given = {p.strip() for p in args.probes.split(",") if p.strip()}
        if unknown := given - set(PROBES) - set(REGRESSION_PROBES):
            raise SystemExit(f"--probes: unknown {sorted(unknown)}")
    from beam_jobs.inference import bound_heap, trim_heap
    from beam_jobs.io.stac import clear_dataset_cache

    # The simulated region's generation frees large arrays: with a fixed mmap threshold and a
    # trim after loading they go back to the OS before the embedder runs (peak 3.34 -> 2.91
    # GB on sim:101:tropical with the tiny bundle; same scores). The reader's open datasets
    # (and the decoded blocks GDAL caches for them, ~0.35 GB there) are closed once the data
    # set is in memory: nothing reads them again.
    bound_heap()
    embedder = load_embedder(args.embedder)
    without = [x.strip() for x in args.embed_without.split(",") if x.strip()]
    if without and embedder is None:
        raise SystemExit("--embed-without needs --embedder")
    out = Path(args.out)
    dataset = load_dataset(
        args.dataset,
        seed=args.seed,
        block=args.block,
        cache_dir=args.cache_dir or out / "cache",
        data_dir=args.data_dir,
        max_per_class=args.max_per_class,
        max_test=args.max_test,
        sim_size_km=args.sim_size_km,
        sim_year=args.sim_year,
        sim_sources=[x.strip() for x in args.sim_sources.split(",") if x.strip()] or None,
    )
    t_load = time.perf_counter() - t0
    clear_dataset_cache()
    trim_heap()
    if isinstance(dataset, ChangePixels):
        log.info("%s: %d changed / %d unchanged px", dataset.name, dataset.changed.sum(),
                 (~dataset.changed).sum())  # fmt: skip
        results = evaluate_change(dataset, embedder, args.seed, embed_without=without)
    else:
        task = "regression" if dataset.is_regression else "classification"
        known = REGRESSION_PROBES if dataset.is_regression else PROBES
        budgets = parse_budgets(DEFAULT_BUDGETS[task] if args.budgets == "auto" else args.budgets)
        probes = (
            list(known)
            if args.probes == "auto"
            else [p.strip() for p in args.probes.split(",") if p.strip()]
        )
        if unknown := set(probes) - set(known):
            raise SystemExit(f"--probes: unknown {sorted(unknown)} for {task}; known {known}")
        log.info(
            "%s: %s, %d train pool / %d test px",
            dataset.name,
            task,
            int((~dataset.is_test).sum()),
            int(dataset.is_test.sum()),
        )
        fn = evaluate_regression if dataset.is_regression else evaluate
        results = fn(dataset, embedder, budgets, args.repeats, args.seed, probes, without)
    results["embedder"] = args.embedder
    results["command"] = "earthembed evaluate " + " ".join(argv)
    results["timings"]["load_s"] = round(t_load, 3)
    results["timings"]["wall_s"] = round(time.perf_counter() - t0, 3)
    results["date"] = dt.date.today().isoformat()
    results["machine"] = machine_description()
    paths = write_report(results, out)
    print(results_markdown(results))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
