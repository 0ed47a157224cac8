"""simulate -> build-training-data -> train -> export -> embed -> evaluate, on a tiny region.

Each stage runs through its command-line entry point (as a user would) with a model shrunk
to train in seconds; the test asserts the hand-offs: the bundle loads, the embedding COGs
hold unit vectors that open with `beam_jobs.io.embeddings.open_embeddings`, and the evaluation
harness scores the bundle.
"""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest

from beam_jobs import build_training_data, embed, simulate
from beam_jobs.io import embeddings
from model import export, load_bundle
from model import main as train_main

pytestmark = pytest.mark.slow

SMALL = [
    "--config.model.width=8",
    "--config.model.heads=2",
    "--config.model.queries=2",
    "--config.model.depth=1",
    "--config.model.decoder_width=16",
    "--config.model.max_frames=4",
    "--config.model.embed_max_frames=6",
    "--config.model.summary_max_frames=12",  # the summary over more frames than the deep path
    "--config.train.batch_size=4",
    "--config.train.crop_sizes=(8,)",
    "--config.train.crop_weights=(1.0,)",
    "--config.train.eval_every=20",
    "--config.train.eval_batches=1",
]


def test_simulate_build_train_export_embed(tmp_path):
    sim = tmp_path / "sim"
    simulate.run(
        ["--out", str(sim), "--sim-region", "demo", "--years", "2023", "--size-km", "0.64"]
        + ["--seed", "5", "--biome", "temperate"]
    )
    td = tmp_path / "td"
    assert (
        build_training_data.run(
            ["--stac", str(sim / "catalog.json"), "--years", "2023", "--num-samples", "8"]
            + ["--patch-size", "16", "--max-frames", "4", "--out", str(td)]
        )
        == 0
    )
    run = tmp_path / "run"
    assert (
        train_main.run(
            ["--data", str(td), "--workdir", str(run), "--steps", "20", "--no-progress"] + SMALL
        )
        == 0
    )
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert rows[-1]["step"] == 20 and "eval/0/recon_l1" in rows[-1]
    bundle_dir = tmp_path / "bundle"
    assert export.run(["--workdir", str(run), "--out", str(bundle_dir)]) == 0
    bundle = load_bundle(str(bundle_dir))
    assert bundle.meta["step"] == 20 and bundle.max_frames == 6

    out = tmp_path / "emb"
    with open(sim / "sim_params.json") as f:
        bbox = json.load(f)["region"]["bbox"]
    rc = embed.run(
        ["--stac", str(sim / "catalog.json"), "--bbox", ",".join(f"{v:.6f}" for v in bbox)]
        + ["--year", "2023", "--model", str(bundle_dir), "--out", str(out)]
        + ["--tile-size", "64", "--chip-size", "32", "--halo", "8"]
    )
    assert rc == 0
    cogs = sorted(
        p for p in glob.glob(str(out / "2023" / "*" / "*.tif")) if not p.endswith("_quality.tif")
    )
    assert cogs
    field = embeddings.open_embeddings(cogs[0])
    v = field.values[field.valid]
    assert v.shape[1] == 64 and len(v) > 0.9 * field.valid.size
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=0.02)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == bundle.sha256
    assert manifest["counts"]["chips_failed"] == 0
