"""model/train.py's step and loss terms: a non-finite step changes nothing, 4 devices match 1,
the label terms' arithmetic and gradients. The loop (loss falls, resume): test_train.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from model import features, input_pipeline, modules, train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fast_compile")]


def _leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


def test_nonfinite_step_leaves_the_state_unchanged(tiny_td, small_config):
    # The training step of test_train.py's resume test and of the e2e chain (its config, a
    # batch of tiny_td): from JAX's persistent compilation cache when one of them compiled it;
    # the 4-device test below reuses it in the process (train.shard_training keeps it).
    c = small_config(steps=12)
    d = input_pipeline.open_data_dir(str(tiny_td))
    norm = features.normalizer(features.pool_stats([d.stats]), std_floor=c.train.std_floor)
    _, _, raw = next(input_pipeline.TrainBatches([d], batch_size=4, seed=0, shuffle_buffer=8))
    x, labels = train.Batcher(c, norm)(raw, 0)
    x["sentinel1/x"][:] = np.nan
    x["sentinel1/mask"][:] = 1
    x["sentinel1/band_mask"][:] = 1
    state = train.init_state(c, features.empty_inputs(4, 1, c.model.max_frames))
    before = [np.array(a) for a in _leaves(state)]  # copies: the step donates the state
    state, step = train.shard_training(c, train.make_mesh(c), state)
    new, metrics = step(state, x, labels, jax.random.key(0))
    assert float(metrics["finite"]) == 0.0 and int(new.nonfinite) == 1
    for a, b in zip(before, _leaves(new), strict=True):
        np.testing.assert_array_equal(a, b)


def test_all_finite_checks_the_loss_and_every_gradient_value():
    grads = {"a": np.ones((2, 3), np.float32), "b": {"c": np.zeros(4, np.float32)}}
    check = jax.jit(train.all_finite)
    assert bool(check(np.float32(1.0), grads))
    assert not bool(check(np.float32(np.nan), grads))
    for bad in (np.nan, np.inf, -np.inf):
        g = {"a": grads["a"], "b": {"c": np.array([0, 0, bad, 0], np.float32)}}
        assert not bool(check(np.float32(1.0), g)), bad  # a finite loss, one bad gradient


# One step on all the devices of a process started with 4 host devices, from the state and
# batch of the test (saved by it): the state is initialized once, by the test.
_ONE_STEP = textwrap.dedent(
    """
    import importlib.util, sys, numpy as np, jax
    sys.path.insert(0, {root!r})
    spec = importlib.util.spec_from_file_location("model_conftest", {conftest!r})
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    from model import features, train
    c = conftest._small_config(steps=12)
    saved = np.load(sys.argv[1])
    x = {{k[2:]: saved[k] for k in saved.files if k.startswith("x:")}}
    labels = {{k[2:]: saved[k] for k in saved.files if k.startswith("y:")}}
    target = train.abstract_state(c, features.empty_inputs(4, 1, c.model.max_frames))
    leaves, treedef = jax.tree_util.tree_flatten(target)
    state = jax.tree_util.tree_unflatten(treedef, [saved[f"s:{{i}}"] for i in range(len(leaves))])
    mesh = train.make_mesh(c)
    state, step = train.shard_training(c, mesh, state)
    state, m = step(state, x, labels, jax.random.key(5))
    flat = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(state.params)])
    np.save(sys.argv[2], flat)
    print(len(jax.devices()), mesh.shape["data"], float(m["loss"]))
    """
)


def test_four_host_devices_give_the_same_step_as_one(
    tmp_path, small_config, one_step_inputs, release_memory_after
):
    """One training step from the same state and batch: on this process's first device,
    and on the 4 host devices of a subprocess (data parallel over all 4)."""
    # The config of the non-finite test (and the resume test): the one-device step is theirs.
    c = small_config(steps=12)
    x, labels = one_step_inputs(c.model.max_frames)
    state = train.init_state(c, features.empty_inputs(4, 1, c.model.max_frames))
    saved = {f"x:{k}": v for k, v in x.items()} | {f"y:{k}": v for k, v in labels.items()}
    saved |= {f"s:{i}": np.asarray(a) for i, a in enumerate(jax.tree_util.tree_leaves(state))}
    np.savez(tmp_path / "start.npz", **saved)
    mesh = train.make_mesh(c, jax.devices()[:1])
    assert mesh.shape["data"] == 1
    one, step = train.shard_training(c, mesh, state)
    one, _ = step(one, x, labels, jax.random.key(5))
    flat_one = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(one.params)])
    del one, step, state
    release_memory_after()  # the step's ~1.7 GB not held while the subprocess compiles its own

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "one_step.py"
    script.write_text(
        _ONE_STEP.format(root=root, conftest=os.path.join(os.path.dirname(__file__), "conftest.py"))
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "start.npz"), str(tmp_path / "p4.npy")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    devices, data_axis, _ = r.stdout.split()
    assert (int(devices), int(data_axis)) == (4, 4)
    np.testing.assert_allclose(flat_one, np.load(tmp_path / "p4.npy"), rtol=1e-4, atol=1e-6)


def test_label_term_is_the_pixel_softmax_over_the_label_table(small_config):
    """Hand-computed from mu: labelled, observed pixels only; 0 when no pixel has a class."""
    c = small_config(drop_prob=0.0)  # the student sees the full batch: mu_s = encode(x)
    x = features.empty_inputs(2, 4, c.model.max_frames)
    x["cop_dem/x"][:] = np.random.default_rng(0).normal(size=x["cop_dem/x"].shape)
    x["cop_dem/mask"][:] = 1
    x["cop_dem/mask"][1, :, 0, 0] = 0  # one pixel unobserved: never scored
    x["cop_dem/band_mask"][:] = 1
    state = train.init_state(c, x)
    lc = np.full((2, 4, 4), -1, np.int64)
    lc[0, :2] = 3
    lc[1] = 5

    def label_term(landcover):
        labels = {"target/class_id": np.full(2, -1, np.int64), "target/landcover": landcover}
        _, m = train.loss_fn(state.params, state.ema_params, x, labels, jax.random.key(0), c)
        return float(m["label"])

    assert label_term(np.full((2, 4, 4), -1, np.int64)) == 0.0
    model = modules.create_model(c)
    params = {k: v for k, v in state.params.items() if k != "label_table"}
    mu, _ = model.apply({"params": params}, x, method=model.encode)
    table = np.asarray(state.params["label_table"], np.float64)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    logits = np.asarray(mu, np.float64) @ table.T / c.loss.temperature
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = [-logp[0, i, j, 3] for i in range(2) for j in range(4)]
    nll += [-logp[1, i, j, 5] for i in range(4) for j in range(4) if (i, j) != (0, 0)]
    np.testing.assert_allclose(label_term(lc), np.mean(nll), rtol=1e-4)


def test_label_linear_leaves_the_deep_path_to_the_other_terms(small_config):
    """With only the label term, label_linear gives the deep path and its gate no gradient."""
    c = small_config(drop_prob=0.0)
    for term in ("recon", "uniform", "consistency", "align", "label"):
        c.loss[term] = 0.0
    c.loss.label_linear = 1.0
    x = features.empty_inputs(2, 4, c.model.max_frames)
    x["cop_dem/x"][:] = np.random.default_rng(0).normal(size=x["cop_dem/x"].shape)
    x["cop_dem/mask"][:] = 1
    x["cop_dem/band_mask"][:] = 1
    state = train.init_state(c, x)
    labels = {
        "target/class_id": np.full(2, -1, np.int64),
        "target/landcover": np.ones((2, 4, 4), np.int64),
    }
    grads = jax.grad(
        lambda p: train.loss_fn(p, state.ema_params, x, labels, jax.random.key(0), c)[0]
    )(state.params)
    summ = grads["summarizer"]
    assert float(np.abs(summ["deep_gate"])) == 0.0
    assert all(float(np.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(summ["head"]))
    assert float(np.abs(summ["precision"]["kernel"]).max()) > 0.0
    assert float(np.abs(grads["label_table"]).max()) > 0.0


def _dem_and_s1_batch(seed: int):
    """2 examples of 4 x 4 px with random DEM and 4 Sentinel-1 frames, and pixel labels."""
    x = features.empty_inputs(2, 4, 4)
    rng = np.random.default_rng(seed)
    for s in ("cop_dem", "sentinel1"):
        x[f"{s}/x"][:] = rng.normal(size=x[f"{s}/x"].shape)
        x[f"{s}/mask"][:] = 1
        x[f"{s}/band_mask"][:] = 1
    x["sentinel1/t"][:] = np.arange(4) * 80.0
    labels = {
        "target/class_id": np.array([1, 2], np.int64),
        "target/landcover": rng.integers(0, 3, (2, 4, 4)),
    }
    return x, labels


def test_linear_labels_only_trains_the_linear_map_with_label_linear_alone(small_config):
    """With loss.linear_labels_only the summary's linear map gets exactly label_linear's
    gradient (none from the other terms), while the deep path still learns from them."""
    x, labels = _dem_and_s1_batch(0)

    def grads(c):
        state = train.init_state(c, x)
        return jax.grad(
            lambda p: train.loss_fn(p, state.ema_params, x, labels, jax.random.key(0), c)[0]
        )(state.params)["summarizer"]

    c = small_config(drop_prob=0.0)
    c.loss.linear_labels_only = True
    c.loss.label_linear = 0.0
    g = grads(c)
    assert all(float(np.abs(v).max()) == 0.0 for v in jax.tree_util.tree_leaves(g["precision"]))
    assert float(np.abs(g["deep_gate"])) > 0.0
    c.loss.label_linear = 1.0
    only = small_config(drop_prob=0.0)
    for term in ("recon", "uniform", "consistency", "align", "label"):
        only.loss[term] = 0.0
    only.loss.label_linear = 1.0
    for a, b in zip(
        jax.tree_util.tree_leaves(grads(c)["precision"]),
        jax.tree_util.tree_leaves(grads(only)["precision"]),
        strict=True,
    ):
        assert float(np.abs(b).max()) > 0.0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
