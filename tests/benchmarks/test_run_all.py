"""`make bench`: RESULTS.md sections rewritten in place, each figure with its command."""

import json

from benchmarks import run_all

TOY_RESULTS = {
    "dataset": "eolearn",
    "command": "earthembed evaluate --dataset eolearn --embedder baselines --out OUT",
    "date": "2026-11-21",
    "machine": "2 cores",
    "timings": {"wall_s": 23.4},
    "repeats": 30,
    "classes": {"2": "forest", "3": "grassland"},
    "n_train_pool": {"2": 100, "3": 80},
    "n_test": {"2": 50, "3": 40},
    "features": {
        "xy": {
            "1": {"knn1": [0.5, 0.1], "logreg": [0.55, 0.05]},
            "max": {"knn1": [0.6, 0.0], "logreg": [0.7, 0.0]},
        }
    },
    "best_baseline": {
        "1": {"name": "xy", "probe": "logreg", "balanced_accuracy": 0.55},
        "max": {"name": "xy", "probe": "logreg", "balanced_accuracy": 0.7},
    },
}


def test_update_results_replaces_only_named_sections():
    text = run_all.update_results("", {"a": "## A\n\nold a", "b": "## B\n\nold b"})
    assert text.startswith("# Benchmark results")
    assert "<!-- bench:a -->\n## A\n\nold a\n<!-- /bench:a -->" in text
    text = run_all.update_results(text + "\nhand-written note\n", {"a": "## A\n\nnew a"})
    assert "new a" in text and "old a" not in text
    assert "old b" in text and "hand-written note" in text
    assert text.index("bench:a") < text.index("bench:b")  # replaced in place, not appended
    assert text.count("<!-- bench:a -->") == 1


def test_quality_markdown_lists_every_probe_and_budget_with_the_command():
    md = run_all.quality_markdown(TOY_RESULTS, "Quality: toy")
    assert "Command: `earthembed evaluate --dataset eolearn --embedder baselines --out OUT`" in md
    assert "Date 2026-11-21; machine: 2 cores; wall time 23 s." in md
    assert "| features | probe | 1 / class | max / class |" in md
    assert "| xy | knn1 | 0.500 ± 0.100 | 0.600 ± 0.000 |" in md
    assert "| xy | logreg | 0.550 ± 0.050 | 0.700 ± 0.000 |" in md
    assert "forest (100 / 50)" in md
    assert "1: xy / logreg 0.550" in md


def test_run_reuses_matching_results_and_marks_pending(tmp_path):
    out = tmp_path / "eval_eo"
    out.mkdir()
    command = f"earthembed evaluate --dataset eolearn --embedder baselines --out {out}"
    (out / "results.json").write_text(json.dumps({**TOY_RESULTS, "command": command}))
    results = tmp_path / "RESULTS.md"
    argv = ["--only", "quality_eolearn,storage", "--out-root", str(tmp_path), "--reuse"]
    assert run_all.run([*argv, "--results", str(results)]) == 0
    text = results.read_text()
    assert f"Command: `{command}`" in text
    assert "| xy | logreg | 0.550 ± 0.050 | 0.700 ± 0.000 |" in text
    assert "<!-- bench:storage -->\n## Storage\n\nPending (" in text
    assert "bench:speed" not in text  # not run, not written
