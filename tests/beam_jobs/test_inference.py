"""The RunInference handler: batching, padding, keyed requests, loading once, a pipeline run.

The handler is tested against a small fake bundle (the bundle protocol of model/bundle.py:
prepare / prepare_points / pad_batch / embed_batch): per pixel, the mean of the valid
Sentinel-2 10 m bands over the period, projected to 64 dims by a fixed matrix and normalized,
NaN where the pixel has no valid observation. One test runs the real tiny bundle
model/weights/tiny (the shipped_bundle fixture).
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.testing.util import assert_that, equal_to
from fake_bundles import MeanS2Bundle

from beam_jobs import inference, runner
from schemas.grid import GridWindow
from schemas.observations import Observations, SourceFrames

T0, T1 = 1_672_531_200_000, 1_704_067_200_000  # 2023


class FakeBundle(MeanS2Bundle):
    """A deterministic per-pixel embedder obeying the bundle protocol (records batch shapes)."""


def _window_obs(seed: int, p: int = 6, frames: int = 4, empty_rows: int = 1) -> Observations:
    """A P x P window with random S2 values; the first `empty_rows` rows never valid."""
    rng = np.random.default_rng(seed)
    window = GridWindow(32631, 600_000.0 + 100 * seed, 5_600_000.0, p, p)
    values = rng.uniform(0.01, 0.5, size=(frames, p, p, 10)).astype(np.float32)
    valid = rng.random((frames, p, p)) < 0.7
    valid[:, :empty_rows] = False
    times = np.linspace(T0 + 1, T1 - 1, frames).astype(np.int64)
    sf = SourceFrames("sentinel2_l2a", values, valid, times)
    return Observations(sources={"sentinel2_l2a": sf}, window=window)


def _point_obs(n: int, seed: int = 7) -> Observations:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.01, 0.5, size=(3, n, 1, 10)).astype(np.float32)
    valid = np.ones((3, n, 1), bool)
    valid[:, 0] = False  # the first point has no observation
    times = np.array([T0 + 10, T0 + 20, T0 + 30], np.int64)
    sf = SourceFrames("sentinel2_l2a", values, valid, times)
    return Observations(
        sources={"sentinel2_l2a": sf},
        point_ids=np.array([f"p{i}" for i in range(n)], object),
        lon=np.linspace(4.0, 4.1, n),
        lat=np.full(n, 50.5),
    )


@pytest.fixture
def fake(monkeypatch):
    """Route inference.load_bundle to FakeBundle and count loads."""
    loads: list[tuple[str, str]] = []
    bundles: dict[tuple[str, str], FakeBundle] = {}

    def load(path, compute_dtype="float32"):
        loads.append((path, compute_dtype))
        bundles[(path, compute_dtype)] = FakeBundle(compute_dtype)
        return bundles[(path, compute_dtype)]

    inference.clear_bundle_cache()
    monkeypatch.setattr(inference, "load_bundle", load)
    yield loads, bundles
    inference.clear_bundle_cache()


def _expected(bundle: FakeBundle, obs: Observations) -> np.ndarray:
    """What one window embeds to on its own (batch of one, no padding)."""
    item = bundle.prepare(obs, t_start_ms=T0, t_end_ms=T1)
    return bundle.embed_batch({k: v[None] for k, v in item.items()})[0]


# ------------------------------------------------------------------------------- no pipeline


def test_run_inference_fixed_batches_match_single_window(fake):
    handler = inference.FlaxEmbeddingModelHandler("fake://a", batch_size=2)
    bundle = handler.load_model()
    reqs = [inference.EmbedRequest(_window_obs(s), T0, T1) for s in range(3)]
    results = list(handler.run_inference(reqs, bundle))
    # 3 windows in batches of exactly 2: two calls, the second padded.
    assert bundle.batch_shapes == [(2, 6, 6, 4), (2, 6, 6, 4)]
    assert [r.example for r in results] == reqs
    for r in results:
        emb = r.inference
        assert emb.shape == (6, 6, 64) and emb.dtype == np.float32
        np.testing.assert_array_equal(emb, _expected(bundle, r.example.obs))
        assert np.isnan(emb[0]).all()  # the never-valid first row
        np.testing.assert_allclose(np.linalg.norm(emb[1:], axis=-1), 1.0, rtol=1e-5)


def test_points_and_windows_share_batches(fake):
    handler = inference.FlaxEmbeddingModelHandler("fake://a", batch_size=4)
    bundle = handler.load_model()
    pts = inference.EmbedRequest(_point_obs(5), T0, T1)
    win = inference.EmbedRequest(_window_obs(1, p=1, empty_rows=0), T0, T1)
    assert (pts.num_items, win.num_items) == (5, 1)
    pe, we = handler.run_inference([pts, win], bundle)
    # 6 items of P = 1 in batches of 4: (4, 1, 1) twice.
    assert bundle.batch_shapes == [(4, 1, 1, 4), (4, 1, 1, 4)]
    assert pe.inference.shape == (5, 64) and we.inference.shape == (1, 1, 64)
    assert np.isnan(pe.inference[0]).all()
    np.testing.assert_allclose(np.linalg.norm(pe.inference[1:], axis=-1), 1.0, rtol=1e-5)
    # A point embeds like a 1 x 1 window holding the same values.
    sf = pts.obs["sentinel2_l2a"]
    one = Observations(
        sources={"sentinel2_l2a": sf.crop(slice(3, 4), slice(0, 1))},
        window=GridWindow(32631, 0.0, 0.0, 1, 1),
    )
    np.testing.assert_allclose(pe.inference[3], _expected(bundle, one)[0, 0], rtol=1e-6)


def test_batching_kwargs_bytes_and_sharing(fake):
    h = inference.FlaxEmbeddingModelHandler("fake://a", batch_size=8)
    kw = h.batch_elements_kwargs()
    assert kw["min_batch_size"] == kw["max_batch_size"] == 8
    pts = inference.EmbedRequest(_point_obs(5), T0, T1)
    win = inference.EmbedRequest(_window_obs(0), T0, T1)
    # BatchElements weighs a request by its model items, keyed or not.
    assert kw["element_size_fn"](pts) == 5 and kw["element_size_fn"](("k", pts)) == 5
    assert kw["element_size_fn"](("k", win)) == 1
    assert h.get_num_bytes([win]) == 4 * 6 * 6 * 10 * 4 + 4 * 6 * 6 + 4 * 8
    assert not h.share_model_across_processes()
    shared = inference.FlaxEmbeddingModelHandler("fake://a", share_across_processes=True)
    assert shared.share_model_across_processes()
    keyed = inference.keyed_handler(h)
    assert keyed.batch_elements_kwargs()["max_batch_size"] == 8
    with pytest.raises(ValueError, match="compute dtype"):
        inference.FlaxEmbeddingModelHandler("fake://a", compute_dtype="float16")
    with pytest.raises(ValueError, match="takes no inference args"):
        h.validate_inference_args({"x": 1})


def test_load_once_per_process_with_warmup_and_bf16(fake):
    loads, bundles = fake
    a = inference.FlaxEmbeddingModelHandler("fake://a", batch_size=3, warmup_patch_size=12)
    b = inference.FlaxEmbeddingModelHandler("fake://a", batch_size=3)
    ma, mb = a.load_model(), b.load_model()
    assert ma is mb and loads == [("fake://a", "float32")]
    # The warm-up compiled exactly the job's shape: one all-padding batch (3, 12, 12).
    assert ma.batch_shapes == [(3, 12, 12, 4)]
    c = inference.FlaxEmbeddingModelHandler("fake://a", compute_dtype="bfloat16")
    assert c.load_model().config["compute_dtype"] == "bfloat16"
    assert loads[-1] == ("fake://a", "bfloat16")


class _PrefixFileSystem(LocalFileSystem):
    """`eetest:///abs/path` served from the local disk: an object store for the tests."""

    @classmethod
    def scheme(cls):
        return "eetest"

    def match(self, patterns, limits=None):
        return super().match([p.replace("eetest://", "", 1) for p in patterns], limits)


def test_bundle_on_an_object_store_is_copied_locally(tmp_path, monkeypatch):
    import model

    src = tmp_path / "bundle"
    src.mkdir()
    (src / "bundle.json").write_text('{"sha256": "x"}')
    (src / "params.msgpack").write_bytes(bytes(range(256)) * 10)
    seen = []

    def load(path, compute_dtype="float32"):
        seen.append((path, compute_dtype))
        return FakeBundle(compute_dtype)

    monkeypatch.setattr(model, "load_bundle", load)
    assert inference.load_bundle(str(src)).version == "fake-1"  # local: loaded in place
    assert seen[-1] == (str(src), "float32")
    inference.load_bundle(f"eetest://{src}/", "bfloat16")
    local = Path(seen[-1][0])
    assert local != src and seen[-1][1] == "bfloat16"
    assert sorted(p.name for p in local.iterdir()) == ["bundle.json", "params.msgpack"]
    assert (local / "params.msgpack").read_bytes() == (src / "params.msgpack").read_bytes()
    with pytest.raises(FileNotFoundError, match="no model bundle files"):
        inference.load_bundle(f"eetest://{tmp_path}/missing")


# ------------------------------------------------------------------------------- pipeline


def _summary(kv):
    key, result = kv
    emb = result.inference
    finite = np.isfinite(emb).all(-1)
    return (
        key,
        emb.shape,
        int(finite.sum()),
        round(float(np.linalg.norm(emb[finite], axis=-1).mean()), 4),
    )


def test_keyed_run_inference_pipeline(fake):
    from apache_beam.ml.inference.base import RunInference

    handler = inference.FlaxEmbeddingModelHandler("fake://pipe", batch_size=2)
    reqs = [(f"chip{s}", inference.EmbedRequest(_window_obs(s), T0, T1)) for s in range(5)]
    expected = []
    bundle = FakeBundle()
    for key, r in reqs:
        e = _expected(bundle, r.obs)
        finite = np.isfinite(e).all(-1)
        expected.append((key, (6, 6, 64), int(finite.sum()), 1.0))
    assert all(n == 30 or 0 < n < 30 for _, _, n, _ in expected)
    p = runner.create_pipeline(runner.pipeline_options([]))
    out = (
        p | beam.Create(reqs) | RunInference(inference.keyed_handler(handler)) | beam.Map(_summary)
    )
    assert_that(out, equal_to(expected))
    p.run().wait_until_finish()


# ------------------------------------------------------------------------------- real bundle


def test_real_tiny_bundle_handler_batches_are_independent(shipped_bundle):
    """The real tiny bundle: a window embeds alike in a padded batch of 4 beside others and
    alone in a batch of 1; the points path gives unit vectors too."""
    inference.clear_bundle_cache()
    handler = inference.FlaxEmbeddingModelHandler(
        str(shipped_bundle), batch_size=4, warmup_patch_size=8
    )
    bundle = handler.load_model()
    reqs = [inference.EmbedRequest(_window_obs(s, p=8, frames=5), T0, T1) for s in range(3)]
    results = list(handler.run_inference(reqs, bundle))
    for r in results:
        emb = r.inference
        assert emb.shape == (8, 8, 64)
        item = bundle.prepare(r.example.obs, t_start_ms=T0, t_end_ms=T1)
        ref = np.asarray(bundle.embed_batch(bundle.pad_batch([item], 1)))[0]
        ok = np.isfinite(ref).all(-1)
        assert ok.sum() == 7 * 8 and not ok[0].any()  # the first row is never valid
        assert (np.isfinite(emb).all(-1) == ok).all()
        np.testing.assert_allclose(np.linalg.norm(emb[ok], axis=-1), 1.0, atol=1e-4)
        np.testing.assert_allclose(emb[ok], ref[ok], atol=1e-5)
    (pts,) = handler.run_inference([inference.EmbedRequest(_point_obs(5), T0, T1)], bundle)
    assert pts.inference.shape == (5, 64) and np.isnan(pts.inference[0]).all()
    np.testing.assert_allclose(np.linalg.norm(pts.inference[1:], axis=-1), 1.0, atol=1e-4)
    inference.clear_bundle_cache()


def test_released_requests_give_the_same_embeddings_without_their_observations(fake):
    """`release`: the handler drops a window request's observations once prepared (memory
    while the model runs); the embeddings are those of the kept requests, `obs` keeps its
    window and errors, and num_bytes still reports the input's size."""
    handler = inference.FlaxEmbeddingModelHandler("fake://a", batch_size=2)
    bundle = handler.load_model()
    kept = [inference.EmbedRequest(_window_obs(s), T0, T1) for s in range(3)]
    freed = [inference.EmbedRequest(_window_obs(s), T0, T1, release=True) for s in range(3)]
    sizes = [r.num_bytes for r in freed]
    assert min(sizes) > 0
    want = [r.inference for r in handler.run_inference(kept, bundle)]
    got = list(handler.run_inference(freed, bundle))
    for w, r, n, k in zip(want, got, sizes, kept, strict=True):
        np.testing.assert_array_equal(r.inference, w)
        assert r.example.obs.sources == {} and r.example.obs.window == k.obs.window
        assert r.example.num_bytes == n
    assert handler.get_num_bytes(freed) == sum(sizes)
    assert all(k.obs.sources for k in kept)  # not released
