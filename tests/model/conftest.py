"""Fixtures of the model tests: a shrunk config and tiny TFRecords built by the real job."""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import pytest

# Several tests compile the same steps (each train_and_evaluate jits its own closure); the
# persistent cache turns the repeats into cache hits.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="earthembed-jax-cache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _small_config(**train):
    """tiny, shrunk further so a step compiles and runs in seconds (one context size)."""
    from model import configs

    c = configs.get("tiny")
    c.model.width = 8
    c.model.heads = 2
    c.model.queries = 2
    c.model.depth = 1
    c.model.decoder_width = 16
    c.model.max_frames = 4
    c.model.embed_max_frames = 0  # embed with the training frame count
    c.model.summary_max_frames = 0  # and summarize those frames
    c.train.batch_size = 4
    c.train.crop_sizes = (8,)
    c.train.crop_weights = (1.0,)
    c.train.warmup_steps = 10
    c.train.log_every = 10
    c.train.eval_every = 10_000
    c.train.eval_batches = 1
    c.train.checkpoint_every = 10_000
    c.train.shuffle_buffer = 8
    for k, v in train.items():
        c.train[k] = v
    return c


@pytest.fixture(scope="session")
def small_config():
    """A function (**train overrides) -> the shrunk tiny config."""
    return _small_config


@pytest.fixture(scope="session")
def tiny_td(tmp_path_factory) -> Path:
    """A simulated 64 x 64 px region -> 16 training examples of 16 x 16 px, 4 frames."""
    from beam_jobs import build_training_data, simulate

    root = tmp_path_factory.mktemp("model_td")
    sim = root / "sim"
    simulate.run(
        ["--out", str(sim), "--sim-region", "demo", "--years", "2023", "--size-km", "0.64"]
        + ["--seed", "3", "--biome", "tropical", "--cloud-cover", "0.3"]
    )
    out = root / "td"
    rc = build_training_data.run(
        ["--stac", str(sim / "catalog.json"), "--years", "2023", "--num-samples", "16"]
        + ["--patch-size", "16", "--max-frames", "4", "--eval-fraction", "0.25"]
        + ["--seed", "0", "--out", str(out)]
    )
    assert rc == 0
    return out
