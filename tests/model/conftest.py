"""Fixtures of the model tests: a shrunk config (the tiny TFRecords: tests/conftest.py)."""

from __future__ import annotations

import pytest

# `_small_config(steps=12)` is the config of test_train's resume test, test_train_step's
# non-finite and one-device tests and the e2e chain: one training step, compiled once per
# process (train.shard_training keeps it) and shared across processes by the persistent
# compilation cache of tests/conftest.py (a hit there costs the trace, ~5 s, not the ~25 s
# compile).


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


def _one_step_inputs(max_frames: int):
    """A batch of 4 examples of 8 x 8 px (random values, all valid) and its labels."""
    import numpy as np

    from model import features

    rng = np.random.default_rng(0)
    x = features.empty_inputs(4, 8, max_frames)
    for k in x:
        if k.endswith("/x"):
            x[k] = rng.normal(size=x[k].shape).astype(np.float32)
        elif k.endswith("mask"):
            x[k] = np.ones_like(x[k])
        elif k.endswith("/t"):
            x[k] = rng.uniform(0, 300, size=x[k].shape).astype(np.float32)
    x["period_days"][:] = 365.0
    labels = {"target/class_id": np.arange(4), "target/landcover": np.zeros((4, 8, 8), np.int64)}
    return x, labels


@pytest.fixture(scope="session")
def one_step_inputs():
    """A function (max_frames) -> one training batch of 4 random 8 x 8 px examples, labels."""
    return _one_step_inputs
