"""The report: results.md tables from a hand-built results.json, JSON without NaN, the machine."""

import json
import math

from evaluation import report

RESULTS = {
    "dataset": "toy",
    "command": "earthembed evaluate --dataset toy --out OUT",
    "repeats": 3,
    "classes": {"1": "forest", "2": "grassland"},
    "n_train_pool": {"1": 100, "2": 80},
    "n_test": {"1": 50, "2": 40},
    "probes": ["knn1", "logreg"],
    "features": {
        "xy": {
            "1": {"knn1": [0.5, 0.1], "logreg": [0.55, 0.05]},
            "max": {"knn1": [0.6, 0.0], "logreg": [0.7, 0.0]},
        }
    },
    "embedding": {
        "1": {"knn1": [0.8, 0.02], "logreg": [0.65, 0.01]},
        "max": {"knn1": [0.9, 0.0], "logreg": [0.85, 0.0]},
    },
    "best_baseline": {
        "1": {"name": "xy", "probe": "logreg", "balanced_accuracy": 0.55},
        "max": {"name": "xy", "probe": "logreg", "balanced_accuracy": 0.7},
    },
    "error_reduction": {"1": 1 - 0.2 / 0.45, "max": None},
    "class_recall": {
        "xy": {"1": {"logreg": {"1": 0.6, "2": 0.5}}, "max": {"logreg": {"1": 0.7, "2": 0.7}}},
        "embedding": {"1": {"knn1": {"1": 0.9, "2": 0.7}}, "max": {"knn1": {"1": 1.0}}},
    },
    "timings": {"wall_s": math.nan},
}


def test_results_markdown_tables_summary_and_recall():
    md = report.results_markdown(RESULTS)
    assert md.startswith(
        "# Quality: `toy`\n\nCommand: `earthembed evaluate --dataset toy --out OUT`"
    )
    assert "Classes: forest (100 train / 50 test), grassland (80 train / 40 test)" in md
    assert "mean ± std over 3 class-balanced draws" in md
    assert "## Budget 1 per class\n\n| features | knn1 | logreg |\n|---|---|---|" in md
    assert "| xy | 0.500 ± 0.100 | 0.550 ± 0.050 |" in md
    assert "| embedding | 0.800 ± 0.020 | 0.650 ± 0.010 |" in md
    assert "Best baseline: xy (logreg) 0.700" in md
    assert "Error reduction vs best baseline: 55.6%" in md  # 1 - 0.2 / 0.45
    assert "Error reduction vs best baseline: n/a" in md
    # Recall: best baseline (xy / logreg) / embedding (knn1, its best probe); a class with
    # no recall entry is "-".
    assert "| forest | 0.600 / 0.900 | 0.700 / 1.000 |" in md
    assert "| grassland | 0.500 / 0.700 | 0.700 / - |" in md


def test_write_report_json_has_no_nan(tmp_path):
    paths = report.write_report(RESULTS, tmp_path / "out")
    text = paths["json"].read_text()
    assert "NaN" not in text
    on_disk = json.loads(text)
    assert on_disk["timings"]["wall_s"] is None
    assert on_disk["error_reduction"] == {"1": RESULTS["error_reduction"]["1"], "max": None}
    assert on_disk["features"] == RESULTS["features"]
    assert paths["md"].read_text() == report.results_markdown(RESULTS) + "\n"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_machine_description_names_cores_and_python():
    import os
    import platform

    text = report.machine_description()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert text.startswith(f"{cores} cores, ")
    assert text.endswith(f"Python {platform.python_version()}")
