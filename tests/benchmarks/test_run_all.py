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


def test_quality_markdown_adds_the_embedding_and_its_error_reduction():
    results = {
        **TOY_RESULTS,
        "embedder": "model/weights/tiny",
        "embedding": {
            "1": {"knn1": [0.6, 0.1], "logreg": [0.65, 0.05]},
            "max": {"knn1": [0.8, 0.0], "logreg": [0.76, 0.0]},
        },
        "error_reduction": {"1": 1 - 0.35 / 0.45, "max": 1 - 0.2 / 0.3},
    }
    md = run_all.quality_markdown(results, "Quality: toy")
    assert "| embedding | logreg | 0.650 ± 0.050 | 0.760 ± 0.000 |" in md
    assert "Embedding (model/weights/tiny), best probe: 1: 0.650, max: 0.800." in md
    assert "Error reduction of the embedding vs the best baseline: 1: 22.2%, max: 33.3%." in md


def test_run_reuses_matching_results_and_writes_only_what_ran(tmp_path):
    out = tmp_path / "eolearn"
    out.mkdir()
    argv = ["--dataset", "eolearn", "--embedder", "baselines", "--out", str(out)]
    argv += ["--cache-dir", str(tmp_path / "cache")]
    command = "earthembed evaluate " + " ".join(argv)
    (out / "results.json").write_text(json.dumps({**TOY_RESULTS, "command": command}))
    results = tmp_path / "RESULTS.md"
    run_argv = ["--only", "quality_eolearn", "--out-root", str(tmp_path), "--reuse"]
    run_argv += ["--embedder", "baselines", "--results", str(results)]
    assert run_all.run(run_argv) == 0
    text = results.read_text()
    assert f"Command: `{command}`" in text
    assert "| xy | logreg | 0.550 ± 0.050 | 0.700 ± 0.000 |" in text
    assert "bench:speed" not in text and "bench:embed" not in text  # not run, not written


def test_embed_section_is_rendered_from_a_matching_embed_speed_json(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    stac = tmp_path / "sim" / "catalog.json"
    doc = json.loads(json.dumps(EMBED_DOC))
    doc["command"] = f"python -m benchmarks.embed_speed --stac {stac} --work {work}"
    (work / "embed_speed.json").write_text(json.dumps(doc))
    results = tmp_path / "RESULTS.md"
    argv = ["--only", "embed", "--reuse", "--embed-stac", str(stac), "--embed-work", str(work)]
    assert run_all.run([*argv, "--results", str(results)]) == 0
    text = results.read_text()
    assert "<!-- bench:embed -->" in text
    assert "**1,000 px/s**" in text and "**2,000 px/s**" in text and "**0.500**" in text
    assert "| embedding COG | 50.00 B/px (6,553,600 B, 2 files) |" in text


EMBED_DOC = {
    "date": "2026-12-06",
    "machine": "2 cores",
    "model": "tiny-e554d1efcdb0 abcdef012345",
    "compute_dtype": "float32",
    "tile_size": 256,
    "chip_size": 96,
    "halo": 16,
    "batch_size": 4,
    "end_to_end": {
        "wall_s": 131.072,
        "tiles": 2,
        "chips": 18,
        "tile_pixels": 131072,
        "valid_pixels": 131072,
        "px_per_s": 1000.0,
        "model_s": 90.0,
        "model_batches": 5,
        "read_s": 10.0,
        "read_blocks": 2,
    },
    "bare": {
        "embed_batch_s": 65.536,
        "core_pixels": 131072,
        "batches": 5,
        "px_per_s": 2000.0,
        "read_s_per_chip": 0.25,
        "prepare_s_per_chip": 2.0,
    },
    "ratio": 0.5,
    "storage": {
        "cog": {"bytes_per_pixel": 50.0, "bytes": 6553600, "files": 2},
        "quality": {"bytes_per_pixel": 0.27},
        "parquet": {"bytes_per_pixel": 58.2},
    },
    "max_rss_gb": 12.2,
}
