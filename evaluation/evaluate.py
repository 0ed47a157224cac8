"""`earthembed evaluate`: probe designed baselines (and an embedder) on a data set, write the report.

Runbook (each writes DIR/results.json, DIR/results.md and DIR/results.png):

    earthembed evaluate --dataset sim:101:tropical --embedder baselines --out /tmp/eval_sim
    earthembed evaluate --dataset eolearn --out /tmp/eval_eo
    earthembed evaluate --dataset eolearn --embedder path/to/bundle --out /tmp/eval_model

The protocol, the data sets and the embedder contract: the evaluation package docstring
(evaluation/__init__.py). This module imports only the standard library at load time (numpy,
the readers, sklearn and the model are imported by the functions that use them), so
`earthembed evaluate --help` starts fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation import DEFAULT_BLOCK, MAX_PER_CLASS, MAX_TEST, PROBES, SIM_SIZE_KM, SIM_YEAR

if TYPE_CHECKING:
    import numpy as np

    from evaluation.datasets import LabelledPixels
    from schemas.observations import Observations

log = logging.getLogger(__name__)

Embedder = Callable[["Observations"], "np.ndarray"]


def embed_pixels(
    embedder: Embedder, dataset: LabelledPixels, without: Sequence[str] = ()
) -> np.ndarray:
    """Run an embedder on the data set's observations (less the sources `without`); rows of
    its labelled pixels."""
    import numpy as np

    obs = dataset.observations
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
    return emb[dataset.pixel_index]


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

    from evaluation.baselines import baseline_features
    from evaluation.probes import best_probe, budget_key, error_reduction, probe_feature_sets

    t0 = time.perf_counter()
    feature_sets = baseline_features(
        dataset.observations, dataset.pixel_index, dataset.extra_series, seed=seed
    )
    feature_sets = {k: v for k, v in feature_sets.items() if v.shape[1] > 0}
    timings = {"baseline_features_s": time.perf_counter() - t0}
    if embedder is not None:
        t1 = time.perf_counter()
        feature_sets["embedding"] = embed_pixels(embedder, dataset, embed_without)
        timings["embed_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    recall: dict = {}
    scores = probe_feature_sets(
        feature_sets, dataset.labels, dataset.is_test, budgets, repeats, seed, probes, recall
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
        return load_bundle(spec).embed
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
    p.add_argument("--dataset", required=True, help="sim:SEED:BIOME | eolearn | points:OBS:LABELS")
    p.add_argument("--embedder", default="baselines", help="baselines | BUNDLE_PATH | module:fn")
    p.add_argument("--budgets", default="1,10,max", help="samples per class, e.g. 1,10,max")
    p.add_argument("--repeats", type=int, default=30, help="draws per numeric budget")
    p.add_argument("--seed", type=int, default=0, help="split, sampling and draw seed")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--block",
        type=int,
        default=None,
        help=f"split block side in px (None: per data set, {DEFAULT_BLOCK})",
    )
    p.add_argument("--cache-dir", default=None, help="simulated regions cache (None: OUT/cache)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="eo-learn patch dir (None: shared/realdata/eolearn_slovenia)",
    )
    p.add_argument("--max-per-class", type=int, default=MAX_PER_CLASS, help="train pool cap")
    p.add_argument("--max-test", type=int, default=MAX_TEST, help="test set cap")
    p.add_argument("--sim-size-km", type=float, default=SIM_SIZE_KM, help="sim region side")
    p.add_argument("--sim-year", type=int, default=SIM_YEAR, help="sim year")
    p.add_argument("--probes", default=",".join(PROBES), help="subset of knn1,knn3,logreg")
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
    from evaluation.datasets import load_dataset
    from evaluation.probes import parse_budgets
    from evaluation.report import machine_description, results_markdown, write_report

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    t0 = time.perf_counter()
    budgets = parse_budgets(args.budgets)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    if unknown := set(probes) - set(PROBES):
        raise SystemExit(f"--probes: unknown {sorted(unknown)}; known {PROBES}")
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    embedder = load_embedder(args.embedder)
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
    )
    t_load = time.perf_counter() - t0
    log.info(
        "%s: %d classes, %d train pool / %d test px",
        dataset.name,
        len(dataset.class_names),
        int((~dataset.is_test).sum()),
        int(dataset.is_test.sum()),
    )
    without = [s.strip() for s in args.embed_without.split(",") if s.strip()]
    if without and embedder is None:
        raise SystemExit("--embed-without needs --embedder")
    results = evaluate(dataset, embedder, budgets, args.repeats, args.seed, probes, without)
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
