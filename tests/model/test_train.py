"""model/train.py's loop: the loss falls, resume is exact (with and without a label window),
batches resume, metrics are written. One step and the loss terms: test_train_step.py (run on
the same worker, after this file: tests/conftest.py's ONE_WORKER).

Each distinct training step costs a compile of ~25 CPU s (fast_compile); the tests share
two: the label window's (`_WINDOW`: the loss-falls and window-resume tests) and
`small_config(steps=12)` (the plain resume test, test_train_step.py's and the e2e chain's,
through JAX's persistent compilation cache)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from model import features, input_pipeline, train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fast_compile")]


def _leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


def _losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r for r in rows if "loss" in r]


def _window_config(small_config, **train):
    """200 steps at 3e-3 with a label window of 4 steps and the label term on the summary's
    linear map too (as tiny_shipped trains): one step for the two tests that use it."""
    c = small_config(steps=200, log_every=20, learning_rate=3e-3, label_window=4, **train)
    c.loss.label_linear = 1.0
    return c


def test_tiny_training_lowers_the_loss(tiny_td, tmp_path, small_config):
    # The label window's step (the shipped recipe's terms): the same compile as the window
    # resume test below. The floor is on the reconstruction term, which both configs train.
    c = _window_config(small_config)
    state = train.train_and_evaluate(c, str(tmp_path), [str(tiny_td)], progress=False)
    rows = _losses(tmp_path)
    assert [r["step"] for r in rows] == list(range(20, 201, 20))
    first, last = rows[0]["recon"], rows[-1]["recon"]
    # Stated floor: the last 20 steps reconstruct with under 0.6 of the first 20 steps' error.
    assert last < 0.6 * first, (first, last)
    assert rows[-1]["nonfinite_steps"] == 0
    assert int(state.step) == 200
    assert (tmp_path / "config.json").exists() and (tmp_path / "stats.json").exists()
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


@pytest.mark.usefixtures("release_memory_after")  # the last test of the window's step
def test_resume_with_the_label_window_ends_with_the_same_parameters(
    tiny_td, tmp_path, small_config
):
    # The loss-falls test's config (its compiled step, kept by train.shard_training), run to
    # step 8 of its 200: resuming at step 5 refills the window with the batches of steps 1-4
    # as they were.
    c = _window_config(small_config, checkpoint_every=5)
    full = train.train_and_evaluate(
        c, str(tmp_path / "full"), [str(tiny_td)], stop_after=8, progress=False
    )
    part = tmp_path / "part"
    train.train_and_evaluate(c, str(part), [str(tiny_td)], stop_after=5, progress=False)
    assert sorted(os.listdir(part / "checkpoints")) == ["5"]
    resumed = train.train_and_evaluate(c, str(part), [str(tiny_td)], stop_after=8, progress=False)
    assert int(full.step) == int(resumed.step) == 8
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_ends_with_the_same_parameters(tiny_td, tmp_path, small_config):
    c = small_config(steps=12, checkpoint_every=6)
    full = train.train_and_evaluate(c, str(tmp_path / "full"), [str(tiny_td)], progress=False)
    part = tmp_path / "part"
    train.train_and_evaluate(c, str(part), [str(tiny_td)], stop_after=6, progress=False)
    assert sorted(os.listdir(part / "checkpoints")) == ["6"]
    resumed = train.train_and_evaluate(c, str(part), [str(tiny_td)], progress=False)
    assert int(resumed.step) == 12
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_batches_resume_where_they_stopped(tiny_td):
    d = input_pipeline.open_data_dir(str(tiny_td))
    it = input_pipeline.TrainBatches([d], batch_size=4, seed=0, shuffle_buffer=8)
    ids = [next(it)[2]["target/class_id"].tolist() for _ in range(5)]
    it2 = input_pipeline.TrainBatches([d], batch_size=4, seed=0, start_step=3, shuffle_buffer=8)
    assert [next(it2)[2]["target/class_id"].tolist() for _ in range(2)] == ids[3:]


def test_label_window_keeps_labelled_pixels_of_the_last_steps_as_strips(tiny_td, small_config):
    c = small_config(label_window=3, label_pixels=5)
    d = input_pipeline.open_data_dir(str(tiny_td))
    norm = features.normalizer(d.stats)
    it = input_pipeline.TrainBatches([d], batch_size=4, seed=0, shuffle_buffer=8)
    window = train.LabelWindow(c, norm)
    _, _, raw = next(it)
    first = window.add(raw, 0)
    # 3 steps x 4 examples x 5 pixels; before the window fills, the earlier slots are unlabelled
    assert first["landcover"].shape == (12, 1, 5)
    assert np.all(first["landcover"][:8] == -1)
    bands = raw["sentinel2_l2a/values"].shape[-1]
    assert first["inputs"]["sentinel2_l2a/x"].shape == (12, c.model.max_frames, 1, 5, bands)
    # each strip pixel is a labelled pixel of its example, with that pixel's values
    inputs, lab = window.strips(raw, 0)
    lc = raw["target/landcover"]
    full = features.to_model_inputs(raw, norm, max_frames=c.model.max_frames)
    for b in range(4):
        if np.all(lab[b] < 0):
            continue
        for j in range(5):
            hits = np.argwhere(
                np.all(
                    full["sentinel2_l2a/x"][b]
                    == inputs["sentinel2_l2a/x"][b, :, 0, j][:, None, None],
                    axis=(0, 3),
                )
            )
            assert len(hits) and any(lc[b, r, q] == lab[b, 0, j] for r, q in hits)
    for step in (1, 2, 3):
        _, _, raw = next(it)
        out = window.add(raw, step)
    assert out["landcover"].shape == (12, 1, 5)
    assert np.all(out["landcover"][-4:] == window.strips(raw, 3)[1])
