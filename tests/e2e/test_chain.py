"""simulate -> build-training-data -> train -> export -> embed, on a tiny region.

Each stage runs through its command-line entry point (as a user would; the first two in the
shared `tiny_td` fixture of tests/conftest.py) with a model shrunk to train in seconds; the
test asserts the hand-offs: the bundle loads, the embedding COGs hold unit vectors that
open with `beam_jobs.io.embeddings.open_embeddings`.
"""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest

from beam_jobs import embed
from beam_jobs.io import embeddings
from model import export, load_bundle
from model import main as train_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fast_compile")]

# The shrunk config of tests/model/conftest.py (`_small_config(steps=12)`, as in test_train's
# resume test): the same training step, so JAX's persistent compilation cache (tests/conftest.py)
# compiles it once for both. The two frame counts below apply at inference only.
STEPS = 12
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
    "--config.train.warmup_steps=10",
    "--config.train.log_every=10",
    "--config.train.eval_batches=1",  # evaluated at the last step
    "--config.train.shuffle_buffer=8",
]


def test_simulate_build_train_export_embed(tiny_td, tmp_path):
    # simulate and build-training-data through their entry points: the shared `tiny_td`
    # (tests/conftest.py; the model tests train on the same examples).
    sim, td = tiny_td.parent / "sim", tiny_td
    stats = json.loads((td / "stats.json").read_text())
    assert stats["examples"]["train"] + stats["examples"]["eval"] == 16
    assert stats["examples"]["eval"] > 0
    run = tmp_path / "run"
    assert (
        train_main.run(
            ["--data", str(td), "--workdir", str(run), "--steps", str(STEPS), "--no-progress"]
            + SMALL
        )
        == 0
    )
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert rows[-1]["step"] == STEPS and "eval/0/recon_l1" in rows[-1]
    bundle_dir = tmp_path / "bundle"
    assert export.run(["--workdir", str(run), "--out", str(bundle_dir)]) == 0
    bundle = load_bundle(str(bundle_dir))
    assert bundle.meta["step"] == STEPS and bundle.max_frames == 6

    out = tmp_path / "emb"
    with open(sim / "sim_params.json") as f:
        bbox = json.load(f)["region"]["bbox"]
    rc = embed.run(
        ["--stac", str(sim / "catalog.json"), "--bbox=" + ",".join(f"{v:.6f}" for v in bbox)]
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
