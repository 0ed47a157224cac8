"""model/export.py and model/bundle.py: bundles round-trip, digests guard them, embed works."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from model import bundle as bundle_mod
from model import export, features, load_bundle, modules
from schemas import examples, sensors
from schemas.grid import GridWindow
from schemas.observations import Observations, SourceFrames

pytestmark = pytest.mark.usefixtures("fast_compile")  # tests/conftest.py


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, small_config):
    c = small_config()
    m = modules.create_model(c)
    params = jax.jit(m.init)(jax.random.key(0), features.empty_inputs(1, 2, 4), jax.random.key(1))
    stats = _full_stats()
    stats["sentinel1"]["VV"] = {"mean": -10.0, "std": 3.0, "count": 5}
    out = tmp_path_factory.mktemp("b") / "bundle"
    export.write_bundle(str(out), params["params"], c.to_dict(), stats, step=7)
    return out


def _full_stats() -> dict:
    """Statistics for every band of every source (a bundle must have them for what it embeds)."""
    return {
        s: {b: {"mean": 0.0, "std": 1.0, "count": 1} for b in sensors.get_sensor(s).band_names}
        for s in sensors.SOURCE_IDS
    }


def test_stats_lacking_an_embedded_source_are_rejected_at_load(tmp_path, small_config):
    """Issue 27, case 4: a stats.json without Sentinel-2 normalized S2 with mean 0 / std 1
    silently; now the bundle is refused naming the source, unless it does not embed it."""
    c = small_config()
    params = jax.jit(modules.create_model(c).init)(
        jax.random.key(0), features.empty_inputs(1, 2, 4), jax.random.key(1)
    )["params"]
    stats = _full_stats()
    del stats["sentinel2_l2a"]
    out = tmp_path / "no_s2"
    export.write_bundle(str(out), params, c.to_dict(), stats, step=1)
    with pytest.raises(bundle_mod.BundleError, match="no statistics for source 'sentinel2_l2a'"):
        load_bundle(str(out))
    stats = _full_stats()
    stats["sentinel1"]["VH"]["count"] = 0
    export.write_bundle(str(out), params, c.to_dict(), stats, step=1)
    with pytest.raises(bundle_mod.BundleError, match="'sentinel1' band 'VH' has no usable"):
        load_bundle(str(out))
    # A source the bundle leaves out needs no statistics.
    stats = _full_stats()
    del stats["cop_dem"]
    d = c.to_dict()
    d["model"]["embed_without"] = "cop_dem"
    export.write_bundle(str(out), params, d, stats, step=1)
    assert load_bundle(str(out)).embed_without == ("cop_dem",)


def test_observed_non_finite_embedding_comes_out_inf(bundle_dir):
    """NaN rows mean 'no observation'; an observed pixel whose embedding is not finite is
    inf, so embed can dead-letter its chip instead of writing nodata."""
    b = load_bundle(str(bundle_dir))
    obs = _obs(8, 8)
    obs.sources["sentinel1"].values[:, 3, 4, 0] = 3e38  # overflows the normalized inputs
    x = b.prepare(obs, t_start_ms=1672531200000, t_end_ms=1704067200000)
    emb = b.embed_batch(b.pad_batch([x], 1))[0]
    assert np.isnan(emb[0, 0]).all()  # never observed
    # The overflow spreads through the model's spatial context: every observed pixel fails.
    observed = np.ones((8, 8), bool)
    observed[0, 0] = False
    assert np.isinf(emb[observed]).all()


def _obs(h, w, seed=0):
    rng = np.random.default_rng(seed)
    t = 6
    s1 = SourceFrames(
        "sentinel1",
        values=rng.normal(-12, 3, size=(t, h, w, 2)).astype(np.float32),
        valid=np.ones((t, h, w), bool),
        times_ms=(1672531200000 + np.arange(t) * 30 * 86_400_000).astype(np.int64),
        geometry={"incidence_angle": np.full(t, 35.0), "orbit_direction": np.zeros(t)},
        band_names=("VV", "VH"),
    )
    s1.valid[:, 0, 0] = False  # one pixel never observed
    return Observations(
        sources={"sentinel1": s1}, window=GridWindow(32631, 600000.0, 5600000.0, w, h)
    )


def test_bundle_files_and_metadata(bundle_dir):
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert meta["step"] == 7 and meta["schema_version"] == examples.SCHEMA_VERSION
    assert set(meta["files"]) == set(export.BUNDLE_FILES)
    assert meta["sha256"] == export.content_hash(meta["files"])
    assert meta["version"] == f"tiny-{meta['sha256'][:12]}"
    raw = (bundle_dir / "params.msgpack").read_bytes()
    assert b"pickle" not in raw and raw[:1] != b"\x80"  # msgpack map, not a pickle stream


def test_embed_window_shapes_norms_and_nan(bundle_dir):
    b = load_bundle(str(bundle_dir))
    emb = b.embed(_obs(20, 13), chip_size=8, halo=2)
    assert emb.shape == (20 * 13, 64)
    assert np.isnan(emb[0]).all()  # pixel (0, 0) has no valid observation
    np.testing.assert_allclose(np.linalg.norm(emb[1:], axis=1), 1.0, atol=1e-5)


def test_embed_batch_fixed_shape_and_padding(bundle_dir):
    b = load_bundle(str(bundle_dir))
    obs = _obs(8, 8)
    item = b.prepare(obs, t_start_ms=1672531200000, t_end_ms=1704067200000)
    out = b.embed_batch(b.pad_batch([item, item], 4))
    assert out.shape == (4, 8, 8, 64)
    np.testing.assert_array_equal(out[0], out[1])
    assert np.isnan(out[2:]).all()  # padding is unobserved


def test_embed_max_frames_sets_the_frames_taken_at_inference(bundle_dir):
    """Trained on max_frames = 4; embed_max_frames = 6 prepares all 6 frames of _obs."""
    b = load_bundle(str(bundle_dir))
    assert b.max_frames == 4  # embed_max_frames 0: the training count
    period = dict(t_start_ms=1672531200000, t_end_ms=1704067200000)
    assert b.prepare(_obs(4, 4), **period)["sentinel1/frame_valid"].sum() == 4
    b.config["model"]["embed_max_frames"] = 6
    item = b.prepare(_obs(4, 4), **period)
    assert b.max_frames == 6 and item["sentinel1/frame_valid"].sum() == 6
    emb = b.embed_batch(b.pad_batch([item], 1))
    np.testing.assert_allclose(np.linalg.norm(emb[0, 1:, 1:], axis=-1), 1.0, atol=1e-5)


def test_summary_max_frames_summarizes_every_frame(bundle_dir):
    """The deep path takes max_frames = 4 of _obs's 6 frames; with summary_max_frames = 8
    the linear summary is over all 6: its per-band mean column is the hand-computed mean of
    the 6 normalized values, and mu is the model's encode with that summary."""
    b = load_bundle(str(bundle_dir))
    obs = _obs(4, 4)
    period = dict(t_start_ms=1672531200000, t_end_ms=1704067200000)
    assert "pixel_summary" not in b.prepare(obs, **period)  # 0: the deep path's frames
    b.config["model"]["summary_max_frames"] = 8
    assert b.summary_max_frames == 8 and b.max_frames == 4
    item = b.prepare(obs, **period)
    assert item["sentinel1/frame_valid"].sum() == 4
    summary = item["pixel_summary"]
    c = b.config["model"]
    width = modules.pixel_summary(features.empty_inputs(1, 4, 4), c).shape[-1]
    assert summary.shape == (4, 4, width)
    # harmonic_summary's columns: sources in registry order, per band (1, cos, sin, ...).
    per_band = 1 + 2 * c["harmonics"]
    col = 0
    for s in modules.SOURCES[: modules.SOURCES.index("sentinel1")]:
        n_t = 1 if examples.num_frames(s, 2) == 1 else per_band
        col += n_t * len(features.normalizer({})[s][0])
    s1 = obs.sources["sentinel1"]
    vv = (s1.values[..., 0] - (-10.0)) / 3.0  # the bundle's stats: VV mean -10, std 3
    np.testing.assert_allclose(summary[1, 1, col], vv[:, 1, 1].mean(), rtol=1e-5)
    np.testing.assert_allclose(summary[1:, 1:, col], vv[:, 1:, 1:].mean(0), rtol=1e-4)
    # The four-frame summary of the deep path's frames differs.
    assert not np.allclose(
        b._summary(features.to_model_inputs(b.stack([item]), b._norm, max_frames=4))[0], summary
    )
    got = b.embed_batch(b.pad_batch([item], 1))[0]
    inputs = features.to_model_inputs(b.stack([item]), b._norm, max_frames=4)
    inputs["pixel_summary"] = summary[None]
    mu, _ = b._encode(b.params, inputs)  # the bundle's jitted encoder
    np.testing.assert_allclose(got[1:, 1:], np.asarray(mu)[0, 1:, 1:], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got[1:, 1:], axis=-1), 1.0, atol=1e-5)


def test_embed_without_leaves_the_source_out(bundle_dir):
    """model.embed_without=cop_dem: a window with a DEM embeds exactly as the same window
    without it (windows and points alike), and differently from the DEM-reading bundle."""
    b = load_bundle(str(bundle_dir))
    obs = _obs(4, 4)
    dem = np.stack([np.linspace(0, 900, 16).reshape(4, 4), np.full((4, 4), 5.0)], -1)
    with_dem = dataclasses.replace(
        obs,
        sources={
            **obs.sources,
            "cop_dem": SourceFrames(
                "cop_dem",
                values=dem[None].astype(np.float32),
                valid=np.ones((1, 4, 4), bool),
                times_ms=np.array([0], np.int64),
                band_names=("elevation", "slope"),
            ),
        },
    )
    period = (1672531200000, 1704067200000)
    assert b.embed_without == ()
    reads = b.embed(with_dem, *period)
    plain = b.embed(obs, *period)
    assert not np.allclose(reads[1:], plain[1:], atol=1e-4)  # the DEM moves mu
    b.config["model"]["embed_without"] = "cop_dem"
    assert b.embed_without == ("cop_dem",)
    np.testing.assert_array_equal(b.embed(with_dem, *period), plain)
    from beam_jobs.io import points

    np.testing.assert_allclose(
        b.embed(points.window_to_points(with_dem), *period),
        b.embed(points.window_to_points(obs), *period),
        atol=1e-6,
    )
    b.config["model"]["embed_without"] = "cop_dem,landsat9"
    with pytest.raises(ValueError, match="landsat9"):
        b.embed(obs, *period)


def test_embed_points_matches_one_pixel_windows(bundle_dir):
    from beam_jobs.io import points

    b = load_bundle(str(bundle_dir))
    obs = _obs(3, 3)
    pts = points.window_to_points(obs)
    emb = b.embed(pts, 1672531200000, 1704067200000)
    assert emb.shape == (9, 64)
    assert np.isnan(emb[0]).all()
    np.testing.assert_allclose(np.linalg.norm(emb[1:], axis=1), 1.0, atol=1e-5)


def test_points_in_groups_equal_each_point_embedded_alone(bundle_dir, monkeypatch):
    """embed_batch runs points POINT_GROUP at a time (a ragged last group here) and
    prepare_points computes the pixel summary without the frames no point of the chunk has
    (SUMMARY_FRAME_STEP): each point's vector is that of the point prepared and embedded
    alone in one encoder call, and its summary that of `prepare` of the point alone."""
    from beam_jobs import inference
    from beam_jobs.io import points

    b = load_bundle(str(bundle_dir))
    b.params = jax.tree_util.tree_map(np.asarray, b.params)
    b.params["context_gates"] = np.array([0.8, -0.6, 0.9], np.float32)
    b.params["summarizer"]["deep_gate"] = np.array(1.0, np.float32)
    b.config["model"]["summary_max_frames"] = 16  # _obs has 6 frames: 10 are padding
    monkeypatch.setattr(bundle_mod, "POINT_GROUP", 4)
    monkeypatch.setattr(bundle_mod, "SUMMARY_FRAME_STEP", 4)
    trimmed, drop = [], features.drop_padding_frames

    def spy(x, multiple=4):
        out = drop(x, multiple)
        trimmed.append((x["sentinel1/mask"].shape[1], out["sentinel1/mask"].shape[1]))
        return out

    monkeypatch.setattr(features, "drop_padding_frames", spy)
    period = {"t_start_ms": 1672531200000, "t_end_ms": 1704067200000}
    pts = points.window_to_points(_obs(3, 3, seed=2))
    stacked = b.prepare_points(pts, **period)
    items = [{k: v[i] for k, v in stacked.items()} for i in range(9)]
    got = b.embed_batch(b.pad_batch(items, 10))[:9, 0, 0]
    for i in range(9):
        alone = b.prepare(inference.take_points(pts, i, i + 1), **period)
        np.testing.assert_allclose(items[i]["pixel_summary"], alone["pixel_summary"], atol=1e-6)
        want = b.embed_batch(b.pad_batch([alone], 1), chunked=False)[0, 0, 0]
        np.testing.assert_allclose(got[i], want, atol=1e-6, equal_nan=True)
    assert np.isnan(got[0]).all() and np.isfinite(got[1:]).all()
    assert (16, 8) in trimmed  # the summary's 16 frames trimmed to 8 (6 used)


def test_bfloat16_agrees_with_float32(bundle_dir):
    obs = _obs(8, 8)
    a = load_bundle(str(bundle_dir)).embed(obs, chip_size=8, halo=0)
    b = load_bundle(str(bundle_dir), compute_dtype="bfloat16").embed(obs, chip_size=8, halo=0)
    ok = np.isfinite(a[:, 0])
    assert np.median(np.sum(a[ok] * b[ok], axis=1)) > 0.98


def test_tampered_bundle_is_refused(bundle_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    (bad / "stats.json").write_text("{}")
    with pytest.raises(bundle_mod.BundleError, match="stats.json: sha256"):
        load_bundle(str(bad))
    (bad / "bundle.json").unlink()
    with pytest.raises(bundle_mod.BundleError, match="no bundle.json"):
        load_bundle(str(bad))


def _bundle_with_context(bundle_dir, monkeypatch):
    """The test bundle with its context paths switched on (gates != 0), encoding 40 px
    chips one per call in strips of 16, 16 and 8 rows."""
    b = load_bundle(str(bundle_dir))
    b.params = jax.tree_util.tree_map(np.asarray, b.params)
    b.params["context_gates"] = np.array([0.8, -0.6, 0.9], np.float32)
    b.params["summarizer"]["deep_gate"] = np.array(1.0, np.float32)
    monkeypatch.setattr(bundle_mod, "STRIP_ROWS", 16)
    monkeypatch.setattr(bundle_mod, "STRIP_PIXELS", 16 * 40)
    return b


def test_chunked_encoder_equals_the_whole_batch_in_one_call(bundle_dir, monkeypatch):
    """embed_batch runs the encoder on row strips of one chip at a time (memory bounded);
    with the context paths switched on (gates != 0) it gives the one-call encoder's vectors,
    although a strip alone would not (its pools and attention need the whole chip)."""
    b = _bundle_with_context(bundle_dir, monkeypatch)
    period = {"t_start_ms": 1672531200000, "t_end_ms": 1704067200000}
    items = [b.prepare(_obs(40, 40, seed=s), **period) for s in (1, 2)]
    batch = b.pad_batch(items, 3)
    whole = b.embed_batch(batch, chunked=False)
    calls = []
    frames = b._frames
    b._frames = lambda *a: calls.append(1) or frames(*a)
    chunked = b.embed_batch(batch)
    assert len(calls) == 2 * 3  # two chips of 3 strips; the padding item is not run
    assert chunked.shape == whole.shape == (3, 40, 40, 64)
    assert np.isnan(chunked[2]).all()
    np.testing.assert_array_equal(np.isnan(chunked), np.isnan(whole))
    np.testing.assert_allclose(chunked, whole, atol=2e-6, equal_nan=True)
    # the strips' context is the whole chip's: the first 16 x 16 px embedded alone differ
    o = _obs(40, 40, seed=1)
    sub = Observations(
        sources={k: sf.crop(slice(0, 16), slice(0, 16)) for k, sf in o.sources.items()},
        window=GridWindow(32631, 600000.0, 5600000.0, 16, 16),
    )
    alone = b.embed_batch(b.pad_batch([b.prepare(sub, **period)], 1), chunked=False)[0]
    assert np.nanmax(np.abs(alone - whole[0, :16, :16])) > 1e-3


def test_encoder_without_held_frames_gives_the_same_vectors(bundle_dir, monkeypatch):
    """hold_frames=False (Bundle.embed's encoder: only the strips' pools live through the
    context stage, each strip's frames computed again for its read-out) gives exactly the
    vectors of the encoder holding every strip's frames; embed calls `release` once per
    batch, after preparing it and before the encoder."""
    b = _bundle_with_context(bundle_dir, monkeypatch)
    period = {"t_start_ms": 1672531200000, "t_end_ms": 1704067200000}
    obs = _obs(40, 40, seed=4)
    inputs = b.batch_inputs(b.pad_batch([b.prepare(obs, **period)], 1))
    held = b.embed_inputs(inputs)
    lean = b.embed_inputs(inputs, hold_frames=False)
    assert np.isfinite(held[0, 1:]).all() and np.isnan(held[0, 0, 0]).all()
    np.testing.assert_array_equal(lean, held)
    events = []
    real_frames = b._frames
    monkeypatch.setattr(b, "_frames", lambda *a: events.append("frames") or real_frames(*a))
    emb = b.embed(obs, chip_size=40, halo=0, release=lambda: events.append("release"))
    np.testing.assert_array_equal(emb, held[0].reshape(40 * 40, -1))
    # prepared, released, then each strip's frames for the pools and again for the read-out
    assert events == ["release"] + ["frames"] * 6


def test_pixel_summary_in_row_strips_equals_the_whole_chip(bundle_dir, monkeypatch):
    """prepare computes the summary_max_frames summary a strip of STRIP_ROWS rows at a time
    (bounded memory), its quantiles on the host; it is per pixel, so it equals the model's
    own `modules.pixel_summary` of the whole chip at once."""
    b = load_bundle(str(bundle_dir))
    b.config["model"]["summary_max_frames"] = 8
    monkeypatch.setattr(bundle_mod, "STRIP_ROWS", 16)  # 40 rows: strips of 16, 16 and 8
    obs = _obs(40, 40, seed=3)
    period = dict(t_start_ms=1672531200000, t_end_ms=1704067200000)
    got = b.prepare(obs, **period)["pixel_summary"]
    feats = examples.example_features(
        obs, max_frames=8, location=bundle_mod._NO_LOCATION, seed=0, **period
    )
    inputs = features.to_model_inputs(
        {k: feats[k][None] for k in features.example_keys()}, b._norm, max_frames=8
    )
    summary = jax.jit(lambda x: modules.pixel_summary(x, b.config["model"]))  # the model's
    whole = np.asarray(summary(inputs))[0]
    assert got.shape == whole.shape == (40, 40, whole.shape[-1])
    assert np.abs(whole).max() > 0.1
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6)
